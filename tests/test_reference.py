"""The plain reference mode computes siamface's loss; the paper's fixed x9 distorted training set.

Embedding caching in evaluation (cached one-shot answers equal pairwise model.forward scoring on official
runs tasks) is covered by tests/test_evaluate.py and not repeated here.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _helpers import att_run, one_thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference import reference_pair_loss, reference_step  # noqa: E402  (benchmarks/reference.py)

from siamface.augment import AffineParams
from siamface.config import TrainConfig
from siamface.models import SiameseNet, create_model, default_preprocess
from siamface.optim import make_optimizer
from siamface.step import Step
from siamface.training import FixedDistortions, fixed_distortions, train

_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)

# Pairs share images (0 twice, 5 with itself), as fixed training pairs do: the default mode embeds 6 images.
ROWS = np.array([[0, 1, 1], [2, 3, 0], [0, 4, 0], [5, 5, 1]], dtype=np.int64)


def _images(size: int, n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)


def _model(name: str) -> SiameseNet:
    """koch2015 in training mode; tiny in eval mode (its batch norm would otherwise normalise each tower call
    of the reference with that side's own batch statistics, by design a different computation)."""
    torch.manual_seed(0)
    model = create_model(name, preprocess=default_preprocess(name, invert=True))
    return model.train() if name == "koch2015" else model.eval()


@pytest.mark.parametrize("name", ["tiny", "koch2015"])
def test_reference_and_default_modes_compute_the_same_loss(name: str) -> None:
    pre = default_preprocess(name, invert=True)
    images, model = _images(pre.size), _model(name)
    cfg = TrainConfig(distortions=False)
    assert cfg.bf16 and cfg.channels_last  # the default mode
    ref = reference_pair_loss(copy.deepcopy(model), images, ROWS, pre, cfg, None)
    fast = model.to(memory_format=torch.channels_last)
    default = Step(fast, images, pre, cfg).pair_loss(ROWS, None)
    fp32 = Step(fast, images, pre, replace(cfg, bf16=False)).pair_loss(ROWS, None)
    assert torch.isfinite(ref) and ref.dtype == default.dtype == torch.float32
    assert default.item() == pytest.approx(ref.item(), rel=2e-2)  # bf16 autocast
    assert fp32.item() == pytest.approx(ref.item(), rel=1e-5)  # unique-image embedding changes nothing


def test_reference_gradients_match_the_default_fp32_step() -> None:
    pre = default_preprocess("tiny")
    images, model = _images(pre.size), _model("tiny")
    other = copy.deepcopy(model).to(memory_format=torch.channels_last)
    cfg = TrainConfig(distortions=False, bf16=False)
    reference_pair_loss(model, images, ROWS, pre, cfg, None).backward()
    Step(other, images, pre, cfg).pair_loss(ROWS, None).backward()
    for (k, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=k)


def test_reference_step_distorts_each_image_and_learns() -> None:
    pre = default_preprocess("tiny")
    images, model = _images(pre.size), _model("tiny").train()
    cfg = TrainConfig(regime="koch", lr=0.05)
    opt = make_optimizer(model, cfg)
    before = copy.deepcopy(model.state_dict())
    losses = [reference_step(model, opt, images, ROWS, pre, cfg, torch.Generator().manual_seed(k)) for k in range(2)]
    assert all(np.isfinite(losses))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    a = reference_pair_loss(model.eval(), images, ROWS, pre, cfg, torch.Generator().manual_seed(0))
    b = reference_pair_loss(model, images, ROWS, pre, cfg, torch.Generator().manual_seed(0))
    c = reference_pair_loss(model, images, ROWS, pre, cfg, torch.Generator().manual_seed(1))
    assert a.item() == b.item() != c.item()  # seeded per-image distortions


# ---- the fixed x(1 + k) distorted training set ----------------------------------------------------------

def test_fixed_distortions_tile_the_pairs_with_transforms_drawn_once() -> None:
    pairs = np.array([[0, 1, 1], [2, 3, 0], [4, 5, 0]], dtype=np.int64)
    cfg = TrainConfig(fixed_pairs=True, distortions_per_pair=8, seed=3)
    pre = default_preprocess("tiny")
    fixed = fixed_distortions(pairs, cfg, pre)
    assert fixed.rows.shape == (27, 4)
    assert np.array_equal(fixed.rows[:, :3], np.tile(pairs, (9, 1)))
    assert np.array_equal(fixed.rows[:, 3], np.arange(27))
    assert bool(fixed.first.is_identity()[:3].all()) and bool(fixed.second.is_identity()[:3].all())
    assert not bool(fixed.first.is_identity()[3:].all())
    assert not torch.equal(fixed.first.theta[3:], fixed.second.theta[3:])  # T1 and T2 independent
    again = fixed_distortions(pairs, cfg, pre)
    for f in AffineParams.__dataclass_fields__:
        assert torch.equal(getattr(fixed.first, f), getattr(again.first, f)), f
    other = fixed_distortions(pairs, replace(cfg, seed=4), pre)
    assert not torch.equal(fixed.first.theta, other.first.theta)
    with pytest.raises(ValueError, match="fixed_pairs"):
        fixed_distortions(pairs, replace(cfg, fixed_pairs=False), pre)
    with pytest.raises(ValueError, match="flip"):
        fixed_distortions(pairs, replace(cfg, flip=True), pre)


def test_training_reuses_the_same_distorted_pairs_every_epoch(data_root: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    n, k, batch = 16, 8, 16
    run = att_run(data_root, epochs=2, pairs_per_epoch=n, batch_size=batch, fixed_pairs=True,
                  distortions_per_pair=k, val_tasks=10, val_pairs=60)
    seen: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]] = []  # (rows, inputs, warped) per step
    import siamface.augment as aug

    real_loss, real_affine = Step.pair_loss, aug.apply_affine

    def loss_spy(step: Step, rows: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        assert isinstance(step.fixed, FixedDistortions)
        seen.append((rows.copy(), step.images, torch.empty(0)))
        return real_loss(step, rows, *args, **kwargs)

    def affine_spy(x: torch.Tensor, params: AffineParams, *args: Any) -> torch.Tensor:
        out = real_affine(x, params, *args)
        rows, images, _ = seen[-1]
        seen[-1] = (rows, images, out)
        return out

    monkeypatch.setattr(Step, "pair_loss", loss_spy)
    monkeypatch.setattr(aug, "apply_affine", affine_spy)  # FixedDistortions.apply warps through it
    train(run, tmp_path / "run")
    steps = -(-n * (1 + k) // batch)
    assert len(seen) == 2 * steps
    epochs = [_warped_by_row(seen[:steps]), _warped_by_row(seen[steps:])]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(n * (1 + k)))  # each row once per epoch
    order = [np.concatenate([r[:, 3] for r, _, _ in seen[e * steps:(e + 1) * steps]]) for e in (0, 1)]
    assert not np.array_equal(order[0], order[1])  # reshuffled
    for r, (ia, ib, wa, wb) in epochs[0].items():
        assert (ia, ib) == epochs[1][r][:2]
        assert torch.equal(wa, epochs[1][r][2]) and torch.equal(wb, epochs[1][r][3])  # identical transforms
    images = seen[0][1].float() / 255.0
    for r in range(n):  # the undistorted copy
        ia, ib, wa, wb = epochs[0][r]
        assert torch.equal(wa, images[ia]) and torch.equal(wb, images[ib])
    distorted = sum(not torch.equal(w, images[i]) for r, (i, _, w, _) in epochs[0].items() if r >= n)
    assert distorted > 0.8 * n * k


def _warped_by_row(steps: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]]) -> dict[int, tuple[Any, ...]]:
    """Row id -> (image i, image j, warped i, warped j) over the steps of one epoch."""
    out: dict[int, tuple[Any, ...]] = {}
    for rows, _, warped in steps:
        b = len(rows)
        for s, (i, j, _, r) in enumerate(rows):
            out[int(r)] = (int(i), int(j), warped[s], warped[b + s])
    return out
