"""ONNX: `siamface export --format onnx` on the shipped twin (tower, head, MMOD detector), checked with
onnx.checker and run by onnxruntime against torch on real LFW faces aligned by the model's own preprocessing
(max abs difference <= 1e-4, fp32); `Verifier(runtime="onnx")` and `--runtime onnx` give torch's decisions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import TinyRun, att_dir, one_thread, tiny_run

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'siamface[onnx]')")
import onnx  # noqa: E402

from siamface.checkpoint import load_model  # noqa: E402
from siamface.cli import main  # noqa: E402
from siamface.errors import SiamfaceError  # noqa: E402
from siamface.export import HEAD, MANIFEST, MMOD, TOWER, export_onnx, parity_inputs, require_onnx, session  # noqa: E402
from siamface.faces.mmod import MMODDetector  # noqa: E402
from siamface.onnx_runtime import cache_dir, onnx_tower, tower_key  # noqa: E402
from siamface.verify import Verifier  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
PEOPLE = ["Aaron_Peirsol", "Abdullah_Gul", "Ai_Sugiyama"]
TOL = 1e-4


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAMFACE_CACHE", str(tmp_path_factory.getbasetemp() / "siamface-cache"))


def _lfw(data_root: Path, person: str, k: int) -> Path:
    return data_root / "lfw" / "deepfunneled" / person / f"{person}_{k:04d}.jpg"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx") / "twin"
    manifest = export_onnx("dlib-twin", out, images=[_lfw(data_root, p, 1) for p in PEOPLE])
    return out, manifest


def test_export_writes_checked_graphs_and_a_manifest(exported: tuple[Path, dict]) -> None:
    out, manifest = exported
    assert sorted(p.name for p in out.iterdir()) == sorted([TOWER, HEAD, MMOD, MANIFEST, "model.json"])
    for name in (TOWER, HEAD, MMOD):
        onnx.checker.check_model(onnx.load(str(out / name)), full_check=True)
        assert 0 <= manifest["files"][name]["max_abs_diff_vs_torch"] <= TOL
    assert json.loads((out / MANIFEST).read_text()) == json.loads(json.dumps(manifest))
    assert manifest["parity"]["images"] == len(PEOPLE) and manifest["embed_dim"] == 128


def test_onnxruntime_matches_torch_on_real_lfw_faces(exported: tuple[Path, dict], data_root: Path) -> None:
    out, _ = exported
    loaded = load_model("dlib-twin")
    x = parity_inputs(loaded, [_lfw(data_root, p, k) for p in PEOPLE for k in (1, 2)])  # 6 aligned chips
    with torch.no_grad():
        want = loaded.model.embed(x).numpy()  # the unfused tower: the reference, not the copy that was exported
        tower = session(out / TOWER)
        got = tower.run(None, {"images": x.numpy()})[0]
        one_by_one = np.concatenate([tower.run(None, {"images": x[i:i + 1].numpy()})[0] for i in range(len(x))])
        assert np.abs(got - want).max() <= TOL
        np.testing.assert_allclose(one_by_one, got, rtol=0, atol=1e-5)  # the batch axis is dynamic
        e1, e2 = torch.from_numpy(got), torch.from_numpy(got).roll(1, 0)
        logits = session(out / HEAD).run(None, {"e1": e1.numpy(), "e2": e2.numpy()})[0]
        assert np.abs(logits - loaded.model.score(e1, e2).numpy()).max() <= TOL
    detector = MMODDetector.load()
    from siamface.data import load_image

    rgb = np.ascontiguousarray(load_image(_lfw(data_root, PEOPLE[0], 2), channels=3).transpose(1, 2, 0))
    canvas = np.ascontiguousarray(detector.canvas(rgb)[0])[None].astype(np.float32)
    scores = session(out / MMOD).run(None, {"canvas": canvas})[0]
    assert scores.shape[2:] != (0, 0) and np.abs(scores[:, 0] - detector.scores(canvas)).max() <= TOL


def test_verifier_on_onnxruntime_gives_torch_decisions(exported: tuple[Path, dict], data_root: Path) -> None:
    out, _ = exported
    loaded = load_model("dlib-twin")
    cached = cache_dir() / f"{tower_key(loaded)}.onnx"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes((out / TOWER).read_bytes())  # the exported tower is what the cache would hold
    torch_v, onnx_v = Verifier("dlib-twin"), Verifier("dlib-twin", runtime="onnx")
    assert type(onnx_v.net).__name__ == "OnnxTower"
    a, b, c = _lfw(data_root, PEOPLE[0], 1), _lfw(data_root, PEOPLE[0], 2), _lfw(data_root, PEOPLE[1], 1)
    for pair in ((a, b), (a, c)):
        want, got = torch_v.verify(*pair), onnx_v.verify(*pair)
        assert got.same == want.same and abs(got.probability - want.probability) <= TOL
    assert [want.same for want in (torch_v.verify(a, b), torch_v.verify(a, c))] == [True, False]


def test_cli_runtime_onnx(exported: tuple[Path, dict], data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _lfw(data_root, PEOPLE[2], 1), _lfw(data_root, PEOPLE[2], 2)
    answers = []
    for runtime in ("torch", "onnx"):
        assert main(["verify", str(a), str(b), "--runtime", runtime]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert answers[0]["same"] == answers[1]["same"]
    assert abs(answers[0]["probability"] - answers[1]["probability"]) <= TOL


def test_identify_on_onnxruntime_in_a_gallery_enrolled_with_torch(exported: tuple[Path, dict], data_root: Path,
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "people.db"
    for person in PEOPLE:
        assert main(["enroll", person, str(_lfw(data_root, person, 1)), "--gallery", str(db)]) == 0
    capsys.readouterr()
    assert main(["identify", str(_lfw(data_root, PEOPLE[0], 2)), "--gallery", str(db), "--runtime", "onnx"]) == 0
    assert json.loads(capsys.readouterr().out)["faces"][0]["match"] == PEOPLE[0]


def test_first_use_exports_the_tower_once_then_loads_it(tmp_path_factory: pytest.TempPathFactory,
                                                        data_root: Path) -> None:
    tiny: TinyRun = tiny_run(tmp_path_factory, data_root)
    images = sorted(att_dir(data_root).glob("s3*/2.pgm"))
    first = Verifier(tiny.path, runtime="onnx")
    cached = cache_dir() / f"{tower_key(first.loaded)}.onnx"
    stamp = cached.stat().st_mtime_ns
    again = Verifier(tiny.path, runtime="onnx")
    assert cached.stat().st_mtime_ns == stamp  # loaded, not exported again
    torch.testing.assert_close(again.embed(images), Verifier(tiny.path).embed(images), rtol=0, atol=TOL)


def test_an_export_that_misses_the_tolerance_writes_nothing(tmp_path_factory: pytest.TempPathFactory,
                                                            data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import siamface.export as ex

    tiny: TinyRun = tiny_run(tmp_path_factory, data_root)
    monkeypatch.setattr(ex, "TOLERANCE", -1.0)  # no difference can meet it
    out = tmp_path_factory.mktemp("refused") / "onnx"
    with pytest.raises(SiamfaceError, match="onnxruntime differs from torch"):
        export_onnx(tiny.path, out, detector=False)
    assert not out.exists()


def test_missing_extra_and_unknown_runtime_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="runtime must be one of torch, onnx"):
        onnx_tower(load_model("dlib-twin"), "tensorrt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SiamfaceError, match=r"pip install 'siamface\[onnx\]'"):
        require_onnx()
    assert main(["export", "dlib-twin", "--out", "/nonexistent/x"]) == 2
