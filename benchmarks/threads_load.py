"""Threads under load: each way of running siamface (the library, the command, the service) with the thread
policy (siamface.threads: one torch thread per call, passive OpenMP waits) and with torch's own default (a
thread per core, OpenMP's default waits), on the machine as it is ("idle") and with bounded busy-loop
processes spinning on every core ("busy"). One run; compare the rows of one run with each other.

    python benchmarks/threads_load.py                    # about 5 minutes on 2 cores

- library: warm `Verifier().verify(a, b)` on View 1 pairs of LFW photos, in a child process started with
  each setting (OpenMP reads its environment once, at torch's import): median ms per pair.
- command: `siamface verify a.jpg b.jpg` from a cold process, median wall seconds.
- service: a real `siamface serve` process with the policy, verify requests from 1 and from 4 concurrent
  clients (requests/s), and their ratio.
The machine is shared: the 1-minute load average is recorded at the start and end of each phase; "idle"
means no load of this benchmark's own, not an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import REPO, command, data_root, machine, write_result

sys.path.insert(0, str(REPO / "tests"))
from _serve_helpers import free_port, start_server  # noqa: E402

SETTINGS = {  # environment of the child process; the library child also sets siamface's thread count
    "policy": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "SIAMFACE_THREADS": "1"},
    "torch_default": {"SIAMFACE_THREADS": str(os.cpu_count() or 1)},
}
LIBRARY_CHILD = """
import json, sys, time
from siamface.verify import Verifier
pairs = json.loads(sys.argv[1])
v = Verifier()
v.verify(*pairs[0])
times = []
for a, b in pairs:
    t0 = time.perf_counter(); v.verify(a, b); times.append(1000 * (time.perf_counter() - t0))
import torch
print(json.dumps({"ms": times, "torch_threads": torch.get_num_threads()}))
"""


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_") and k != "SIAMFACE_THREADS"}
    env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


def spin(seconds: float) -> list[subprocess.Popen]:
    """One busy-loop process per core, each ending by itself after `seconds`."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]


def library(pairs: list[tuple[str, str]], setting: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", LIBRARY_CHILD, json.dumps(pairs)], env=clean_env(SETTINGS[setting]),
                         capture_output=True, text=True, check=True, timeout=900)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {"median_ms": round(statistics.median(res["ms"]), 1), "torch_threads": res["torch_threads"],
            "pairs": len(res["ms"])}


def cli(pair: tuple[str, str], setting: str, runs: int) -> dict[str, Any]:
    env = clean_env(SETTINGS[setting] if setting == "policy" else {})  # the command applies the policy itself
    if setting == "torch_default":  # the command without the policy: torch's threads, OpenMP's default waits
        env = clean_env({"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": str(os.cpu_count() or 1),
                         "SIAMFACE_THREADS": str(os.cpu_count() or 1)})
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "siamface", "verify", *pair], env=env, capture_output=True,
                       check=True, timeout=300)
        walls.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(walls), 2), "runs": runs}


def service(port: int, pairs: list[tuple[str, str]], clients: int) -> float:
    """Requests/s of verify requests dealt to `clients` concurrent clients."""
    import httpx

    todo = list(pairs)
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    a, b = todo.pop()
                files = {"image_a": open(a, "rb").read(), "image_b": open(b, "rb").read()}  # noqa: SIM115
                c.post("/verify", files=files).raise_for_status()

    t0 = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(pairs) / (time.perf_counter() - t0)


def phase(pairs: list[tuple[str, str]], cli_runs: int, port: int) -> dict[str, Any]:
    row: dict[str, Any] = {"load_avg_1min_start": os.getloadavg()[0]}
    row["library"] = {s: library(pairs, s) for s in SETTINGS}
    row["command"] = {s: cli(pairs[0], s, cli_runs) for s in SETTINGS}
    one = service(port, pairs, 1)
    four = service(port, pairs * 2, 4)
    row["service_policy"] = {"requests_per_s_1_client": round(one, 2), "requests_per_s_4_clients": round(four, 2),
                             "ratio_4_to_1": round(four / one, 2)}
    row["load_avg_1min_end"] = os.getloadavg()[0]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=12, help="View 1 test pairs per measurement")
    p.add_argument("--cli-runs", type=int, default=3)
    p.add_argument("--busy-s", type=float, default=240, help="bound on the busy-loop processes' life")
    args = p.parse_args()
    lfw = data_root() / "lfw"
    lines = (lfw / "pairsDevTest.txt").read_text().splitlines()[1:1 + args.pairs]
    pairs = []
    for line in lines:
        f = line.split("\t")
        name_b, j = (f[0], f[2]) if len(f) == 3 else (f[2], f[3])
        pairs.append((str(lfw / "deepfunneled" / f[0] / f"{f[0]}_{int(f[1]):04d}.jpg"),
                      str(lfw / "deepfunneled" / name_b / f"{name_b}_{int(j):04d}.jpg")))
    port = free_port()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(["--gallery", str(Path(tmp) / "g.db"), "--log-level", "warning"], port,
                              env=clean_env(SETTINGS["policy"]))
        try:
            idle = phase(pairs, args.cli_runs, port)
            spinners = spin(args.busy_s)
            try:
                busy = phase(pairs, args.cli_runs, port)
            finally:
                for s in spinners:
                    s.kill()
                    s.wait()
        finally:
            server.terminate()
            server.wait(timeout=30)
    slow = {path: round(busy[path]["torch_default"][key] / busy[path]["policy"][key], 2)
            for path, key in (("library", "median_ms"), ("command", "median_s"))}
    write_result("threads_load", {
        "benchmark": "the thread policy vs torch's default threads, idle and with a busy loop on every core",
        "command": command(), "busy": f"{os.cpu_count()} busy-loop processes, at most {args.busy_s} s",
        "idle": idle, "busy_loaded": busy, "busy_torch_default_over_policy": slow,
        "busy_over_idle_policy": {"library": round(busy["library"]["policy"]["median_ms"]
                                                   / idle["library"]["policy"]["median_ms"], 2),
                                  "command": round(busy["command"]["policy"]["median_s"]
                                                   / idle["command"]["policy"]["median_s"], 2)},
        "machine": machine()})


if __name__ == "__main__":
    main()
