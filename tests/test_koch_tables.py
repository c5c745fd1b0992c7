"""The Table 1 configs of configs/koch2015 parse, follow the paper's protocol, and train; the tables command runs.

Omniglot is shrunk to a copy of a few alphabets (two background, the smallest validation alphabet, one
official-run alphabet and run01), and koch2015 to two steps of 8 pairs, so all of this takes seconds.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _helpers import one_thread

import siamface.optim as optim
from siamface.config import RunConfig
from siamface.data import OMNIGLOT_RUN_ALPHABETS, OMNIGLOT_VAL_ALPHABETS
from siamface.data.prepare import Prepared, prepare_data
from siamface.models import create_model
from siamface.optim import make_optimizer, set_epoch_hparams
from siamface.preprocess import load_input
from siamface.step import Step, make_step
from siamface.training import train_epoch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import koch_tables as kt  # noqa: E402

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
NAMES = ["30k", "30k-x8", "90k", "90k-x8", "150k", "150k-x8"]
SUBSET = {"images_background": ("Alphabet_of_the_Magi", "Tagalog"), "images_evaluation": ("Angelic", "Tengwar")}


@pytest.fixture(scope="module")
def omniglot_subset(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose omniglot/ holds copies of a few alphabets and the first official run."""
    root = tmp_path_factory.mktemp("data")
    for part, alphabets in SUBSET.items():
        for a in alphabets:
            shutil.copytree(data_root / "omniglot" / part / a, root / "omniglot" / part / a)
    shutil.copytree(data_root / "omniglot" / "all_runs" / "run01", root / "omniglot" / "all_runs" / "run01")
    return root


@pytest.fixture(scope="module")
def prepared(omniglot_subset: Path) -> Prepared:
    run = kt.load_run("30k", omniglot_subset)
    return prepare_data(run.data, run.preprocess, run.train.seed, load_input, progress=False)


def test_the_configs_are_table_1(omniglot_subset: Path) -> None:
    assert kt.config_names() == NAMES
    cells = set()
    for name in NAMES:
        raw = json.loads((kt.CONFIGS / f"{name}.json").read_text())
        run = kt.load_run(name, omniglot_subset)
        assert RunConfig.from_dict(json.loads(json.dumps(run.to_dict()))) == run
        t, d = run.train, run.data
        cells.add((t.pairs_per_epoch, t.distortions_per_pair))
        assert raw["data"]["root"] == "omniglot/images_background"  # relative to the data root ...
        assert d.root == str(omniglot_subset / "omniglot" / "images_background")  # ... resolved against it
        assert d.val_root == str(omniglot_subset / "omniglot" / "images_evaluation")
        assert d.val_groups == OMNIGLOT_VAL_ALPHABETS and not set(d.val_groups) & set(OMNIGLOT_RUN_ALPHABETS)
        assert d.train_drawers == tuple(range(1, 13)) and len(d.val_drawers) == 4
        assert not set(d.train_drawers) & set(d.val_drawers) and not set(kt.TEST_DRAWERS) & (
            set(d.train_drawers) | set(d.val_drawers)) and d.within_group
        assert run.model.name == "koch2015" and run.preprocess.size == 105
        assert (t.regime, t.batch_size, t.fixed_pairs, t.select, t.val_way, t.val_tasks) == (
            "koch", 128, True, "oneshot", 20, 320)
        assert (t.lr_decay, t.momentum_start, t.patience, t.distortions) == (0.99, 0.5, 20, False)
        assert 1 <= t.epochs <= 200 and t.device == "cpu"
        assert all(1e-4 <= v <= 1e-1 for v in t.layer_lr) and all(0 <= v <= 1 for v in t.layer_momentum)
        assert all(0 <= v <= 0.1 for v in t.layer_l2)
        assert kt.sizing(run)["max_pair_presentations"] <= 6_750_000
    assert cells == {(n, k) for n in (30_000, 90_000, 150_000) for k in (0, 8)}
    assert len(optim._layers(create_model("koch2015"))) == len(run.train.layer_lr) == 6


def test_sizing_counts_the_flops_of_the_paper_network() -> None:
    assert kt.train_flops_per_pair() == pytest.approx(2 * 2 * 3 * 908_623_872 + 6 * 4096)
    est = kt.sizing(kt.load_run("150k-x8"))
    assert est["max_pair_presentations"] == 150_000 * 9 * 5 and 5 <= est["estimated_h200_train_minutes"] <= 10


@pytest.mark.parametrize("name", NAMES)
def test_every_config_trains_two_steps(name: str, omniglot_subset: Path, prepared: Prepared,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    run = kt.shrink(kt.load_run(name, omniglot_subset), max_epochs=1, max_steps=2, batch_size=8, val_tasks=10,
                    val_pairs=40, progress=False)
    assert run.data == kt.load_run("30k", omniglot_subset).data  # one prepared dataset serves every config
    assert kt.steps_per_epoch(run) == 2 and run.train.epochs == 1
    torch.manual_seed(0)
    model = create_model("koch2015", preprocess=run.preprocess).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, run.train)
    set_epoch_hparams(opt, run.train, 0)
    before = model.tower.fc.weight.detach().clone()
    sizes: list[int] = []
    real = Step.pair_loss

    def spy(step: Step, rows: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(rows))
        return real(step, rows, *args, **kwargs)

    monkeypatch.setattr(Step, "pair_loss", spy)
    loss = train_epoch(make_step(run, model, prepared), opt, 0)
    assert len(sizes) == 2 and sum(sizes) == run.train.pairs_per_epoch * (1 + run.train.distortions_per_pair)
    assert np.isfinite(loss) and not torch.equal(before, model.tower.fc.weight)


def test_tables_command_end_to_end(omniglot_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    result = kt.main(["--smoke", "--configs", "150k-x8", "--data", str(omniglot_subset), "--out",
                      str(tmp_path / "runs"), "--no-progress", "--name", "tables"])
    saved = json.loads((tmp_path / "results" / "tables.json").read_text())
    md = (tmp_path / "results" / "tables.md").read_text()
    assert saved["smoke"] and saved["runs"][0]["config"] == "150k-x8" and saved["runs"][0]["epochs_run"] == 1
    test = result["runs"][0]["test"]
    assert test["n_pairs"] == 200 and test["n_same"] == 100 and test["identities"] == 25  # Tengwar, drawers 17-20
    assert 0.0 <= test["accuracy"] <= 1.0 and "validation" in test["threshold_source"]
    assert result["table2"]["n_tasks"] == 20 and result["table2"]["embeddings"] == 40
    for paper in ("90.61", "91.90", "91.54", "93.15", "91.63", "93.42", "92.0"):
        assert paper in md
    assert "| 150k training: affine distortions x8 | 93.42 | " in md and "Smoke run" in md
