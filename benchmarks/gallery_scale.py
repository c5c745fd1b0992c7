"""Identification at 1k, 10k, 100k and 1M enrolled people: search time, end-to-end time, memory, first search.

Each gallery holds one photo per person: the real dlib-twin descriptors of LFW's photos (first photo of each
person, then the others as further "people"), filled up to the size with real descriptors plus Gaussian
noise of one standard deviation per dimension (descriptors as spread as real ones; for timing). Galleries are
written straight into SQLite (no crops, `keep-crops none` style) and each size is measured in a fresh process:
  * first_search_s: opening the file and answering the first search (reading every embedding, building the
    index, the gallery's self-calibration);
  * search_ms: a probe embedding against everyone (top-5 and the decision) p50/p90 over --probes LFW photos
    not enrolled as themselves (second photos of enrolled people, then strangers);
  * identify_ms: `Gallery.identify` on an LFW photo end to end (decode, detection, alignment, embedding,
    search, decision), p50/p90;
  * peak memory: the process's peak RSS growth from before opening the gallery, against the matrix's bytes;
  * exact: every probe's top-5 names and probabilities equal to the brute-force head over every row
    (`embed.probability` on all N rows, aggregated per person, sorted by (-p, name));
  * brute_ms: that brute-force head alone (one pass over all rows + argpartition), for comparison.

Needs the LFW descriptors cached by `benchmarks/photo_kinds.py` (runs/kinds/lfw.npz).

    python benchmarks/gallery_scale.py                               # -> results/gallery_scale.json
    python benchmarks/gallery_scale.py --sizes 1000 10000 --name gallery_scale_quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO, command, data_root, machine, write_result

KINDS = REPO / "runs" / "kinds" / "lfw.npz"
WORK = REPO / "runs" / "scale"


def _descriptors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not KINDS.exists():
        sys.exit(f"{KINDS}: missing; run `python benchmarks/photo_kinds.py` first (it caches LFW's descriptors)")
    z = np.load(KINDS, allow_pickle=False)
    return z["emb"].astype(np.float32), z["ids"], z["paths"]


def build(path: Path, size: int, seed: int) -> dict[str, Any]:
    """A gallery file of `size` people, one photo each, written in one transaction."""
    from siamface import gallery_db
    from siamface.gallery import model_record
    from siamface.verify import Verifier

    emb, ids, paths = _descriptors()
    first = np.unique(ids, return_index=True)[1]
    order = np.concatenate([np.sort(first), np.setdiff1d(np.arange(len(ids)), first)])  # first photos first
    real = order[:size]
    rng = np.random.default_rng(seed)
    fill = size - len(real)
    path.unlink(missing_ok=True)
    conn = gallery_db.connect(path)
    conn.execute("PRAGMA synchronous=OFF")  # a benchmark file: built once, rebuilt if the run dies
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [*model_record(Verifier()).items(), ("created", "0")])
    std = emb.std(axis=0)
    for c in range(0, size, 50_000):
        n = min(50_000, size - c)
        rows = np.empty((n, emb.shape[1]), np.float32)
        names = []
        for k in range(n):
            i = c + k
            if i < len(real):
                rows[k] = emb[real[i]]
                names.append(f"{ids[real[i]]} #{i}")
            else:
                rows[k] = emb[rng.integers(len(emb))] + rng.normal(0, 1, emb.shape[1]).astype(np.float32) * std
                names.append(f"synthetic {i}")
        conn.executemany("INSERT INTO people (id, name, created) VALUES (?, ?, 0)",
                         [(c + k + 1, names[k]) for k in range(n)])
        conn.executemany("INSERT INTO enrollments (person_id, embedding, crop, source, sha256, created) "
                         "VALUES (?, ?, x'', '', '', 0)",
                         [(c + k + 1, rows[k].astype("<f4").tobytes()) for k in range(n)])
    conn.execute("COMMIT")
    conn.close()
    return {"real_rows": int(len(real)), "noisy_rows": int(fill)}


def measure(path: Path, size: int, n_probes: int, seed: int) -> dict[str, Any]:
    """In a fresh process: open, first search, search and identify latencies, peak memory, exactness."""
    import torch

    from siamface.embed import probability
    from siamface.gallery import Gallery
    from siamface.verify import Verifier

    emb, ids, paths = _descriptors()
    first = set(np.unique(ids, return_index=True)[1].tolist())
    others = [i for i in range(len(ids)) if i not in first]
    rng = np.random.default_rng(seed + 1)
    probe_rows = rng.choice(others, n_probes, replace=False)
    probes = torch.from_numpy(emb[probe_rows])
    v = Verifier()  # the model is loaded before the baseline
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    g = Gallery(path, v)
    g._search(probes[:1], 5)
    first_s = time.perf_counter() - t0
    search_ms = []
    answers = []
    for p in probes:
        t = time.perf_counter()
        answers.append(g._search(p[None], 5)[0][0])
        search_ms.append((time.perf_counter() - t) * 1000)
    photos = [Path(data_root()) / str(paths[i]) for i in probe_rows[:20]]
    identify_ms = []
    for ph in photos:
        t = time.perf_counter()
        g.identify(ph)
        identify_ms.append((time.perf_counter() - t) * 1000)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    m = g._current_matrix()
    matrix_mb = m.emb.nbytes / 2**20
    # exactness and the brute-force head, after the memory figure
    x = torch.from_numpy(m.emb)
    names = np.array(m.names)
    exact, brute_ms = 0, []
    for p, (_, cands) in zip(probes, answers):
        t = time.perf_counter()
        s = probability(v.loaded.model, p.expand(len(x), -1), x)
        top = np.argpartition(-s, 5)[:5] if len(s) > 5 else np.arange(len(s))
        brute_ms.append((time.perf_counter() - t) * 1000)
        floor = s[top].min()
        near = np.flatnonzero(s >= floor)  # one photo per person: rows are people
        want = sorted(((names[m.person[i]], float(s[i])) for i in near), key=lambda a: (-a[1], a[0]))[:5]
        got = [(c.name, c.probability) for c in cands]
        exact += [n for n, _ in got] == [n for n, _ in want] and \
            np.allclose([q for _, q in got], [round(q, 10) for _, q in want], rtol=0, atol=1e-12)
    decision = g.decision()
    g.close()

    def pct(a: list[float], q: float) -> float:
        return round(float(np.percentile(a, q)), 2)

    return {"people": size, "rows": int(len(m.emb)), "matrix_mb": round(matrix_mb, 1),
            "first_search_s": round(first_s, 2),
            "search_ms_p50": pct(search_ms, 50), "search_ms_p90": pct(search_ms, 90),
            "identify_ms_p50": pct(identify_ms, 50), "identify_ms_p90": pct(identify_ms, 90),
            "peak_growth_mb": round((peak_kb - base_kb) / 1024, 1),
            "peak_growth_over_matrix": round((peak_kb - base_kb) / 1024 / matrix_mb, 2),
            "brute_ms_p50": pct(brute_ms, 50), "exact_probes": f"{exact}/{len(answers)}",
            "decision": {"operating_point": decision.operating_point, "threshold": decision.threshold,
                         "fpir": decision.fpir, "source": decision.source}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    ap.add_argument("--probes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="gallery_scale")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.child is not None:
        print(json.dumps(measure(WORK / f"{args.child}.db", args.child, args.probes, args.seed)))
        return
    rows = []
    for size in args.sizes:
        path = WORK / f"{size}.db"
        t = time.perf_counter()
        built = build(path, size, args.seed)
        build_s = time.perf_counter() - t
        out = subprocess.run([sys.executable, __file__, "--child", str(size), "--probes", str(args.probes),
                              "--seed", str(args.seed)], capture_output=True, text=True, env=os.environ)
        if out.returncode:
            sys.exit(f"size {size}: {out.stderr.strip()[-2000:]}")
        row = {**json.loads(out.stdout.strip().splitlines()[-1]), **built, "build_s": round(build_s, 1),
               "file_mb": round(path.stat().st_size / 2**20, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    load = os.getloadavg()
    write_result(args.name, {"command": command(), "seed": args.seed, "machine": machine(),
                             "load_after": [round(x, 2) for x in load], "threads": 1, "sizes": rows})


if __name__ == "__main__":
    main()
