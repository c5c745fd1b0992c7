"""A burst of very large photos against `siamface serve` (issue 17, section 1.1): N concurrent POST /verify of
one LFW photo blown up to SIDE x SIDE pixels (a JPEG of about 740 KB, under every upload limit), and a normal
verify (two 250 px LFW photos) sent 0.5 s later; the statuses and times, the server's CPU time in the 2 s and
the 3 s after the last answer (work that goes on after its request was answered), and its peak memory.

The server is a real `siamface serve` process (shipped model, one torch thread, a new gallery, no key).

    python benchmarks/serve_burst.py                       # 4 photos of 6000x6000, the default 30 s timeout
    python benchmarks/serve_burst.py --timeout 3 --out serve_burst_timeout3
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from typing import Any

from common import REPO, command, data_root, machine, write_result

sys.path.insert(0, str(REPO / "tests"))
from _serve_helpers import free_port, start_server  # noqa: E402


def big_jpeg(side: int) -> bytes:
    from PIL import Image

    photo = data_root() / "lfw" / "deepfunneled" / "George_W_Bush" / "George_W_Bush_0001.jpg"
    buf = io.BytesIO()
    Image.open(photo).convert("RGB").resize((side, side), Image.BILINEAR).save(buf, "JPEG", quality=60)
    return buf.getvalue()


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    line = next(x for x in open(f"/proc/{pid}/status") if x.startswith("VmHWM"))
    return round(int(line.split()[1]) / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=4)
    ap.add_argument("--side", type=int, default=6000)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--out", default="serve_burst")
    args = ap.parse_args()
    import httpx

    big = big_jpeg(args.side)
    small = (data_root() / "lfw" / "deepfunneled" / "George_W_Bush" / "George_W_Bush_0002.jpg").read_bytes()
    answers: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(["--gallery", f"{tmp}/g.db", "--threads", "1", "--log-level", "warning",
                             "--timeout", str(args.timeout)], port, env={"SIAMFACE_API_KEY": ""})
        try:
            def post(name: str, photo: bytes) -> None:
                t0 = time.perf_counter()
                r = httpx.post(f"http://127.0.0.1:{port}/verify", timeout=300,
                               files={"image_a": ("a.jpg", photo), "image_b": ("b.jpg", small)})
                answers[name] = {"status": r.status_code, "seconds": round(time.perf_counter() - t0, 2)}

            post("warm-up", small)
            threads = [threading.Thread(target=post, args=(f"large {i}", big)) for i in range(args.photos)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            post("normal", small)
            for t in threads:
                t.join()
            c0 = cpu_seconds(proc.pid)
            time.sleep(2)
            c1 = cpu_seconds(proc.pid)
            time.sleep(3)
            c2 = cpu_seconds(proc.pid)
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    answers.pop("warm-up")
    write_result(args.out, {
        "command": command(), "machine": machine(), "load_before": os.getloadavg(),
        "setup": {"photos": args.photos, "side": args.side, "jpeg_bytes": len(big), "timeout_s": args.timeout,
                  "server": "siamface serve, shipped model, --threads 1, default --workers/--queue/--max-side"},
        "answers": answers, "server_cpu_s_after_last_answer": {"0-2 s": round(c1 - c0, 2), "2-5 s": round(c2 - c1, 2)},
        "server_peak_rss_mb": rss})


if __name__ == "__main__":
    main()
