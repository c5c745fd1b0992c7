"""Cohort normalisation with the gallery as cohort: does it find more enrolled people at a fixed FPIR?

On cached descriptors (`benchmarks/photo_kinds.py`) of LFW kinds: a gallery of up to 600 people (one photo
each: every person with two or more photos, topped up with people with one), the second photos of the
first as known probes, the remaining people as strangers. Scores: the head's p(same) (raw), T-norm of each
probe's logits over the whole gallery, and over its 50 highest scores after the best. DIR at the threshold
that lets 1% and 10% of these strangers through (an open-set ROC on these probes, not a calibration).

    python benchmarks/gallery_cohort.py --model siamface/weights/dlib-twin   # -> results/gallery_cohort.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command, machine, write_result  # noqa: E402
from photo_kinds import load  # noqa: E402

from siamface.checkpoint import load_model  # noqa: E402
from siamface.embed import probability  # noqa: E402


def tnorm(p: np.ndarray, top: int | None = None) -> np.ndarray:
    """Each row's logits standardised by the row's own mean and spread (top: over its `top` highest scores
    after the best)."""
    logit = np.log(p + 1e-12) - np.log1p(-p + 1e-12)
    ref = np.sort(logit, axis=1)[:, -top - 1:-1] if top else logit
    return (logit - ref.mean(1, keepdims=True)) / (ref.std(1, keepdims=True) + 1e-6)


def dir_at(known: np.ndarray, strangers: np.ndarray, fpir: float) -> float:
    t = np.quantile(strangers.max(1), 1 - fpir)
    right = known.argmax(1) == np.arange(len(known))
    return float(np.mean(right & (known.max(1) > t)))


def one_kind(model: torch.nn.Module, kind: str, cache: Path, size: int) -> dict:
    emb, ids, _ = load(kind, cache)
    e = torch.from_numpy(emb)
    photos: dict[str, list[int]] = {}
    for k, i in enumerate(ids):
        photos.setdefault(str(i), []).append(k)
    multi = sorted(p for p in photos if len(photos[p]) >= 2)[:size]
    single = sorted(p for p in photos if len(photos[p]) == 1)
    gallery = multi + single[:max(0, size - len(multi))]
    strangers = single[max(0, size - len(multi)):]
    g = e[[photos[p][0] for p in gallery]]

    def scores(rows: list[int]) -> np.ndarray:
        x = e[rows]
        return probability(model, x.repeat_interleave(len(g), 0), g.repeat(len(rows), 1)).reshape(len(rows), len(g))

    known, strange = scores([photos[p][1] for p in multi]), scores([photos[p][0] for p in strangers])
    out = {"gallery": len(gallery), "known_probes": len(multi), "strangers": len(strangers)}
    for name, f in (("raw", lambda s: s), ("tnorm", tnorm), ("tnorm_top50", lambda s: tnorm(s, 50))):
        out[name] = {"dir_at_fpir_1e-2": dir_at(f(known), f(strange), 0.01),
                     "dir_at_fpir_1e-1": dir_at(f(known), f(strange), 0.1)}
    print(kind, out, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="siamface/weights/dlib-twin")
    p.add_argument("--kinds", nargs="*", default=["lfw-grey", "lfw-jpeg"])
    p.add_argument("--cache", default="runs/kinds")
    p.add_argument("--size", type=int, default=600)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model).model.eval()
    rows = {kind: one_kind(model, kind, Path(args.cache), args.size) for kind in args.kinds}
    write_result("gallery_cohort", {"benchmark": "cohort normalisation with the gallery as cohort",
                                    "command": command(), "model": args.model, "kinds": rows, "machine": machine()})


if __name__ == "__main__":
    main()
