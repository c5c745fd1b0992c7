"""The dlib_resnet tower against dlib itself (dlib-bin, the `dev` extra) on real LFW faces.

The chips are made by dlib (HOG detector, 5-point shape predictor, get_face_chip), so this test isolates the
descriptor network. dlib missing is a failure (ImportError at collection), never a skip.
"""

from __future__ import annotations

import hashlib
import shutil
from importlib.resources import files
from pathlib import Path

import dlib
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from siamface.errors import ModelError
from siamface.models import count_parameters, create_model, default_preprocess
from siamface.models import dlib_resnet as dr
from siamface.preprocess import normalize

SRC = Path(str(files("face_recognition_models") / "models"))
N_FACES = 32
PARITY_TOL = 1e-5  # max abs difference to dlib's descriptor, fp32


@pytest.fixture(scope="module")
def chips_and_reference(data_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """N_FACES dlib chips (uint8 (N, 150, 150, 3)) from distinct LFW people, and dlib's descriptors of them."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(SRC / "shape_predictor_5_face_landmarks.dat"))
    recogniser = dlib.face_recognition_model_v1(str(SRC / "dlib_face_recognition_resnet_model_v1.dat"))
    people = sorted((data_root / "lfw" / "deepfunneled").iterdir())
    chips = []
    for person in people[:: max(1, len(people) // (3 * N_FACES))]:
        img = np.asarray(Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB"))
        boxes = detector(img, 1)
        if boxes:
            chips.append(dlib.get_face_chip(img, predictor(img, boxes[0]), size=150, padding=0.25))
        if len(chips) == N_FACES:
            break
    assert len(chips) == N_FACES
    reference = np.array([np.array(recogniser.compute_face_descriptor(c)) for c in chips])
    return np.stack(chips), reference


def test_descriptors_equal_dlibs(chips_and_reference: tuple[np.ndarray, np.ndarray]) -> None:
    chips, reference = chips_and_reference
    model = create_model("dlib_resnet").eval()
    # the registered preprocessing (uint8 -> [0, 1]) then the model's embed: the path siamface uses
    x = normalize(torch.from_numpy(chips).permute(0, 3, 1, 2), default_preprocess("dlib_resnet"))
    with torch.no_grad():
        ours = model.embed(x).double().numpy()
        fused = model.tower.fused()(x).double().numpy()
    assert ours.shape == reference.shape == (N_FACES, 128)
    assert np.abs(ours - reference).max() <= PARITY_TOL
    assert np.abs(fused - reference).max() <= PARITY_TOL  # the inference copy with affines folded
    # and the faces are told apart: different people are far apart in dlib's metric
    d = np.linalg.norm(ours[:, None] - ours[None], axis=-1)[~np.eye(N_FACES, dtype=bool)]
    assert np.median(d) > 0.6


def test_pretrained_model_loads_the_shipped_tower() -> None:
    model = create_model("dlib_resnet")
    assert count_parameters(model.tower) == dr.PARAMETERS == 5_614_592
    assert (model.in_channels, model.input_size, model.embed_dim) == (3, 150, 128)
    shipped = load_file(str(dr.WEIGHTS))
    for k, v in model.tower.state_dict().items():
        assert torch.equal(v, shipped[k]), k
    assert hashlib.sha256(dr.WEIGHTS.read_bytes()).hexdigest() == dr.WEIGHTS_SHA256
    untrained = create_model("dlib_resnet", pretrained=False)
    assert not torch.equal(untrained.tower.fc.weight, model.tower.fc.weight)


def test_fused_copy_is_frozen_and_leaves_the_tower_alone() -> None:
    tower = create_model("dlib_resnet").tower
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    fused = tower.fused()
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())
    assert not any(isinstance(m, dr.Affine) for m in fused.modules())
    for k, v in tower.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_tampered_or_foreign_weights_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "dlib_resnet_v1.safetensors"
    data = bytearray(dr.WEIGHTS.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256 differs"):
        dr.load_dlib_weights(dr.DlibResNet(), bad)
    other = tmp_path / "mmod.safetensors"
    shutil.copy(dr.WEIGHTS.parent / "mmod_detector.safetensors", other)
    with pytest.raises(ModelError, match="not the dlib descriptor's weights"):
        dr.load_dlib_weights(dr.DlibResNet(), other, sha256=None)
    with pytest.raises(ModelError, match="cannot read"):
        dr.load_dlib_weights(dr.DlibResNet(), tmp_path / "missing.safetensors")


def test_wrong_input_geometry_is_refused() -> None:
    with pytest.raises(ModelError, match="3x150x150"):
        create_model("dlib_resnet", preprocess=default_preprocess("dlib_resnet", size=112))


def test_add_prev_pads_channels_and_space_with_zeros() -> None:
    a = torch.arange(1 * 2 * 3 * 3, dtype=torch.float32).view(1, 2, 3, 3)
    b = torch.ones(1, 4, 4, 4)
    s = dr.add_prev(a, b)
    assert s.shape == (1, 4, 4, 4)
    expected = b.clone()
    expected[:, :2, :3, :3] += a
    torch.testing.assert_close(s, expected, rtol=0, atol=0)
    torch.testing.assert_close(dr.add_prev(b, a), s, rtol=0, atol=0)


def test_dlib_padding_rule_and_spatial_sizes() -> None:
    assert [dr.dlib_padding(k, s) for k, s in ((7, 2), (3, 2), (3, 1), (2, 2), (5, 1))] == [0, 0, 1, 0, 2]
    tower = dr.DlibResNet().eval()
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:]))) for b in tower.blocks]
    with torch.no_grad():
        tower(torch.rand(1, 3, 150, 150))
    for h in hooks:
        h.remove()
    # 35 -> 17 -> 8 -> 4 -> 2 as dlib's layers compute them; 29 convolutions in all
    assert sorted({s for s in sizes}, key=lambda s: -s[1]) == [(32, 35, 35), (64, 17, 17), (128, 8, 8),
                                                              (256, 4, 4), (256, 2, 2)]
    assert sum(isinstance(m, torch.nn.Conv2d) for m in tower.modules()) == 29
