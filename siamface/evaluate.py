"""Verification and one-shot evaluation: each image is embedded once, pairs are scored from embeddings.

`evaluate_pairs` scores a list of `Pair`s (LFW protocol files, CSV) and summarises them with
`metrics.verification_summary` (k-fold accuracy when the pairs carry folds). `evaluate_oneshot` runs
N-way one-shot tasks: 400 official Omniglot trials cost ~800 tower passes, not 16,000.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics
from .config import PreprocessConfig
from .data import ImageStore, OneShotTask, Pair
from .errors import DataError, ImageError, NoFaceError, SiamfaceError
from .models import SiameseNet
from .preprocess import load_input, normalize


def autocast(device: str, enabled: bool) -> Any:
    """bf16 autocast on CPU (AVX-512 BF16 / AMX), bf16 on CUDA; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@torch.no_grad()
def embed_batches(
    model: SiameseNet, images: torch.Tensor, pre: PreprocessConfig, batch_size: int = 256,
    device: str = "cpu", bf16: bool = False,
) -> torch.Tensor:
    """Embed uint8 (N, C, H, W) images in batches, in eval mode; returns float32 (N, D) on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(images[start : start + batch_size].to(device), pre)
        with autocast(device, bf16):
            out.append(model.embed(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.embed_dim)


@torch.no_grad()
def score_indices(model: SiameseNet, emb: torch.Tensor, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """p(same) for rows i[k], j[k] of an embedding matrix."""
    head_device = next(model.head.parameters()).device
    e = emb.to(head_device)
    logits = model.score(e[torch.as_tensor(i)], e[torch.as_tensor(j)])
    return torch.sigmoid(logits.float()).cpu().numpy()


def store_for(paths: Sequence[Path], pre: PreprocessConfig, progress: bool = False,
              fallback: bool = True, errors: dict[Path, SiamfaceError] | None = None) -> ImageStore:
    """Decode each distinct path once with the model's preprocessing (alignment included). A protocol may
    not drop pairs, so by default a central box stands in where no face is found (faces.central_box);
    fallback=False raises NoFaceError instead (verify). With `errors`, an image that cannot be used
    (ImageError, NoFaceError) is left out of the store and its error recorded there instead of raised."""
    unique = list(dict.fromkeys(Path(p) for p in paths))

    def load(p: Path) -> np.ndarray | None:
        try:
            return load_input(p, pre, fallback=fallback)
        except (ImageError, NoFaceError) as e:
            if errors is None:
                raise
            errors[p] = e
            return None

    return ImageStore.from_paths(unique, pre.channels, pre.size, crop=pre.crop, progress=progress, loader=load)


def pair_errors(pairs: Sequence[tuple[Path, Path]], errors: dict[Path, SiamfaceError]) -> list[SiamfaceError | None]:
    """For each pair, the error of its first image that could not be used (None when both could)."""
    return [errors.get(Path(a)) or errors.get(Path(b)) for a, b in pairs]


def count_reasons(failed: Sequence[SiamfaceError | None]) -> dict[str, int]:
    """{reason: number of pairs} over the pairs that failed, most frequent first."""
    counts = Counter(e.reason for e in failed if e is not None)
    return dict(counts.most_common())


def evaluate_pairs(
    model: SiameseNet, pre: PreprocessConfig, pairs: Sequence[Pair], device: str = "cpu",
    progress: bool = False, bf16: bool = False, skip_errors: bool = False, source: str = "pairs",
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Score pairs (each distinct image embedded once); returns (summary, labels, scores).

    skip_errors: a pair with an image that cannot be read is left out instead of raising; the summary
    counts them (`pairs_skipped`, `skipped_reasons`) and the metrics cover the rest. `source` names the
    pairs in errors (the pairs file)."""
    errors: dict[Path, SiamfaceError] | None = {} if skip_errors else None
    store = store_for([p for pair in pairs for p in (pair.a, pair.b)], pre, progress, errors=errors)
    failed = pair_errors([(p.a, p.b) for p in pairs], errors or {})
    skipped = count_reasons(failed)
    pairs = [p for p, e in zip(pairs, failed) if e is None]
    if len({p.same for p in pairs}) < 2:
        left = f" ({sum(skipped.values())} skipped: {reasons_text(skipped)})" if skipped else ""
        kind = "no pair" if not pairs else f"only {'same' if pairs[0].same else 'different'} pairs"
        raise DataError(f"{source}: {kind} to score{left}; the metrics need both same and different pairs")
    emb = embed_batches(model, store.images, pre, device=device, bf16=bf16)
    i = np.array([store.index[Path(p.a)] for p in pairs])
    j = np.array([store.index[Path(p.b)] for p in pairs])
    scores = score_indices(model, emb, i, j)
    labels = np.array([int(p.same) for p in pairs])
    folds = np.array([p.fold for p in pairs])
    summary = metrics.verification_summary(labels, scores, folds if len(set(folds)) > 1 else None)
    if skip_errors:
        summary.update(pairs_skipped=sum(skipped.values()), skipped_reasons=skipped)
    return summary, labels, scores


def reasons_text(counts: dict[str, int]) -> str:
    """'2 no face, 1 too large' for {reason: count}."""
    return ", ".join(f"{n} {reason}" for reason, n in counts.items()) or "none"


def oneshot_scores(model: SiameseNet, emb: torch.Tensor, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(T, N) scores of each query embedding against its N candidate embeddings."""
    t, n = candidates.shape
    return score_indices(model, emb, np.repeat(queries, n), candidates.reshape(-1)).reshape(t, n)


def evaluate_oneshot(
    model: SiameseNet, pre: PreprocessConfig, tasks: Sequence[OneShotTask], device: str = "cpu",
    progress: bool = False, bf16: bool = False,
) -> dict[str, Any]:
    """N-way one-shot accuracy over tasks; also returns how many tower passes it took."""
    store = store_for([p for t in tasks for p in (t.query, *t.candidates)], pre, progress)
    emb = embed_batches(model, store.images, pre, device=device, bf16=bf16)
    q = np.array([store.index[Path(t.query)] for t in tasks])
    c = np.array([[store.index[Path(p)] for p in t.candidates] for t in tasks])
    answers = np.array([t.answer for t in tasks])
    acc = metrics.oneshot_accuracy(oneshot_scores(model, emb, q, c), answers)
    return {"oneshot_accuracy": acc, "n_tasks": len(tasks), "n_way": int(c.shape[1]), "embeddings": len(store)}


def evaluate_identities(
    model: SiameseNet, pre: PreprocessConfig, store: ImageStore, labels: np.ndarray, *, n_way: int,
    n_tasks: int, n_pairs: int, seed: int, groups: np.ndarray | None = None, within_group: bool = False,
    device: str = "cpu", bf16: bool = False, emb: torch.Tensor | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Verification on seeded balanced pairs and N-way one-shot on seeded tasks, over identities of one split.

    Pairs are split into 10 folds for a k-fold accuracy. Returns (summary, labels, scores) of the pairs.
    """
    from .data import make_oneshot_tasks, sample_pairs

    if emb is None:
        emb = embed_batches(model, store.images, pre, device=device, bf16=bf16)
    rng = np.random.default_rng(seed)
    pairs = sample_pairs(labels, n_pairs, rng, groups=groups, within_group=within_group)
    scores = score_indices(model, emb, pairs[:, 0], pairs[:, 1])
    y = pairs[:, 2].astype(int)
    summary = metrics.verification_summary(y, scores, metrics.fold_ids(len(y), 10, seed=seed))
    n_way = min(n_way, len(np.unique(labels)))
    q, c, ans = make_oneshot_tasks(labels, n_way, n_tasks, seed, groups=groups, within_group=within_group)
    summary["oneshot_accuracy"] = metrics.oneshot_accuracy(oneshot_scores(model, emb, q, c), ans)
    summary.update(oneshot_way=n_way, oneshot_tasks=len(q), identities=int(len(np.unique(labels))),
                   images=len(store))
    return summary, y, scores
