"""The command line around run folders and model cards: locks, --out checks, --config, --far, warnings,
non-finite outputs and OS errors (issue 11's hostile review, each fault a regression test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _helpers import TinyRun, att_dir, copy_run, one_thread, read_meta, tiny_run, write_meta
from safetensors.torch import load_file, save_file

from siamface.cli import build_parser, main, run_config_from_args
from siamface.files import sha256_file
from siamface.training import below_chance

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
tiny = pytest.fixture(scope="module")(tiny_run)


def _call(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _train_args(data_root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(att_dir(data_root)), "--model", "tiny", "--n-val", "5", "--n-test", "10",
            "--val-way", "5", "--val-tasks", "20", "--val-pairs", "100", "--batch-size", "64", "--no-bf16",
            "--no-progress", "--out", str(out), *extra]


def test_a_second_training_run_into_the_same_folder_fails_at_once_naming_the_holder(
        data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "siamface", *_train_args(
        data_root, out, "--epochs", "50", "--pairs-per-epoch", "2000")], env=ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not ((out / ".lock").exists() and (out / ".lock").read_text()) and time.time() < deadline:
            time.sleep(0.1)
        assert (out / ".lock").read_text().startswith(f"pid {first.pid}")
        t0 = time.time()
        second = subprocess.run([sys.executable, "-m", "siamface", *_train_args(data_root, out, "--epochs", "1")],
                                env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and time.time() - t0 < 60
        assert f"another training run holds this folder (pid {first.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_out_that_is_a_file_is_refused_before_any_data_is_read(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    rc, _, err = _call(capsys, "train", "--data", str(tmp_path / "no-such-data"), "--model", "tiny",
                       "--out", str(tmp_path / "afile"))
    assert rc == 2 and "afile: exists and is not a folder" in err and "no-such-data" not in err


def test_an_os_error_is_one_line_naming_the_path(tiny: TinyRun, data_root: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    att = att_dir(data_root)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image_a,image_b,label\n{att / 's1/1.pgm'},{att / 's1/2.pgm'},1\n")
    (tmp_path / "afile").write_text("x")
    rc, _, err = _call(capsys, "verify", "--model", str(tiny.path), "--no-detect", "--pairs", str(pairs),
                       "--out", str(tmp_path / "afile" / "scores.csv"))
    assert rc == 1 and err.startswith(f"siamface: error: {tmp_path / 'afile'}") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and ("File exists" in err or "Not a directory" in err)


def test_train_config_file_with_flags_on_top(data_root: Path, tmp_path: Path, tiny: TinyRun,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    meta = read_meta(tiny.path)
    config = {"about": "the tiny AT&T run", **{k: meta[k] for k in ("model", "preprocess", "data", "train")}}
    config["data"]["root"] = "att_faces"  # relative: under the data root
    (tmp_path / "run.json").write_text(json.dumps(config))
    monkeypatch.setenv("SIAMFACE_DATA", str(data_root))
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "run.json"), "--epochs", "7",
                                      "--out", str(tmp_path / "out")])
    run = run_config_from_args(args)
    assert run.data.root == str(att_dir(data_root).resolve())
    assert run.train.epochs == 7 and run.train.pairs_per_epoch == meta["train"]["pairs_per_epoch"]
    assert run.model.name == "tiny" and run.data.n_val == meta["data"]["n_val"]


def test_verify_far_chooses_the_operating_point_and_names_it(tiny: TinyRun, data_root: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    a, b = str(att_dir(data_root) / "s1/1.pgm"), str(att_dir(data_root) / "s1/2.pgm")
    rc, out, _ = _call(capsys, "verify", a, b, "--model", str(tiny.path), "--no-detect")
    eer = json.loads(out)
    rc, out, err = _call(capsys, "verify", a, b, "--model", str(tiny.path), "--no-detect", "--far", "1e-2")
    strict = json.loads(out)
    assert rc == 0 and eer["operating_point"] == "EER" and strict["operating_point"] == "FAR=1e-02"
    assert strict["threshold"] >= eer["threshold"] and "FAR <= 0.01" in strict["threshold_source"]
    rc, _, err = _call(capsys, "verify", a, b, "--model", str(tiny.path), "--no-detect", "--far", "1e-4")
    assert rc == 2 and "no operating point FAR=1e-04" in err and "available: EER, FAR=1e-02" in err


def test_weights_that_give_nan_are_an_error_never_a_nan_in_json(tiny: TinyRun, data_root: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(tiny.path, tmp_path / "run")
    tensors = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
               for k, v in load_file(run / "model.safetensors").items()}
    save_file(tensors, run / "model.safetensors")
    meta = read_meta(run)
    meta["weights_sha256"] = sha256_file(run / "model.safetensors")  # a tamperer who also fixes the hash
    write_meta(run, meta)
    a, b = str(att_dir(data_root) / "s1/1.pgm"), str(att_dir(data_root) / "s1/2.pgm")
    rc, out, err = _call(capsys, "verify", a, b, "--model", str(run), "--no-detect")
    assert rc == 2 and "NaN" not in out and "non-finite probability" in err


def test_evaluating_a_model_still_training_warns(tiny: TinyRun, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(tiny.path, tmp_path / "run")
    meta = read_meta(run)
    meta["status"] = "training"
    write_meta(run, meta)
    rc, out, err = _call(capsys, "evaluate", "--model", str(run), "--way", "5", "--tasks", "20", "--n-pairs", "100")
    assert rc == 0 and "siamface: warning:" in err and "status 'training'" in err
    assert "training has not finished" in json.loads(out)["warning"]


def test_below_chance_validation_is_named() -> None:
    assert below_chance({"auc": 0.30}) == "validation AUC 0.300 is at or below chance (0.5)"
    assert "one-shot accuracy 0.025 is at or below chance (0.200)" in below_chance(
        {"auc": 0.6, "oneshot_accuracy": 0.025, "oneshot_way": 5})
    assert below_chance({"auc": 0.9, "oneshot_accuracy": 0.5, "oneshot_way": 5}) == ""
