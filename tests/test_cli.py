"""The command line: `python -m siamface` and `siamface.cli.main`, JSON out, one-line errors, exit codes,
and flags generated one-to-one from the config dataclasses."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from _helpers import TinyRun, att_dir, copy_run, one_thread, png_header, read_meta, tiny_run

from siamface.cli import RENAME, SKIP, build_parser, config_from_args, main
from siamface.config import DataConfig, ModelConfig, PreprocessConfig, TrainConfig
from siamface.models import default_preprocess

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
CONFIGS = (ModelConfig, DataConfig, TrainConfig, PreprocessConfig)
VERDICT_KEYS = {"same", "probability", "threshold", "threshold_source", "model", "elapsed_ms"}
# one spinning OpenMP thread per process: see _helpers.one_thread
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TinyRun:
    return tiny_run(tmp_path_factory, data_root)


@pytest.fixture(scope="module")
def faces(data_root: Path) -> tuple[str, str, str]:
    """Two images of one AT&T subject and one of another."""
    att = att_dir(data_root)
    return str(att / "s1" / "1.pgm"), str(att / "s1" / "2.pgm"), str(att / "s2" / "1.pgm")


def run_module(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "siamface", *args], capture_output=True, text=True,
                          timeout=timeout, env=SUBPROCESS_ENV)


def call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


# ---- models ------------------------------------------------------------------------------------------------

def test_models_lists_koch2015_with_its_parameter_count_in_a_subprocess() -> None:
    res = run_module("models")
    assert res.returncode == 0, res.stderr
    line = next(row for row in res.stdout.splitlines() if row.startswith("koch2015"))
    assert "38,951,745" in line and "1x105x105" in line
    assert any(row.startswith("tiny") for row in res.stdout.splitlines())


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = call(capsys, "models", "--json")
    assert rc == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["koch2015"]["parameters"] == 38_951_745
    assert rows["tiny"]["input"] == "1x32x32"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from siamface import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


# ---- end to end ------------------------------------------------------------------------------------------------

def test_train_evaluate_verify_end_to_end(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          faces: tuple[str, str, str]) -> None:
    out = tmp_path / "run"
    rc, stdout, err = call(capsys, "train", "--data", str(att_dir(data_root)), "--model", "tiny", "--epochs", "1",
                           "--pairs-per-epoch", "128", "--batch-size", "64", "--val-way", "5", "--val-tasks", "20",
                           "--val-pairs", "100", "--no-progress", "--no-bf16", "--out", str(out))
    assert rc == 0, err
    trained = json.loads(stdout)
    assert trained["status"] == "complete" and trained["out"] == str(out)
    assert 0.0 <= trained["calibration"]["threshold"] <= 1.0
    meta = read_meta(out)
    assert meta["model"]["name"] == "tiny" and meta["preprocess"]["size"] == 32  # the model's own preprocessing
    assert meta["train"]["epochs"] == 1 and meta["train"]["bf16"] is False and meta["train"]["progress"] is False
    assert meta["train"]["lr"] == TrainConfig().lr  # unset flags keep the dataclass defaults

    rc, stdout, err = call(capsys, "evaluate", "--model", str(out), "--split", "test", "--way", "5",
                           "--tasks", "20", "--n-pairs", "100")
    assert rc == 0, err
    report = json.loads(stdout)
    assert report["evaluated"] == "test" and report["oneshot_way"] == 5 and report["n_pairs"] == 100
    assert "accuracy_at_calibrated_threshold" in report
    assert (out / "eval-test" / "report.json").is_file() and (out / "eval-test" / "roc.png").is_file()

    rc, stdout, err = call(capsys, "verify", faces[0], faces[2], "--model", str(out))
    assert rc == 0, err
    verdict = json.loads(stdout)
    assert VERDICT_KEYS <= set(verdict)
    assert verdict["threshold"] == meta["calibration"]["threshold"]
    assert verdict["same"] == (verdict["probability"] >= verdict["threshold"])


def test_train_with_stderr_to_a_file_writes_one_line_per_epoch_and_no_progress_bar(data_root: Path,
                                                                                     tmp_path: Path) -> None:
    """Issue 11, fault 11: bars only on a terminal; a log gets one plain line per epoch."""
    out, log = tmp_path / "run", tmp_path / "stderr.log"
    with log.open("w") as err:
        res = subprocess.run([sys.executable, "-m", "siamface", "train", "--data", str(att_dir(data_root)), "--model",
                              "tiny", "--epochs", "3", "--pairs-per-epoch", "256", "--batch-size", "32", "--val-way",
                              "5", "--val-tasks", "10", "--val-pairs", "100", "--no-bf16", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=err, text=True, timeout=300, env=SUBPROCESS_ENV)
    text = log.read_text()
    assert res.returncode == 0, text
    assert "\r" not in text
    assert [line.split()[:2] for line in text.splitlines()] == [["epoch", str(k)] for k in (1, 2, 3)]


def test_fine_tuning_keeps_the_init_models_architecture_and_preprocessing(
        data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = ("--epochs", "1", "--pairs-per-epoch", "64", "--batch-size", "64", "--val-way", "5", "--val-tasks", "10",
             "--val-pairs", "50", "--no-progress", "--no-bf16")
    att = str(att_dir(data_root))
    rc, _, err = call(capsys, "train", "--data", att, "--model", "tiny", "--crop", "0.9", "--mean", "0.4",
                      "--model-kwargs", '{"head_weights": "nonpositive"}', *small, "--out", str(tmp_path / "init"))
    assert rc == 0, err
    rc, _, err = call(capsys, "train", "--data", att, "--init", str(tmp_path / "init"), "--crop", "1.0",
                      "--model-kwargs", '{"dropout": 0.1}', *small, "--out", str(tmp_path / "ft"))
    assert rc == 0, err
    meta, init = read_meta(tmp_path / "ft"), read_meta(tmp_path / "init")
    assert meta["model"] == {"name": "tiny", "kwargs": {"head_weights": "nonpositive", "dropout": 0.1}}  # merged
    assert meta["preprocess"] == {**init["preprocess"], "crop": 1.0}  # inherited, one field overridden
    assert meta["init_weights_sha256"] == init["weights_sha256"]
    assert meta["train"]["init"] == str((tmp_path / "init").resolve())
    rc, _, err = call(capsys, "train", "--data", att, "--init", str(tmp_path / "init"), "--model", "conv4", *small,
                      "--out", str(tmp_path / "bad"))
    assert rc != 0 and "the starting model (init) is tiny" in err  # another architecture: not from these weights
    rc, _, err = call(capsys, "train", "--data", att, "--init", str(tmp_path / "init"), "--model-kwargs",
                      '{"embed_dim": 8}', *small, "--out", str(tmp_path / "bad2"))
    assert rc != 0 and "embed_dim" in err  # kwargs that change weight shapes are named


def test_verify_in_a_subprocess_prints_json(tiny: TinyRun, faces: tuple[str, str, str]) -> None:
    res = run_module("verify", faces[0], faces[1], "--model", str(tiny.path))
    assert res.returncode == 0, res.stderr
    verdict = json.loads(res.stdout)
    assert VERDICT_KEYS <= set(verdict)
    assert isinstance(verdict["same"], bool) and 0.0 <= verdict["probability"] <= 1.0
    assert verdict["model"] == str(tiny.path)
    assert verdict["elapsed_ms"] >= 0


@pytest.mark.parametrize("kind", ["missing", "huge"])
def test_verify_error_in_a_subprocess_is_one_line(kind: str, tiny: TinyRun, faces: tuple[str, str, str],
                                                  tmp_path: Path) -> None:
    """'huge': a 10000x10000 PNG header, above Pillow's own warning limit (89 Mpx): no warning gets out."""
    bad = tmp_path / "nope.jpg"
    if kind == "huge":
        bad.write_bytes(png_header(10_000, 10_000))
    res = run_module("verify", str(bad), faces[1], "--model", str(tiny.path))
    assert res.returncode != 0
    assert res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and str(bad) in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and "Warning" not in res.stderr


# ---- batches with bad photos, and refusals up front (issue 11, faults 10 and 13) ---------------------------------

def _pairs_csv(path: Path, rows: list[tuple[Path | str, Path | str, int]]) -> Path:
    path.write_text("image_a,image_b,label\n" + "".join(f"{a},{b},{y}\n" for a, b, y in rows))
    return path


@pytest.fixture
def mixed_pairs(tmp_path: Path, tiny: TinyRun, data_root: Path) -> Path:
    """Good pairs of both labels (of test identities, so evaluate may use them) and three that cannot be scored."""
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    os.mkfifo(tmp_path / "pipe.jpg")
    first, second = (att_dir(data_root) / ident for ident in tiny.meta["split"]["test"][:2])
    a, b, c = first / "1.pgm", first / "2.pgm", second / "1.pgm"
    return _pairs_csv(tmp_path / "pairs.csv", [(a, b, 1), (tmp_path / "gone.jpg", a, 1), (a, c, 0),
                                               (b, tmp_path / "notes.jpg", 0), (b, c, 0), (tmp_path / "pipe.jpg", a, 1),
                                               (c, a, 0), (b, a, 1)])


def test_verify_pairs_scores_what_it_can_and_writes_the_reasons(tiny: TinyRun, mixed_pairs: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scores.csv"
    rc, stdout, err = call(capsys, "verify", "--pairs", str(mixed_pairs), "--out", str(out), "--model", str(tiny.path))
    assert rc == 0, err
    summary = json.loads(stdout)
    assert (summary["pairs"], summary["scored"]) == (8, 5)
    assert summary["not_scored"] == {"missing": 1, "unreadable": 1, "not a regular file": 1}
    assert err.count("\n") == 1 and err.startswith("siamface: 3 of 8 pairs not scored (") and str(out) in err
    rows = list(csv.DictReader(out.open()))
    assert [r["error"] for r in rows] == ["", "missing", "", "unreadable", "", "not a regular file", "", ""]
    assert all((r["probability"] == "") == bool(r["error"]) for r in rows)
    assert "gone.jpg: no such file" in rows[1]["error_detail"]

    rc, stdout, err = call(capsys, "verify", "--pairs", str(mixed_pairs), "--out", str(out), "--model",
                           str(tiny.path), "--strict")
    assert rc == 2 and json.loads(stdout)["scored"] == 5  # the scores are still written, the exit says not all
    assert len(err.strip().splitlines()) == 1 and "3 of 8 pairs not scored" in err and out.is_file()


def test_verify_refuses_to_write_the_scores_over_its_pairs_file(tiny: TinyRun, faces: tuple[str, str, str],
                                                                tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    pairs = _pairs_csv(tmp_path / "x.csv", [(faces[0], faces[1], 1)])
    before = pairs.read_text()
    (tmp_path / "link.csv").symlink_to(pairs)
    for out in (pairs, tmp_path / "link.csv", tmp_path / "." / "x.csv"):
        rc, stdout, err = call(capsys, "verify", "--pairs", str(pairs), "--out", str(out), "--model", str(tiny.path))
        assert rc == 2 and stdout == "" and "that is the pairs file itself" in err
    assert pairs.read_text() == before


def test_evaluate_pairs_skips_unusable_images_unless_strict(tiny: TinyRun, mixed_pairs: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    rc, stdout, err = call(capsys, "evaluate", "--model", str(tiny.path), "--pairs", str(mixed_pairs), "--out",
                           str(out))
    assert rc == 0, err
    report = json.loads(stdout)
    assert report["n_pairs"] == 5 and report["pairs_skipped"] == 3
    assert report["skipped_reasons"] == {"missing": 1, "unreadable": 1, "not a regular file": 1}
    assert json.loads((out / "report.json").read_text())["pairs_skipped"] == 3
    assert "Skipped pairs" in (out / "report.md").read_text()
    assert err.startswith("siamface: 3 of 8 pairs skipped (") and err.count("\n") == 1
    rc, stdout, err = call(capsys, "evaluate", "--model", str(tiny.path), "--pairs", str(mixed_pairs), "--out",
                           str(tmp_path / "strict"), "--strict")
    assert rc == 2 and stdout == "" and "gone.jpg: no such file" in err
    assert not (tmp_path / "strict").exists()


def test_val_way_above_the_validation_identities_is_refused_before_decoding(
        data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import siamface.data.prepare

    def no_decoding(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("images were decoded before the check")

    monkeypatch.setattr(siamface.data.prepare, "decode_images", no_decoding)
    rc, stdout, err = call(capsys, "train", "--data", str(att_dir(data_root)), "--model", "tiny", "--n-val", "5",
                           "--val-way", "50", "--out", str(tmp_path / "run"))
    assert rc == 2 and stdout == ""
    assert "val_way 50 (train.val_way) needs 50 validation identities, the validation split has 5" in err
    assert err.rstrip().endswith("(--val-way, or --n-val for more validation identities)")  # the CLI adds its flags
    assert str(att_dir(data_root)) in err


# ---- verify errors -------------------------------------------------------------------------------------------

def _bad_image(kind: str, tmp_path: Path, data_root: Path) -> Path:
    if kind == "missing":
        return tmp_path / "missing.jpg"
    if kind == "directory":
        (tmp_path / "folder.jpg").mkdir()
        return tmp_path / "folder.jpg"
    if kind == "empty":
        (tmp_path / "empty.jpg").write_bytes(b"")
        return tmp_path / "empty.jpg"
    if kind == "text":
        (tmp_path / "x.jpg").write_text("this is not a picture\n")
        return tmp_path / "x.jpg"
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe.jpg")
        return tmp_path / "pipe.jpg"
    if kind == "dev-zero":
        (tmp_path / "zero.jpg").symlink_to("/dev/zero")
        return tmp_path / "zero.jpg"
    if kind == "symlink-loop":
        (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
        return tmp_path / "loop.jpg"
    if kind == "huge":
        (tmp_path / "huge.png").write_bytes(png_header(13000, 13000))
        return tmp_path / "huge.png"
    jpeg = next((data_root / "lfw" / "deepfunneled" / "Aaron_Eckhart").glob("*.jpg")).read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    return tmp_path / "truncated.jpg"


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "text", "truncated", "fifo", "dev-zero",
                                  "symlink-loop", "huge"])
@pytest.mark.parametrize("side", [0, 1])
def test_verify_bad_image_is_a_one_line_error_naming_the_file(kind: str, side: int, tiny: TinyRun,
                                                               tmp_path: Path, data_root: Path,
                                                               faces: tuple[str, str, str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = _bad_image(kind, tmp_path, data_root)
    images = [str(bad), faces[0]] if side == 0 else [faces[0], str(bad)]
    rc, out, err = call(capsys, "verify", *images, "--model", str(tiny.path))
    assert rc != 0
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("siamface: error:") and str(bad) in err


def test_verify_missing_model_folder(tmp_path: Path, faces: tuple[str, str, str],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = call(capsys, "verify", faces[0], faces[1], "--model", str(tmp_path / "no_model"))
    assert rc != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(tmp_path / "no_model") in err


def test_verify_corrupt_weights(tiny: TinyRun, tmp_path: Path, faces: tuple[str, str, str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(tiny.path, tmp_path / "run")
    weights = run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    rc, out, err = call(capsys, "verify", faces[0], faces[1], "--model", str(run))
    assert rc != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(weights) in err


def test_train_on_a_missing_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = call(capsys, "train", "--data", str(tmp_path / "nothing"), "--model", "tiny", "--no-progress",
                        "--out", str(tmp_path / "run"))
    assert rc != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(tmp_path / "nothing") in err


# ---- thresholds ----------------------------------------------------------------------------------------------

def test_threshold_flag_overrides_the_calibrated_one(tiny: TinyRun, faces: tuple[str, str, str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    a, _, b = faces
    rc, out, _ = call(capsys, "verify", a, b, "--model", str(tiny.path))
    assert rc == 0
    calibrated = json.loads(out)
    cal = read_meta(tiny.path)["calibration"]
    assert calibrated["threshold"] == cal["threshold"] and calibrated["threshold_source"] == cal["source"]
    p = calibrated["probability"]
    assert 0.0 < p < 1.0

    rc, out, _ = call(capsys, "verify", a, b, "--model", str(tiny.path), "--threshold", "0.0")
    low = json.loads(out)
    assert rc == 0 and low["same"] is True and low["threshold"] == 0.0
    assert "given explicitly" in low["threshold_source"]
    assert low["probability"] == p  # the threshold changes the decision, never the score

    rc, out, _ = call(capsys, "verify", a, b, "--model", str(tiny.path), "--threshold", "1.0")
    high = json.loads(out)
    assert rc == 0 and high["same"] is False and high["threshold"] == 1.0
    assert "given explicitly" in high["threshold_source"]


# ---- flags map one-to-one onto config fields -------------------------------------------------------------------

def _subparser(name: str) -> argparse.ArgumentParser:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _flag_name(cls: type, field: str) -> str:
    return "--" + RENAME.get((cls.__name__, field), field).replace("_", "-")


def test_every_config_field_has_exactly_one_train_flag() -> None:
    actions = {a.dest: a for a in _subparser("train")._actions}
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            dest = f"{cls.__name__}.{f.name}"
            if (cls.__name__, f.name) in SKIP:
                assert dest not in actions
                continue
            assert dest in actions, f"no flag for {dest}"
            assert _flag_name(cls, f.name) in actions[dest].option_strings
    config_dests = {d for d in actions if d.split(".")[0] in {c.__name__ for c in CONFIGS}}
    fields = {f"{c.__name__}.{f.name}" for c in CONFIGS for f in dataclasses.fields(c)}
    assert config_dests <= fields  # and no flag for a field that does not exist


def test_train_help_lists_every_train_config_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert _flag_name(TrainConfig, f.name) in text, f.name


_SPECIAL: dict[tuple[str, str], Any] = {
    ("TrainConfig", "regime"): "koch", ("TrainConfig", "select"): "auc", ("PreprocessConfig", "channels"): 3,
    ("TrainConfig", "pairing"): "all", ("TrainConfig", "device"): "cuda:1",
}


def _new_value(cls: type, f: dataclasses.Field, hint: Any) -> tuple[list[str], Any]:
    """Command-line tokens that set field `f` to a non-default value, and that value."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    flag = _flag_name(cls, f.name)
    if (cls.__name__, f.name) == ("TrainConfig", "distortions_per_pair"):  # only valid with fixed pairs
        return [flag, "8", "--fixed-pairs"], 8
    if (cls.__name__, f.name) == ("TrainConfig", "class_rotations"):  # only valid with all-pairs batches
        return [flag, "--pairing", "all"], True
    if (cls.__name__, f.name) == ("TrainConfig", "id_loss"):  # only valid with all-pairs batches
        return [flag, "0.375", "--pairing", "all"], 0.375
    if (cls.__name__, f.name) in _SPECIAL:
        value = _SPECIAL[(cls.__name__, f.name)]
        return [flag, str(value)], value
    if hint is bool:
        return ([f"--no-{flag[2:]}"] if default else [flag]), not default
    if hint is int:
        return [flag, str(default + 1)], default + 1
    if hint is float:
        value = default / 2 + 0.125
        return [flag, repr(value)], value
    if hint is str:
        return [flag, "some/value"], "some/value"
    elem = typing.get_args(hint)[0]
    values = (0.25, 0.5) if elem is float else (elem(2), elem(3))  # per-layer momenta must stay below 1
    return [flag, *map(str, values)], values


def _field_cases() -> list[Any]:
    cases = []
    for cls in (DataConfig, TrainConfig, PreprocessConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if (cls.__name__, f.name) in SKIP:
                continue
            hint = hints[f.name]
            cases.append(pytest.param(cls, f, hint, id=f"{cls.__name__}.{f.name}"))
    return cases


@pytest.mark.parametrize("cls,f,hint", _field_cases())
def test_each_flag_sets_its_field_with_the_right_type(cls: type, f: dataclasses.Field, hint: Any) -> None:
    tokens, value = _new_value(cls, f, hint)
    args = _subparser("train").parse_args(["--out", "x", *tokens])
    base = default_preprocess("tiny") if cls is PreprocessConfig else None
    cfg = config_from_args(cls, args, base)
    got = getattr(cfg, f.name)
    assert got == value
    elems = got if isinstance(got, tuple) else (got,)
    expected = value if isinstance(value, tuple) else (value,)
    assert [type(x) for x in elems] == [type(x) for x in expected]
    moved = {f.name, {"distortions_per_pair": "fixed_pairs", "class_rotations": "pairing",
                       "id_loss": "pairing"}.get(f.name, f.name)}
    others = {g.name for g in dataclasses.fields(cls)} - moved  # nothing else moved
    ref = base if base is not None else cls()
    assert all(getattr(cfg, n) == getattr(ref, n) for n in others)
