"""Real photos and models for the gallery tests: LFW photos that hold exactly one face (the Haar cascade
finds a second, background face in many LFW photos, and enrollment refuses those), and a second model
(the shipped one with changed weights) for the model-mixing and re-embedding tests."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from siamface.checkpoint import WEIGHTS_DIR
from siamface.data import load_image
from siamface.faces import AlignConfig, detect_faces
from siamface.files import sha256_file
from siamface.gallery import Gallery
from siamface.verify import Verifier

# LFW people with many photos (deep-funneled: one centred face per photo, sometimes a second one behind)
PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon",
          "Hugo_Chavez", "Junichiro_Koizumi", "Jean_Chretien", "John_Ashcroft", "Jacques_Chirac", "Serena_Williams")

LFW_VIEW1 = WEIGHTS_DIR / "lfw-view1"  # the Haar-aligned model these tests are written for


def _faces(path: Path) -> int:
    rgb = load_image(path, channels=3).transpose(1, 2, 0)
    return len(detect_faces(np.ascontiguousarray(rgb), AlignConfig()))


@cache
def single_face_photos(lfw: Path, n_people: int, per_person: int) -> dict[str, tuple[Path, ...]]:
    """The first `per_person` photos of each of the first `n_people` PEOPLE in which one face is found."""
    out: dict[str, tuple[Path, ...]] = {}
    for name in PEOPLE[:n_people]:
        photos: list[Path] = []
        for p in sorted((lfw / "deepfunneled" / name).glob("*.jpg"))[:4 * per_person]:
            if len(photos) < per_person and _faces(p) == 1:
                photos.append(p)
        assert len(photos) == per_person, f"{name}: too few single-face photos"
        out[name] = tuple(photos)
    return out


def other_model(dst: Path) -> Path:
    """A copy of the shipped face model whose tower's last layer is changed: other weights, other
    embeddings, same architecture and preprocessing."""
    shutil.copytree(LFW_VIEW1, dst)
    state = load_file(dst / "model.safetensors")
    gen = torch.Generator().manual_seed(0)
    w = state["tower.head.fc.weight"]
    state["tower.head.fc.weight"] = w + 0.05 * w.std() * torch.randn(w.shape, generator=gen)
    save_file(state, dst / "model.safetensors")
    meta = json.loads((dst / "model.json").read_text())
    meta["weights_sha256"] = sha256_file(dst / "model.safetensors")
    (dst / "model.json").write_text(json.dumps(meta))
    return dst


def lfw_view1_verifier() -> Verifier:
    """The Haar-aligned grey model: the gallery's mechanics, fast (a module fixture in the gallery tests)."""
    return Verifier(LFW_VIEW1)


def open_gallery(tmp_path: Path, verifier: Verifier) -> Iterator[Gallery]:
    """A new gallery file in the test's folder, closed afterwards (a fixture in the gallery tests)."""
    with Gallery(tmp_path / "people.db", verifier) as g:
        yield g
