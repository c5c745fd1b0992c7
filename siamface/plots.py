"""Matplotlib figures people would rather look at than JSON: ROC, score histograms, training curves."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .files import atomic_write_bytes


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_roc(labels: np.ndarray, scores: np.ndarray, path: Path, title: str = "ROC") -> None:
    """ROC on a log FAR axis, with the EER point marked."""
    plt = _figure()
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    e, _ = metrics.eer(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(np.maximum(fpr, 1e-4), tpr, lw=1.5, label=f"AUC {metrics.roc_auc(labels, scores):.4f}")
    ax.plot([e], [1 - e], "o", label=f"EER {100 * e:.2f}%")
    ax.set(xscale="log", xlim=(1e-4, 1), ylim=(0, 1.01), xlabel="false accept rate", ylabel="true accept rate",
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)
    plt.close(fig)


def plot_histogram(labels: np.ndarray, scores: np.ndarray, path: Path, threshold: float | None = None,
                   title: str = "scores") -> None:
    """Overlaid histograms of same and different pair scores, with the decision threshold."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(0, 1, 41)
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="same")
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="different")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="p(same)", ylabel="pairs", title=title)
    ax.legend()
    _save(fig, path)
    plt.close(fig)


def plot_training(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Training loss and validation metrics per epoch."""
    plt = _figure()
    ep = [r["epoch"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.plot(ep, [r["loss"] for r in rows], label="train loss")
    a1.set(xlabel="epoch", ylabel="BCE", title="training loss")
    for key in ("val_oneshot_accuracy", "val_auc"):
        if rows and key in rows[0]:
            a2.plot(ep, [r[key] for r in rows], label=key.removeprefix("val_"))
    if rows and "val_eer" in rows[0]:
        a2.plot(ep, [1 - r["val_eer"] for r in rows], label="1 - EER")
    a2.set(xlabel="epoch", title="validation")
    a2.legend()
    for a in (a1, a2):
        a.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)
