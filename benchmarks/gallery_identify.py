"""Gallery enrollment and identification on real LFW photos: speed, and open-set accuracy at the threshold.

Enrolls the first photo of the first --people LFW people (sorted by name, each with at least two photos;
`select="largest"` where the detector finds several faces) into a new gallery with the shipped face model,
then identifies:
  * "known" probes: the second photo of --probes enrolled people (rank-1 rate, rate matched correctly at
    the threshold, rate wrongly matched to someone else, rate called unknown);
  * "unknown" probes: the first photo of --probes people never enrolled (rate wrongly matched to someone).
Reports the open-set trade-off (the share of known probes identified at the thresholds that let 1%, 10%,
50% of the strangers through), enrollment time per photo, identify latency (p50/p99: decode, detect, embed,
one head pass over all stored embeddings), the head pass alone on a precomputed probe embedding, the file
size and peak memory.

    python benchmarks/gallery_identify.py                     # 1000 people -> results/gallery_identify.json
    python benchmarks/gallery_identify.py --people 50 --probes 20 --name gallery_identify_quick
    python benchmarks/gallery_identify.py --far 1e-3 --name gallery_identify_far1e-3
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import command, data_root, machine, write_result

from siamface.errors import NoFaceError
from siamface.gallery import Gallery
from siamface.photo_faces import faces_for, photo_of
from siamface.verify import Verifier


def people_with_two_photos(lfw: Path) -> list[tuple[str, list[Path]]]:
    out = []
    for d in sorted((lfw / "deepfunneled").iterdir()):
        photos = sorted(d.glob("*.jpg"))
        if len(photos) >= 2:
            out.append((d.name, photos))
    return out


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=1000)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--far", type=float, default=None,
                    help="decide at the threshold calibrated for this false accept rate (needs Verifier(far=...))")
    ap.add_argument("--name", default="gallery_identify")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    where = machine()  # the commit that runs, not the one checked out when the run ends
    everyone = people_with_two_photos(data_root() / "lfw")
    enrolled, strangers = everyone[:args.people], everyone[args.people:args.people + args.probes]
    verifier = Verifier() if args.far is None else Verifier(far=args.far)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "people.db"
        g = Gallery(db, verifier)
        enroll_ms, skipped = [], []
        for name, photos in enrolled:
            t0 = time.perf_counter()
            try:
                g.enroll(name, [photos[0]], select="largest")
            except NoFaceError:
                skipped.append(name)
                continue
            enroll_ms.append((time.perf_counter() - t0) * 1000)
        known = [(n, p[1]) for n, p in enrolled if n not in skipped][:args.probes]
        tops: dict[str, list[tuple[float, bool]]] = {"known": [], "unknown": []}
        stats: dict[str, Any] = {"known": _score(g, known, tops["known"]),
                                 "unknown": _score(g, [(None, p[0]) for _, p in strangers], tops["unknown"])}
        stats["open_set"] = open_set(tops)
        probe = g._embed(faces_for(photo_of(known[0][1]), verifier.preprocess)[:1])
        head_ms = []
        for _ in range(50):
            t0 = time.perf_counter()
            g._person_scores(probe)
            head_ms.append((time.perf_counter() - t0) * 1000)
        n_emb = len(g._current_matrix().emb)
        size = sum(Path(f"{db}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db}{s}").exists())
        g.close()
    result = {
        "command": command(), "data": "LFW deep-funneled: first photo of the first N people (sorted) with >= 2 "
        "photos enrolled; their second photos as known probes; later people's first photos as unknown probes",
        "model": verifier.name, "threshold": verifier.threshold,
        "operating_point": getattr(verifier, "operating_point", "EER"),
        "people_enrolled": len(enroll_ms), "skipped_no_face": len(skipped), "embeddings": n_emb,
        "enroll_ms_per_photo": {"p50": pct(enroll_ms, 50), "p99": pct(enroll_ms, 99)},
        **stats,
        "head_pass_ms": {"p50": pct(head_ms, 50), "p99": pct(head_ms, 99), "embeddings": n_emb},
        "file_bytes": size, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": where,
    }
    write_result(args.name, result)


def open_set(tops: dict[str, list[tuple[float, bool]]]) -> list[dict[str, float]]:
    """The open-set trade-off (as an ROC, described on these probes, not a calibration): at the threshold
    that lets a fraction FPIR of the strangers' best scores through, the fraction of known probes whose
    best candidate is right and passes it (DIR)."""
    strangers = np.array([s for s, _ in tops["unknown"]])
    out = []
    for fpir in (0.01, 0.1, 0.5):
        t = float(np.quantile(strangers, 1 - fpir))
        dir_ = np.mean([ok and s > t for s, ok in tops["known"]])
        out.append({"fpir": fpir, "threshold": round(t, 6), "dir": round(float(dir_), 4)})
    return out


def _score(g: Gallery, probes: list[tuple[str | None, Path]], tops: list[tuple[float, bool]]) -> dict[str, Any]:
    """Latency and outcomes of identify over probes (name None: a person never enrolled); appends each
    probe's (best score, best candidate is right) to `tops`."""
    ms, rank1, right, wrong, unknown, no_face = [], 0, 0, 0, 0, 0
    for name, path in probes:
        t0 = time.perf_counter()
        try:
            r = g.identify(path, k=1).to_dict()
        except NoFaceError:
            no_face += 1
            continue
        ms.append((time.perf_counter() - t0) * 1000)
        face = r["faces"][0]  # the largest face, as enrollment chose it
        tops.append((face["candidates"][0]["probability"], face["candidates"][0]["name"] == name))
        rank1 += face["candidates"][0]["name"] == name
        right += face["match"] is not None and face["match"] == name
        wrong += face["match"] is not None and face["match"] != name
        unknown += face["match"] is None
    n = len(ms)
    return {"probes": n, "no_face": no_face, "identify_ms": {"p50": pct(ms, 50), "p99": pct(ms, 99)},
            "rank1_rate": round(rank1 / n, 4), "matched_right_rate": round(right / n, 4),
            "matched_wrong_rate": round(wrong / n, 4), "unknown_rate": round(unknown / n, 4)}


if __name__ == "__main__":
    main()
