"""Classical baselines for the AT&T benchmark: L1 distance between normalised 32x32 pixels (no learning),
and Fisherfaces (PCA to 100 dimensions, then LDA to 24, both fitted on the seed's 25 training subjects;
cosine similarity), a linear model that learns from exactly the data the Siamese network gets.

Same test subjects (read from the seed's run in runs/bench-att), same seeded 4,000 balanced pairs as
benchmarks/att.py's evaluation. Shows how much the trained models add on unseen subjects.

    python benchmarks/att_pixels.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import command, data_root, machine, write_result

from siamface import metrics
from siamface.data import filter_identities, label_array, load_image, sample_pairs, scan_folder


def pixels(ids: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image standardised pixels (N, size*size) and identity labels of some AT&T subjects."""
    records = filter_identities(scan_folder(data_root() / "att_faces"), ids)
    labels, _ = label_array(records)
    x = np.stack([load_image(r.path, 1, size).astype(np.float64).ravel() for r in records])
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True), labels


def fisherfaces(x: np.ndarray, labels: np.ndarray, n_pca: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Belhumeur et al. (1997): PCA, then LDA with (classes - 1) directions; returns (mean, projection)."""
    mu = x.mean(0)
    pca = np.linalg.svd(x - mu, full_matrices=False)[2][:n_pca].T
    z = (x - mu) @ pca
    classes = np.unique(labels)
    within = sum(np.cov(z[labels == c].T) * (np.sum(labels == c) - 1) for c in classes)
    centre = z.mean(0)
    between = sum(np.sum(labels == c) * np.outer(z[labels == c].mean(0) - centre, z[labels == c].mean(0) - centre)
                  for c in classes)
    vals, vecs = np.linalg.eig(np.linalg.solve(within + 1e-3 * np.eye(len(within)), between))
    lda = np.real(vecs[:, np.argsort(-np.real(vals))[: len(classes) - 1]])
    return mu, pca @ lda


def baseline_eer(ids: list[str], seed: int, size: int, fisher: tuple[np.ndarray, np.ndarray]) -> dict:
    x, labels = pixels(ids, size)
    pairs = sample_pairs(labels, 4000, np.random.default_rng(seed))
    a, b, y = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    f = (x - fisher[0]) @ fisher[1]
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    l1, cos = -np.abs(x[a] - x[b]).mean(1), (f[a] * f[b]).sum(1)
    return {"eer": metrics.eer(y, l1)[0], "auc": metrics.roc_auc(y, l1),
            "fisherfaces_eer": metrics.eer(y, cos)[0], "fisherfaces_auc": metrics.roc_auc(y, cos)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--runs", default=str(Path("runs") / "bench-att"))
    args = p.parse_args()
    rows = []
    for seed in args.seeds:
        split = json.loads((Path(args.runs) / f"seed{seed}" / "model.json").read_text())["split"]
        fisher = fisherfaces(*pixels(split["train"], args.size))
        rows.append({"seed": seed, "test": baseline_eer(split["test"], seed, args.size, fisher),
                     "val": baseline_eer(split["val"], seed, args.size, fisher)})
    write_result("att_pixels", {
        "benchmark": "AT&T baselines: raw-pixel L1 (no training) and Fisherfaces (fitted on the 25 training subjects)",
        "command": command(), "size": args.size, "per_seed": rows, "machine": machine()})


if __name__ == "__main__":
    main()
