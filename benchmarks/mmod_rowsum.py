"""The MMOD detector's last convolution (9x9, 45 channels to one score map) as row sums (`RowSumConv`) against
the plain convolution: milliseconds per detection network pass and the largest score difference, one thread,
alternating the two in one process.

    python benchmarks/mmod_rowsum.py          # benchmarks/results/mmod_rowsum.json (about 1 minute)

Canvases: dlib's tiled pyramid of a 640x480 frame (`siamface watch`'s clip) and of a 250x250 LFW photo, each
holding an LFW face.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
from common import command, data_root, machine, write_result

from siamface import threads
from siamface.faces.detect import _dlib_models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--name", default="mmod_rowsum", help="results/<name>.json")
    args = p.parse_args()
    threads.apply()
    detector = _dlib_models()[0]
    rowsum = detector.fast
    plain = torch.nn.Sequential(*list(rowsum)[:-1], detector.net.convs[-1]).eval()
    photo = cv2.cvtColor(cv2.imread(str(data_root() / "lfw/deepfunneled/Aaron_Peirsol/Aaron_Peirsol_0002.jpg")),
                         cv2.COLOR_BGR2RGB)
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[100:350, 100:350] = photo
    rows = []
    for name, image in (("640x480 frame", frame), ("250x250 LFW photo", photo)):
        canvas = detector.canvas(image)[0]
        x = torch.from_numpy(np.ascontiguousarray(canvas[None])).to(memory_format=torch.channels_last)
        times: dict[str, list[float]] = {"rowsum": [], "plain": []}
        with torch.no_grad():
            diff = float((rowsum(x) - plain(x)).abs().max())
            for _ in range(args.repeats):
                for key, net in (("plain", plain), ("rowsum", rowsum)):
                    t0 = time.perf_counter()
                    net(x)
                    times[key].append(1000 * (time.perf_counter() - t0))
        med = {k: round(float(np.median(v)), 2) for k, v in times.items()}
        rows.append({"input": name, "canvas": list(canvas.shape), "plain_ms": med["plain"],
                     "rowsum_ms": med["rowsum"], "ratio": round(med["rowsum"] / med["plain"], 3),
                     "max_abs_score_difference": diff})
    write_result(args.name, {"benchmark": "MMOD network pass, last layer as row sums vs plain",
                                 "command": command(), "repeats": args.repeats, "rows": rows, "machine": machine()})


if __name__ == "__main__":
    main()
