"""Evaluation says what it did: a one-shot way above the split's identities is a warning and a report field
(not a quiet 2-way), and the report counts the distinct pairs among the sampled ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import TinyRun, one_thread, tiny_run

from siamface.evaluate import run_evaluation

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> TinyRun:
    return tiny_run(tmp_path_factory, data_root)


def test_a_way_above_the_identities_and_repeated_pairs_are_reported(tiny: TinyRun, tmp_path: Path) -> None:
    with pytest.warns(UserWarning) as caught:
        rep = run_evaluation(str(tiny.path), split="test", out=str(tmp_path / "e"), way=20, tasks=20, n_pairs=4000)
    texts = [str(w.message) for w in caught]
    assert any(t.startswith("20-way one-shot needs 20 identities, the split has 10: the tasks are 10-way")
               for t in texts), texts
    assert rep["oneshot_way"] == 10 and rep["oneshot_way_requested"] == 20
    assert rep["n_pairs"] == 4000 and 0 < rep["distinct_pairs"] < 4000  # 100 images: same pairs repeat
    assert any(f"hold only {rep['distinct_pairs']} distinct pairs" in t for t in texts), texts


def test_enough_identities_and_pairs_warn_of_nothing(tiny: TinyRun, tmp_path: Path, recwarn: pytest.WarningsRecorder
                                                     ) -> None:
    rep = run_evaluation(str(tiny.path), split="test", out=str(tmp_path / "e"), way=5, tasks=20, n_pairs=100)
    assert "oneshot_way_requested" not in rep and rep["distinct_pairs"] >= 90
    assert not [w for w in recwarn if "one-shot" in str(w.message) or "distinct" in str(w.message)]
