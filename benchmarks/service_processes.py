"""Service scaling with `siamface serve --processes N`: verify requests/s from 1 and from 4 concurrent clients,
for each process count, in one run on the machine as it is (the thread policy: one torch thread per request).

    python benchmarks/service_processes.py               # about 2 minutes on 2 cores

Each server (one per process count) is started, warmed with 4 concurrent clients, then measured in
`--rounds` alternating rounds (1 client, then 4 clients, for each server in turn); the figure is the median
of the rounds' requests/s. Every client opens its own connection, so with N processes the kernel spreads
the clients over them. The 1-minute load average is recorded at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from common import command, data_root, machine, write_result
from threads_load import SETTINGS, clean_env, free_port, service, start_server  # the tests' server helpers


def view1_pairs(n: int) -> list[tuple[str, str]]:
    """The first `n` pairs of LFW View 1's test list, as photo paths."""
    lfw = data_root() / "lfw"
    pairs = []
    for line in (lfw / "pairsDevTest.txt").read_text().splitlines()[1:1 + n]:
        f = line.split("\t")
        name_b, j = (f[0], f[2]) if len(f) == 3 else (f[2], f[3])
        pairs.append((str(lfw / "deepfunneled" / f[0] / f"{f[0]}_{int(f[1]):04d}.jpg"),
                      str(lfw / "deepfunneled" / name_b / f"{name_b}_{int(j):04d}.jpg")))
    return pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", default="1,2", help="comma-separated process counts, each its own server")
    p.add_argument("--pairs", type=int, default=40, help="View 1 pairs per 1-client round (twice that at 4)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="service_processes")
    args = p.parse_args()
    counts = [int(c) for c in args.processes.split(",")]
    pairs = view1_pairs(args.pairs)
    load_start = os.getloadavg()
    rates: dict[int, dict[str, list[float]]] = {n: {"1": [], "4": []} for n in counts}
    with tempfile.TemporaryDirectory() as tmp:
        ports = {n: free_port() for n in counts}
        servers = {n: start_server(["--gallery", str(Path(tmp) / f"g{n}.db"), "--log-level", "warning",
                                    "--processes", str(n)], ports[n], env=clean_env(SETTINGS["policy"]))
                   for n in counts}
        try:
            for n in counts:
                service(ports[n], pairs[:16], 4)  # warm every process
            for _ in range(args.rounds):
                for n in counts:
                    rates[n]["1"].append(service(ports[n], pairs, 1))
                    rates[n]["4"].append(service(ports[n], pairs * 2, 4))
        finally:
            for s in servers.values():
                s.terminate()
                s.wait(timeout=60)
    rows: dict[str, Any] = {}
    for n in counts:
        one, four = statistics.median(rates[n]["1"]), statistics.median(rates[n]["4"])
        rows[f"processes_{n}"] = {"requests_per_s_1_client": round(one, 2), "requests_per_s_4_clients": round(four, 2),
                                  "ratio_4_to_1": round(four / one, 2),
                                  "rounds_1_client": [round(r, 2) for r in rates[n]["1"]],
                                  "rounds_4_clients": [round(r, 2) for r in rates[n]["4"]]}
    write_result(args.out, {
        "benchmark": "verify requests/s from 1 and 4 clients against `siamface serve --processes N`",
        "command": command(), "pairs_1_client": len(pairs), "pairs_4_clients": 2 * len(pairs),
        "rounds": args.rounds, "results": rows, "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
        "machine": machine()})



if __name__ == "__main__":
    main()
