"""Config dataclasses validate every number up front, naming the field and its flag (issue 11, fault 8)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from siamface.cli import main
from siamface.config import DataConfig, PreprocessConfig, TrainConfig, from_dict

CONFIGS = {"preprocess": PreprocessConfig, "data": DataConfig, "train": TrainConfig}


def _numeric_fields() -> list[tuple[str, type, dataclasses.Field]]:
    return [(section, cls, f) for section, cls in CONFIGS.items() for f in dataclasses.fields(cls)
            if str(f.type) in ("int", "float", "tuple[int, ...]", "tuple[float, ...]")]


NUMERIC = _numeric_fields()


def test_the_numeric_fields_are_found() -> None:
    names = {f"{s}.{f.name}" for s, _, f in NUMERIC}
    assert {"train.lr", "train.weight_decay", "train.epochs", "train.layer_lr", "preprocess.std", "data.n_val"} <= names


@pytest.mark.parametrize("section,cls,f", NUMERIC, ids=[f"{s}.{f.name}" for s, _, f in NUMERIC])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "abc", True, None])
def test_every_number_must_be_finite_and_of_its_type(section: str, cls: type, f: dataclasses.Field,
                                                     bad: object) -> None:
    value = (1.0, bad) if str(f.type).startswith("tuple") else bad
    flag = "--" + f.name.replace("_", "-")
    with pytest.raises(ValueError, match=rf"^{section}\.{f.name} \({flag}\) must be "):
        cls(**{f.name: value})


@pytest.mark.parametrize("section,cls,f", [c for c in NUMERIC if c[2].type == "int"],
                         ids=[f"{s}.{f.name}" for s, _, f in NUMERIC if f.type == "int"])
def test_int_fields_refuse_fractions(section: str, cls: type, f: dataclasses.Field) -> None:
    with pytest.raises(ValueError, match=rf"^{section}\.{f.name} .* must be an integer, got 2\.5"):
        cls(**{f.name: 2.5})


@pytest.mark.parametrize("field,value", [("lr", 0.0), ("lr", -1e-3), ("weight_decay", -1.0), ("momentum_end", 1.0),
                                         ("lr_decay", 1.5), ("lr_decay", 0.0), ("layer_lr", (0.1, 0.0)),
                                         ("layer_momentum", (0.5, 1.2)), ("warmup_epochs", -1.0), ("patience", 0),
                                         ("val_tasks", 0), ("val_pairs", 1), ("seed", -1), ("max_minutes", -5.0),
                                         ("val_way", 1), ("epochs", 0)])
def test_train_ranges(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^train\.{field} \(--{field.replace('_', '-')}\) must be .*, got "):
        TrainConfig(**{field: value})


def test_pairing_all_needs_two_classes_of_two_images() -> None:
    with pytest.raises(ValueError, match="images_per_class must be >= 2 with pairing='all'"):
        TrainConfig(pairing="all", images_per_class=1)
    TrainConfig(pairing="sampled", images_per_class=1)  # unused there


def test_preprocess_and_data_ranges() -> None:
    for bad in (dict(std=0.0), dict(crop=0.0), dict(crop=1.5), dict(size=4), dict(channels=2)):
        with pytest.raises(ValueError, match=rf"^preprocess\.{next(iter(bad))} "):
            PreprocessConfig(**bad)
    with pytest.raises(ValueError, match=r"^data\.n_val \(--n-val\) must be >= 0, got -1"):
        DataConfig(n_val=-1)


def test_valid_values_pass_and_a_stored_config_still_loads() -> None:
    cfg = TrainConfig(lr=1, weight_decay=0, momentum_end=0.99, layer_lr=(0.01, 1), seed=3)  # ints for floats
    assert from_dict(TrainConfig, dataclasses.asdict(cfg)) == cfg
    with pytest.raises(ValueError, match=r"train\.lr \(--lr\) must be a finite number, got 'fast'"):
        from_dict(TrainConfig, {"lr": "fast"})  # a hand-edited JSON


@pytest.mark.parametrize("flag,value", [("--lr", "inf"), ("--weight-decay", "nan"), ("--std", "inf"),
                                        ("--momentum-end", "1.5")])
def test_cli_refuses_a_bad_number_before_reading_data_naming_the_flag(
        flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--data", str(tmp_path / "no_data_here"), "--model", "tiny", flag, value, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"({flag})" in err and value in err
    assert not out.exists()


def test_align_is_typed_and_reads_the_dicts_files_store() -> None:
    """PreprocessConfig.align is an AlignConfig; the dict a model.json holds (older ones with fewer keys)
    becomes one, and it goes back to the same dict."""
    from dataclasses import asdict

    from siamface.config import AlignConfig, PreprocessConfig, from_dict

    pre = from_dict(PreprocessConfig, {"size": 150, "channels": 3, "align": {"detector": "mmod", "upsample": 1}})
    assert isinstance(pre.align, AlignConfig) and pre.align.upsample == 1 and pre.detects
    assert asdict(pre)["align"] == pre.align.to_dict()
    assert from_dict(PreprocessConfig, asdict(pre)) == pre
    assert not PreprocessConfig().detects and not PreprocessConfig(align={"detector": "none"}).detects
    with pytest.raises(ValueError, match="unknown AlignConfig keys"):
        PreprocessConfig(align={"detecter": "haar"})
    with pytest.raises(ValueError, match="preprocess.align"):
        PreprocessConfig(align="haar")
