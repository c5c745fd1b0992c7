"""Cold start: `siamface verify a.jpg b.jpg` as a whole new process against `python -c "import torch"`, run in
turn (A B A B ...) so that drift of a shared machine hits both; the ratio is taken pair by pair.

    python benchmarks/cold_start.py                      # 7 pairs after a warm-up pair, idle
    python benchmarks/cold_start.py --busy               # the same with a busy loop on every core

Reports the median wall seconds of each command, the median of the per-pair ratios verify / import torch
(target: 1.5 idle, 2 busy), the same for CPU seconds (user + sys, steadier on a shared machine) and the
1-minute load average before and after. The photos are the first pair of LFW's pairsDevTest.txt (250x250).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from common import REPO, command, data_root, machine, write_result


def wall(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + sys of the process, from the kernel's accounting)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} exited with {proc.returncode}")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=7)
    p.add_argument("--busy", action="store_true", help="one busy-loop process per core while measuring")
    args = p.parse_args()
    lfw = data_root() / "lfw"
    name, i, j = (lfw / "pairsDevTest.txt").read_text().splitlines()[1].split("\t")
    a, b = (str(lfw / "deepfunneled" / name / f"{name}_{int(k):04d}.jpg") for k in (i, j))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    verify = [sys.executable, "-m", "siamface", "verify", a, b]
    torch_only = [sys.executable, "-c", "import torch"]
    spinners = []
    if args.busy:
        code = "import time\nend = time.time() + 600\nwhile time.time() < end: pass"
        spinners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]
    load = [os.getloadavg()[0]]
    try:
        wall(verify, env), wall(torch_only, env)  # warm the file cache and the .pyc files
        rows = [(wall(verify, env), wall(torch_only, env)) for _ in range(args.pairs)]
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    load.append(os.getloadavg()[0])
    ratios = [v[0] / t[0] for v, t in rows]
    cpu_ratios = [v[1] / t[1] for v, t in rows]
    write_result("cold_start_busy" if args.busy else "cold_start", {
        "benchmark": "siamface verify from a cold process vs python -c 'import torch', alternated",
        "command": command(), "busy": args.busy, "load_avg_1min_before_after": load,
        "verify_median_s": round(statistics.median(v[0] for v, _ in rows), 3),
        "import_torch_median_s": round(statistics.median(t[0] for _, t in rows), 3),
        "ratio_median": round(statistics.median(ratios), 2), "ratios": [round(r, 2) for r in ratios],
        "verify_cpu_median_s": round(statistics.median(v[1] for v, _ in rows), 3),
        "import_torch_cpu_median_s": round(statistics.median(t[1] for _, t in rows), 3),
        "cpu_ratio_median": round(statistics.median(cpu_ratios), 2),
        "machine": machine()})


if __name__ == "__main__":
    main()
