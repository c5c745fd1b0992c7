"""Load on `siamface serve` over loopback: concurrent clients send verify and identify requests against a
gallery of many people; requests/s, latency percentiles, the server's peak memory and the error count.

The gallery is built first through the Gallery API (one LFW photo per person, people in sorted order; a photo
without a detectable face skips the person, several faces enroll the largest). The server is a real
`siamface serve` process with the shipped model; the clients are threads with one httpx connection each.
Verify pairs are random LFW photo pairs (half of one person); identify probes are each enrolled person's
second photo where there is one. Requests are shuffled together and dealt to the clients.

    python benchmarks/serve_load.py                               # 1,000 people, 500 + 500 requests, 8 clients
    python benchmarks/serve_load.py --people 50 --verify 40 --identify 40 --out serve_load_quick
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import REPO, command, data_root, machine, write_result

sys.path.insert(0, str(REPO / "tests"))
from _serve_helpers import free_port, start_server  # noqa: E402

from siamface.errors import SiamfaceError  # noqa: E402


def lfw_people(root: Path) -> list[list[Path]]:
    folders = sorted(p for p in (root / "lfw" / "deepfunneled").iterdir() if p.is_dir())
    return [sorted(f.glob("*.jpg")) for f in folders]


def build_gallery(db: Path, people: list[list[Path]], n: int) -> tuple[list[list[Path]], dict[str, Any]]:
    """Enroll the first photo of the first n people whose photo has a face; returns them and the cost."""
    from siamface.gallery import Gallery

    enrolled, skipped, t0 = [], 0, time.perf_counter()
    with Gallery(db) as g:
        for photos in people:
            if len(enrolled) == n:
                break
            try:
                g.enroll(photos[0].parent.name, [photos[0]], select="largest")
            except SiamfaceError:
                skipped += 1
                continue
            enrolled.append(photos)
    return enrolled, {"people": len(enrolled), "skipped_no_face": skipped,
                      "build_s": round(time.perf_counter() - t0, 1)}


def requests_plan(all_people: list[list[Path]], enrolled: list[list[Path]], n_verify: int, n_identify: int,
                  rng: random.Random) -> list[tuple[str, dict[str, tuple[str, bytes]]]]:
    """Shuffled (path, files) requests: verify pairs (half same person) and identify probes."""
    multi = [p for p in all_people if len(p) > 1]
    plan = []
    for i in range(n_verify):
        if i % 2 == 0:
            a, b = rng.sample(rng.choice(multi), 2)
        else:
            a, b = rng.choice(rng.choice(all_people)), rng.choice(rng.choice(all_people))
        plan.append(("/verify", {"image_a": (a.name, a.read_bytes()), "image_b": (b.name, b.read_bytes())}))
    for _ in range(n_identify):
        photos = rng.choice(enrolled)
        probe = photos[1] if len(photos) > 1 else photos[0]
        plan.append(("/identify", {"image": (probe.name, probe.read_bytes())}))
    rng.shuffle(plan)
    return plan


def run_clients(port: int, plan: list, clients: int) -> tuple[list[tuple[str, int, float]], float, set[str]]:
    """Each client takes the next request until none is left; returns (route, status, seconds), the wall
    time and the distinct messages of the answers that were not 200."""
    import httpx

    results: list[tuple[str, int, float]] = []
    messages: set[str] = set()
    lock, cursor = threading.Lock(), iter(plan)

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            while True:
                with lock:
                    item = next(cursor, None)
                if item is None:
                    return
                path, files = item
                t0 = time.perf_counter()
                try:
                    r = c.post(path, files=files)
                    status = r.status_code
                    if status != 200:
                        messages.add(f"{status} {path}: {r.text[:300]}")
                except httpx.HTTPError as e:
                    status = -1
                    messages.add(f"{type(e).__name__} {path}: {e}")
                with lock:
                    results.append((path, status, time.perf_counter() - t0))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0, messages


def summary(rows: list[tuple[str, int, float]], wall: float | None = None) -> dict[str, Any]:
    """Latency over every answer. errors: anything but 200 and the documented 422 for a photo without a
    detectable face (random LFW photos include some; counted under statuses), i.e. 5xx, timeouts, transport."""
    from collections import Counter

    lat = np.array([s for _, _, s in rows]) * 1000
    statuses = Counter(str(st) for _, st, _ in rows)
    out = {"requests": len(rows), "errors": sum(st not in (200, 422) for _, st, _ in rows),
           "statuses": dict(sorted(statuses.items())),
           "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
           "mean_ms": round(float(lat.mean()), 1)}
    if wall is not None:
        out["requests_per_s"] = round(len(rows) / wall, 2)
        out["wall_s"] = round(wall, 1)
    return out


def peak_rss_mb(pid: int) -> float:
    """The server's peak resident set (VmHWM), read before it stops."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=1000)
    ap.add_argument("--verify", type=int, default=500)
    ap.add_argument("--identify", type=int, default=500)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, in the server and while building")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="serve_load")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    people = lfw_people(data_root())
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "people.db"
        enrolled, gallery = build_gallery(db, people, args.people)
        plan = requests_plan(people, enrolled, args.verify, args.identify, rng)
        port, log = free_port(), Path(tmp) / "serve.log"
        proc = start_server(["--gallery", str(db), "--log-level", "warning", "--threads", str(args.threads)], port,
                            log=log)
        try:
            rows, wall, messages = run_clients(port, plan, args.clients)
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
        errors_seen = [line for line in log.read_text().splitlines() if "Error" in line][:5]
    result = {
        "command": command(), "seed": args.seed, "machine": machine(), "nice": os.nice(0),
        "data": "LFW deep-funneled (../shared/data/lfw/deepfunneled); model: the shipped lfw-view1 (resface64)",
        "setup": {"clients": args.clients, "torch_threads": args.threads, "verify_requests": args.verify,
                  "identify_requests": args.identify,
                  "transport": "HTTP/1.1 over loopback, one keep-alive connection per client",
                  "server": "siamface serve, one uvicorn worker, inference in its threadpool", **gallery},
        "all": summary(rows, wall),
        "verify": summary([r for r in rows if r[0] == "/verify"]),
        "identify": summary([r for r in rows if r[0] == "/identify"]),
        "server_peak_rss_mb": rss, "server_log_errors": errors_seen, "non_200_answers": sorted(messages)[:20],
        "load_average_1_5_15_min": {"before": [round(x, 2) for x in load_before],
                                    "after": [round(x, 2) for x in os.getloadavg()],
                                    "note": "2 cores shared with other jobs: latency includes their contention"},
    }
    write_result(args.out, result)
    sys.exit(1 if result["all"]["errors"] else 0)


if __name__ == "__main__":
    main()
