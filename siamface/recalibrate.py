"""Calibration in the user's own domain (`siamface calibrate`): a model's operating points measured again
on the user's labelled people.

`calibrate("my_people/", model=None)` embeds every photo of an identity folder (`root/<person>/<photo>`),
scores every pair of photos (every pair of two different people is an impostor pair from the place of
use), measures the operating points on them (siamface.calibration) and writes a derived model folder: the
same weights, the new calibration, and provenance naming the folder, its people and its counts. Points the
folder cannot resolve keep the starting model's, marked as inherited. `--model DIR` then uses it anywhere.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import calibration as cal
from .card import META, Calibration, calibration_record
from .checkpoint import WEIGHTS, default_model_path, load_model
from .data import scan_folder
from .embed import embed_batches, score_indices, store_for
from .errors import DataError, ImageError, NoFaceError, SiamfaceError
from .files import atomic_write_json, check_output_folder, sha256_file
from .verify import inference_net

MAX_PAIRS = 5_000_000


def calibrate(folder: str | Path, model: str | Path | None = None, out: str | Path | None = None,
              seed: int = 0, default: str | None = None, progress: bool = False) -> Path:
    """Measure `model`'s operating points on the people of an identity folder and write the derived model
    to `out` (default: `<folder>-calibrated` beside the folder); returns its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of identities (expected {folder}/<person>/<photo>)")
    dest = Path(out) if out is not None else folder.with_name(folder.name + "-calibrated")
    if dest.exists() and any(dest.iterdir()):
        raise SiamfaceError(f"{dest}: exists and is not empty; choose another output folder")
    check_output_folder(dest, flag="output folder", create=False)
    base = load_model(model if model is not None else default_model_path())
    records = scan_folder(folder)
    people = {r.identity for r in records}
    if len(people) < 2:
        raise DataError(f"{folder}: needs photos of at least 2 people to measure false accepts, found {len(people)}")
    errors: dict[Path, SiamfaceError] = {}
    store = store_for([r.path for r in records], base.preprocess, progress=progress, fallback=False, errors=errors)
    kept = [r for r in records if r.path in store.index]
    ids = [r.identity for r in kept]
    if len(set(ids)) < 2:
        raise DataError(f"{folder}: faces were found in the photos of fewer than 2 people")
    net = inference_net(base.model)
    emb = embed_batches(net, store.images[[store.index[r.path] for r in kept]], base.preprocess)
    pairs = cal.all_pairs(lambda i, j: score_indices(base.model, emb, i, j), ids, kind=folder.name,
                          max_pairs=MAX_PAIRS, seed=seed)
    what = f"{len(set(ids))} people ({len(kept)} photos) of {folder.resolve()}"
    points = cal.calibrate_sets([pairs], what, seed=seed)
    old = base.card.calibration
    merged, inherited = _with_inherited(points, old)
    default = default or (old.default if old is not None else cal.EER)  # calibration_record falls back if absent
    skipped = {"no_face": sum(isinstance(e, NoFaceError) for e in errors.values()),
               "unreadable": sum(isinstance(e, ImageError) for e in errors.values())}
    record = calibration_record(
        merged, default, identities=sorted(set(ids)),
        calibrated_from={"model": str(base.path), "weights_sha256": base.card.weights_sha256},
        folder=str(folder.resolve()), people=len(set(ids)), photos=len(kept), photos_skipped=skipped,
        impostor_pairs=int((~pairs.same).sum()), genuine_pairs=int(pairs.same.sum()), inherited=inherited,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return _write(base, record, dest)


def _with_inherited(points: cal.Points, old: Calibration | None) -> tuple[cal.Points, list[str]]:
    """The folder's points, plus the starting model's points at FARs the folder cannot resolve (each noted
    as inherited); the FAR curve continues with the model's below the folder's resolution, never looser."""
    if old is None:
        return points, []
    merged = dict(points.points)
    inherited = []
    for name, p in old.points.items():
        if name not in merged and p.target is not None:
            merged[name] = replace(p, source=f"inherited from the starting model: {p.source} (the folder's pairs "
                                             "do not resolve this rate)")
            inherited.append(name)
    curve = list(points.curve)
    lowest = min((f for f, _ in curve), default=1.0)
    top = max((t for _, t in curve), default=0.0)
    for far, t in sorted(old.curve, reverse=True):
        if far < lowest * (1 - 1e-9):
            top = max(top, t)
            curve.append((far, top))
    order = dict(sorted(merged.items(), key=lambda kv: (kv[0] != cal.EER, -(kv[1].target or 1.0))))
    return replace(points, points=order, curve=tuple(curve)), inherited


def _write(base: Any, record: dict[str, Any], dest: Path) -> Path:
    """The derived model folder, whole or not at all: a temporary folder beside it, renamed into place."""
    meta = dict(base.card.raw)
    meta["calibration"] = record
    meta["created_by"] = "siamface calibrate"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        shutil.copy2(base.path / WEIGHTS, tmp / WEIGHTS)
        if sha256_file(tmp / WEIGHTS) != base.card.weights_sha256:
            raise SiamfaceError(f"{base.path / WEIGHTS}: changed while it was copied")
        atomic_write_json(tmp / META, meta)
        load_model(tmp)  # the derived model must load before it is published
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def summary(path: Path) -> dict[str, Any]:
    """What `siamface calibrate` prints: each point with its threshold, FAR, interval and evidence."""
    card = load_model(path).card
    c = card.calibration
    assert c is not None
    return {"model": str(path), "default": c.default, "people": c.raw.get("people"), "photos": c.raw.get("photos"),
            "impostor_pairs": c.raw.get("impostor_pairs"), "genuine_pairs": c.raw.get("genuine_pairs"),
            "inherited": c.raw.get("inherited", []),
            "points": {n: {"threshold": round(p.threshold, 6), "far": p.far, "far_interval": p.far_interval,
                           "frr": None if np.isnan(p.frr) else round(p.frr, 4)} for n, p in c.points.items()}}
