"""Warm `Verifier.verify` latency: two 250x250 LFW photos, detection and alignment included.

For each model (default: the shipped default, dlib-twin, and the from-scratch lfw-view1), the verifier is
loaded and warmed, then `verify(a, b)` runs `--repeats` times on rotating pairs of View 1 test photos;
p50, p90 and p99 of the wall time are reported, with the torch thread count. One run, one machine: compare
the models with each other, not with figures from another run.

    python benchmarks/verify_speed.py --repeats 100 --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import command, data_root, machine, write_result

from siamface.data import read_lfw_pairs
from siamface.verify import Verifier


def latency(model: str, pairs: list, repeats: int) -> dict:
    v = Verifier(model)
    for a, b in pairs[:3]:
        v.verify(a, b)  # warm: first calls allocate and pick kernels
    times = []
    for k in range(repeats):
        a, b = pairs[k % len(pairs)]
        t0 = time.perf_counter()
        v.verify(a, b)
        times.append(1000 * (time.perf_counter() - t0))
    t = np.array(times)
    return {"model": model, "repeats": repeats, "p50_ms": float(np.percentile(t, 50)),
            "p90_ms": float(np.percentile(t, 90)), "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["dlib-twin", "lfw-view1"])
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lfw = data_root() / "lfw"
    pairs = [(q.a, q.b) for q in read_lfw_pairs(lfw / "pairsDevTest.txt", lfw / "deepfunneled")][:50]
    rows = [latency(m, pairs, args.repeats) for m in args.models]
    write_result("verify_speed", {"benchmark": "warm Verifier.verify, two 250x250 LFW photos, detection included",
                                  "command": command(), "threads": args.threads, "results": rows,
                                  "machine": machine()})


if __name__ == "__main__":
    main()
