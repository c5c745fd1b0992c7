"""Kinds of photos for calibrating and testing operating points: descriptors of every photo, computed once.

A kind is a set of labelled photos taken one way: LFW (web photos of celebrities), AT&T (grey studio
portraits), IMM (640x480 colour lab photos, pose and side light), and LFW photos changed here (grey, low
resolution, blur, heavy JPEG, side light, dark). Each photo goes through the default model's own
preprocessing (MMOD detector, 5 landmarks, dlib's 150x150 chip) and dlib's tower once; the descriptors
(before the Siamese head, so any head can score them) are cached in `--cache/<kind>.npz` with each photo's
identity and path (photos with no face found are left out, as verify would refuse them).

LFW labels the central face of a photo, so LFW kinds select the central face (the label is then right);
the other kinds hold one face per photo.

    python benchmarks/photo_kinds.py                       # every kind -> runs/kinds/*.npz
    python benchmarks/photo_kinds.py --kinds att imm       # some kinds
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_root  # noqa: E402

from siamface.checkpoint import default_model_path, load_model  # noqa: E402
from siamface.embed import embed_batches  # noqa: E402
from siamface.errors import SiamfaceError  # noqa: E402
from siamface.faces.files import extract_face_array  # noqa: E402
from siamface.verify import inference_net  # noqa: E402

VARIANT_PEOPLE, VARIANT_PER_PERSON = 900, 3  # LFW variants: these many people (seeded), at most 3 photos each


def _grey(im: Image.Image) -> Image.Image:
    return im.convert("L").convert("RGB")


def _lowres(im: Image.Image) -> Image.Image:
    w, h = im.size
    return im.resize((w // 4, h // 4), Image.BILINEAR).resize((w, h), Image.BILINEAR)


def _blur(im: Image.Image) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(2.5))


def _jpeg(im: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=8)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _sidelight(im: Image.Image) -> Image.Image:
    a = np.asarray(im).astype(np.float32)
    ramp = np.linspace(0.25, 1.25, a.shape[1], dtype=np.float32)[None, :, None]
    return Image.fromarray(np.clip(a * ramp, 0, 255).astype(np.uint8))


def _dark(im: Image.Image) -> Image.Image:
    a = np.asarray(im).astype(np.float32) / 255.0
    return Image.fromarray(np.clip(255 * 0.45 * a ** 1.6, 0, 255).astype(np.uint8))


VARIANTS = {"lfw-grey": _grey, "lfw-lowres": _lowres, "lfw-blur": _blur, "lfw-jpeg": _jpeg,
            "lfw-sidelight": _sidelight, "lfw-dark": _dark}
KINDS = ("att", "imm", "lfw", *VARIANTS)


def photos(kind: str, seed: int = 0) -> list[tuple[str, Path]]:
    """(identity, path) of every photo of a kind, sorted."""
    root = data_root()
    if kind == "att":
        return sorted((p.parent.name, p) for p in (root / "att_faces").glob("s*/*.pgm"))
    if kind == "imm":
        return sorted((p.name.split("-")[0], p) for p in (root / "imm_faces").glob("*/*.jpg"))
    lfw = sorted((p.parent.name, p) for p in (root / "lfw" / "deepfunneled").glob("*/*.jpg"))
    if kind == "lfw":
        return lfw
    people = sorted({n for n, _ in lfw})
    keep = set(np.random.default_rng(seed).permutation(people)[:VARIANT_PEOPLE].tolist())
    out, count = [], {}
    for n, p in lfw:
        if n in keep and count.get(n, 0) < VARIANT_PER_PERSON:
            out.append((n, p))
            count[n] = count.get(n, 0) + 1
    return out


def rgb(kind: str, path: Path) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    if kind in VARIANTS:
        im = VARIANTS[kind](im)
    return np.ascontiguousarray(np.asarray(im))


def compute(kind: str, out: Path, model: str | None = None) -> dict:
    """Descriptors of every photo of a kind in which a face is found, written to `out` (npz)."""
    lm = load_model(model or default_model_path())
    net = inference_net(lm.model)
    pre = lm.preprocess
    if kind.startswith("lfw"):
        pre = replace(pre, align=replace(pre.align, select="central"))
    items = photos(kind)
    t0, inputs, ids, paths, missed = time.perf_counter(), [], [], [], 0
    for k, (name, path) in enumerate(items):
        try:
            arr, _ = extract_face_array(rgb(kind, path), pre, source=str(path))
        except SiamfaceError:
            missed += 1
            continue
        inputs.append(arr)
        ids.append(name)
        paths.append(str(path.relative_to(data_root())))
        if (k + 1) % 500 == 0:
            print(f"{kind}: {k + 1}/{len(items)} photos, {time.perf_counter() - t0:.0f} s", flush=True)
    emb = embed_batches(net, torch.from_numpy(np.stack(inputs)), pre, batch_size=64).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, emb=emb.astype(np.float32), ids=np.array(ids), paths=np.array(paths))
    tmp.replace(out)
    info = {"kind": kind, "photos": len(items), "no_face": missed, "people": len(set(ids)),
            "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(info), flush=True)
    return info


def load(kind: str, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(descriptors (N, 128), identities (N,), paths (N,)) of a kind from the cache."""
    with np.load(cache / f"{kind}.npz", allow_pickle=False) as z:
        return z["emb"], z["ids"], z["paths"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    p.add_argument("--cache", default="runs/kinds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--force", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for kind in args.kinds:
        out = Path(args.cache) / f"{kind}.npz"
        if out.exists() and not args.force:
            continue
        compute(kind, out)


if __name__ == "__main__":
    main()
