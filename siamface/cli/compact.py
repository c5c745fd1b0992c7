"""The CLI's default answers: the decision and one line per face (with its file); `--full` prints the
library's whole report instead (every box, the eyes, the landmarks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .flags import _finite


def _without_faces(answer: dict[str, Any]) -> dict[str, Any]:
    """Every field of an answer (the decision and where it came from) but its faces."""
    return {k: v for k, v in answer.items() if k != "faces"}


def _box(box: dict[str, Any] | None) -> dict[str, Any] | None:
    if box is None:
        return None
    return {**{k: box[k] for k in ("x", "y", "w", "h") if k in box}, "confidence": round(box.get("confidence", 0.0), 3)}


def verify_answer(verdict: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """A verify verdict: the decision, and per photo its file, the face used and how many were found."""
    out = _without_faces(verdict)
    faces = verdict.get("faces") or []
    out["faces"] = [{"file": Path(f).name, "box": _box(r.get("box")), "faces_found": len(r.get("faces") or [])}
                    for f, r in zip(files, faces)] if len(faces) == len(files) else []
    return out


def gallery_face(report: dict[str, Any] | None, source: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"file": source} if source is not None else {}
    report = report or {}
    return {**out, "box": _box(report.get("box")), "faces_in_photo": report.get("faces_in_photo", 1)}


def enroll_answer(answer: dict[str, Any]) -> dict[str, Any]:
    return {"name": answer["name"], "photos": answer["photos"],
            "enrolled": [{"id": e["id"], **gallery_face(e.get("face"), e.get("source"))} for e in answer["enrolled"]]}


def identify_answer(answer: dict[str, Any], file: str) -> dict[str, Any]:
    out = {**_without_faces(answer), "file": Path(file).name}
    out["faces"] = [{"match": f["match"], **gallery_face(f.get("face")), "candidates": f["candidates"]}
                    for f in answer["faces"]]
    return out


def verify_against_answer(answer: dict[str, Any], file: str) -> dict[str, Any]:
    out = _without_faces(answer)
    out["faces"] = [gallery_face(f, Path(file).name) for f in answer.get("faces") or []]
    return out


def print_compact(obj: dict[str, Any]) -> None:
    """JSON with one line per top-level field, and one line per item of a list of objects (a face)."""
    lines = []
    for key, value in _finite(obj).items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n".join(f"    {json.dumps(v, default=str)}" for v in value)
            lines.append(f"  {json.dumps(key)}: [\n{items}\n  ]")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, default=str)}")
    print("{\n" + ",\n".join(lines) + "\n}")
