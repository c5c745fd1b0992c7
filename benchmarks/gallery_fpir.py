"""Open-set identification by FPIR: the stated share of strangers matched to someone against the share measured,
and the share of enrolled people found (DIR), on galleries of people the model never saw.

LFW: a gallery of 1,000 test-role people (`calibration_split`: never used to train or calibrate the shipped
twin): the 500 test people with two or more photos and 500 with one, each enrolled from their first photo;
known probes are the second photos of the 500; strangers are the photos of the other 2,000 test people (never
enrolled). AT&T: the first photo of 20 people (seeded) enrolled; probes: their 9 other photos; strangers: the
200 photos of the 20 others. Each search goes through `Gallery.identify` with the default model (MMOD
detection; LFW: the most central face, the one LFW labels) and decides at each FPIR (the gallery's own
measured point once its searches resolve it, else derived from the model's FAR curve for its size).

    python benchmarks/gallery_fpir.py --set lfw       # -> results/gallery_fpir_lfw.json
    python benchmarks/gallery_fpir.py --set att
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command, data_root, machine, write_result  # noqa: E402

from siamface import calibration as cal  # noqa: E402
from siamface.data.lfw import calibration_split  # noqa: E402
from siamface.errors import NoFaceError  # noqa: E402
from siamface.gallery import Gallery  # noqa: E402
from siamface.verify import Verifier  # noqa: E402

FPIRS = (0.1, 0.01, 0.001)


def lfw_sets(seed: int) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]], list[tuple[str, Path]]]:
    """(enrolled (name, first photo), known probes (name, second photo), strangers (name, photo))."""
    root = data_root() / "lfw" / "deepfunneled"
    split, _ = calibration_split(data_root() / "lfw", seed=seed)
    photos = {p: sorted((root / p).glob("*.jpg")) for p in split.test}
    multi = sorted(p for p in split.test if len(photos[p]) >= 2)
    single = sorted(p for p in split.test if len(photos[p]) == 1)
    rng = np.random.default_rng(seed)
    single = rng.permutation(single).tolist()
    enrolled = multi + single[:1000 - len(multi)]
    strangers = single[1000 - len(multi):]
    return ([(p, photos[p][0]) for p in enrolled], [(p, photos[p][1]) for p in multi],
            [(p, photos[p][0]) for p in strangers])


def att_sets(seed: int) -> tuple[list, list, list]:
    root = data_root() / "att_faces"
    people = np.random.default_rng(seed).permutation([f"s{i}" for i in range(1, 41)]).tolist()
    photo = {p: sorted((root / p).glob("*.pgm"), key=lambda x: int(x.stem)) for p in people}
    enrolled, others = people[:20], people[20:]
    return ([(p, photo[p][0]) for p in enrolled], [(p, q) for p in enrolled for q in photo[p][1:]],
            [(p, q) for p in others for q in photo[p]])


def best(g: Gallery, path: Path, central: bool) -> tuple[str, float, bool] | None:
    """The top candidate of the photo's labelled face (LFW labels the most central one; elsewhere the
    largest), and whether the gallery's decision matched it."""
    try:
        r = g.identify(path, k=1).to_dict()
    except NoFaceError:
        return None
    faces = r["faces"]
    if central:
        w, h = Image.open(path).size
        faces = sorted(faces, key=lambda f: (f["face"]["box"]["x"] + f["face"]["box"]["w"] / 2 - w / 2) ** 2
                       + (f["face"]["box"]["y"] + f["face"]["box"]["h"] / 2 - h / 2) ** 2)
    c = faces[0]["candidates"]
    return (c[0]["name"], c[0]["probability"], faces[0]["match"] is not None) if c else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    enrolled, known, strangers = lfw_sets(args.seed) if args.set == "lfw" else att_sets(args.seed)
    v = Verifier()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        g = Gallery(Path(tmp) / "people.db", v)
        skipped = 0
        for k, (name, path) in enumerate(enrolled):
            try:
                g.enroll(name, [path], select="central" if args.set == "lfw" else "largest")
            except NoFaceError:
                skipped += 1
            if (k + 1) % 200 == 0:
                print(f"enrolled {k + 1}/{len(enrolled)}", flush=True)
        n_people = len(g.people())
        decisions = {f: g.decision(fpir=f) for f in FPIRS}
        central = args.set == "lfw"
        known_top = [(n, best(g, p, central)) for n, p in known]
        print(f"searched {len(known_top)} known probes", flush=True)
        stranger_top = [best(g, p, central) for _, p in strangers]
        default_matched = float(np.mean([b[2] for b in stranger_top if b is not None]))
        g.close()
    s_scores = np.array([b[1] for b in stranger_top if b is not None])
    rows = {}
    for f, d in decisions.items():
        matched = s_scores >= d.threshold
        found = np.mean([b is not None and b[0] == n and b[1] >= d.threshold for n, b in known_top])
        lo, hi = cal.wilson(int(matched.sum()), len(s_scores))
        rows[cal.fpir_name(f)] = {
            "stated_fpir": d.fpir, "measured_fpir": float(matched.mean()), "measured_interval": [lo, hi],
            "ratio": float(matched.mean() / d.fpir) if d.fpir else None, "dir": float(found),
            "threshold": d.threshold, "calibration": d.calibration, "source": d.source}
    # the open-set curve on these probes (not a calibration): DIR where a share of these strangers pass
    curve = {}
    for f in FPIRS:
        if len(s_scores) * f >= 1:
            t = cal.threshold_for_far(s_scores, f)
            curve[cal.fpir_name(f)] = float(np.mean([b is not None and b[0] == n and b[1] >= t for n, b in known_top]))
    rank1 = float(np.mean([b is not None and b[0] == n for n, b in known_top]))
    return {"benchmark": f"FPIR stated against measured, {args.set} gallery", "command": command(), "seed": args.seed,
            "model": v.name, "people_enrolled": n_people, "enroll_no_face": skipped, "known_probes": len(known_top),
            "strangers": int(len(s_scores)), "rank1": rank1, "decisions": rows,
            "default_decision": {"fpir": decisions[0.01].fpir, "strangers_matched": default_matched},
            "dir_at_measured_fpir": curve, "seconds": round(time.perf_counter() - t0, 1), "machine": machine()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=("lfw", "att"), default="lfw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    write_result(f"gallery_fpir_{args.set}", run(args))


if __name__ == "__main__":
    main()
