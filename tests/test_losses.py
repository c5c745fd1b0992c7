"""The all-pairs loss and its class-balanced batches against brute-force loops, and the CosFace identity loss
against its formula in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from siamface.config import TrainConfig
from siamface.data.batches import ClassBatches
from siamface.losses import CosineClassifier, all_pairs_bce, cosface, pair_bce
from siamface.models import create_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tiny").eval()


def _brute(model, emb, labels, groups=None):
    pos, neg = [], []
    for i in range(len(emb)):
        for j in range(i + 1, len(emb)):
            same = bool(labels[i] == labels[j])
            if not same and groups is not None and groups[i] != groups[j]:
                continue
            logit = model.score(emb[i:i + 1], emb[j:j + 1])
            (pos if same else neg).append(F.binary_cross_entropy_with_logits(logit, torch.tensor([float(same)])))
    return 0.5 * torch.stack(pos).mean() + 0.5 * torch.stack(neg).mean()


def test_all_pairs_bce_is_the_balanced_mean_over_every_pair(model):
    torch.manual_seed(1)
    emb = torch.rand(12, model.embed_dim)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4])
    got = all_pairs_bce(model, emb, labels)
    assert torch.allclose(got, _brute(model, emb, labels), atol=1e-6)


def test_within_group_drops_negatives_across_groups(model):
    torch.manual_seed(2)
    emb = torch.rand(10, model.embed_dim)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    got = all_pairs_bce(model, emb, labels, groups)
    assert torch.allclose(got, _brute(model, emb, labels, groups), atol=1e-6)
    assert not torch.allclose(got, all_pairs_bce(model, emb, labels), atol=1e-6)


def test_pair_bce_smoothing_moves_targets_towards_one_half():
    logits = torch.tensor([0.0, 0.0])
    same = torch.tensor([1, 0])
    assert pair_bce(logits, same, 0.2).item() == pytest.approx(np.log(2))  # sigmoid(0) = 0.5: loss ln 2 either way
    assert pair_bce(torch.tensor([5.0]), torch.tensor([1]), 0.2) > pair_bce(torch.tensor([5.0]), torch.tensor([1]))


def test_class_batches_hold_k_identities_with_m_images_each():
    labels = np.repeat(np.arange(40), 10)
    labels = np.concatenate([labels, [99]])  # an identity with one image is never drawn
    sampler = ClassBatches(labels, classes=8, per_class=4)
    batch = sampler(np.random.default_rng(0))
    ids, counts = np.unique(labels[batch], return_counts=True)
    assert len(ids) == 8 and (counts == 4).all() and 99 not in ids
    assert len(set(batch.tolist())) == len(batch)
    assert np.array_equal(batch, sampler(np.random.default_rng(0)))


def test_class_batches_within_group_stay_in_one_group():
    labels = np.repeat(np.arange(30), 5)
    groups = labels // 10  # three groups of ten identities
    sampler = ClassBatches(labels, classes=6, per_class=3, groups=groups, within_group=True)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(30):
        g = np.unique(groups[sampler(rng)])
        assert len(g) == 1
        seen.add(int(g[0]))
    assert seen == {0, 1, 2}


def test_class_batches_need_two_identities_with_pairs():
    with pytest.raises(ValueError, match="two identities"):
        ClassBatches(np.array([0, 1, 2]), classes=4, per_class=2)


def test_rotate_classes_turns_each_class_as_a_whole():
    from siamface.training import rotate_classes

    x = torch.rand(12, 1, 8, 8)
    labels = np.repeat(np.arange(4), 3)
    out = rotate_classes(x, labels, torch.Generator().manual_seed(0))
    turns = []
    for k in range(12):
        match = [r for r in range(4) if torch.equal(out[k], torch.rot90(x[k], r, dims=(1, 2)))]
        assert len(match) == 1
        turns.append(match[0])
    turns = np.array(turns).reshape(4, 3)
    assert (turns == turns[:, :1]).all()  # one turn per class
    assert len(set(turns[:, 0].tolist())) > 1  # not all classes turned alike (seeded)


def test_cosface_matches_its_formula_in_numpy():
    torch.manual_seed(3)
    emb, labels = torch.rand(9, 16), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3])
    clf = CosineClassifier(5, 16)
    got = cosface(emb, labels, clf, margin=0.35, scale=16.0).item()
    z = 2 * emb.numpy().astype(np.float64) - 1
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    w = clf.weight.detach().numpy().astype(np.float64)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    logits = 16.0 * (z @ w.T - 0.35 * np.eye(5)[labels.numpy()])
    logits -= logits.max(1, keepdims=True)
    nll = -(logits[np.arange(9), labels.numpy()] - np.log(np.exp(logits).sum(1)))
    assert got == pytest.approx(nll.mean(), rel=1e-5)


def test_cosface_margin_makes_the_loss_larger_and_gradients_reach_the_prototypes():
    torch.manual_seed(4)
    emb, labels = torch.rand(6, 8, requires_grad=True), torch.tensor([0, 1, 2, 0, 1, 2])
    clf = CosineClassifier(3, 8)
    with_margin = cosface(emb, labels, clf, margin=0.35, scale=16.0)
    assert with_margin.item() > cosface(emb, labels, clf, margin=0.0, scale=16.0).item()
    with_margin.backward()
    assert clf.weight.grad is not None and clf.weight.grad.abs().sum() > 0 and emb.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [dict(id_loss=-1.0), dict(id_loss=1.0, id_scale=0.0), dict(id_loss=float("nan")),
                                 dict(id_loss=float("inf")), dict(id_scale=float("nan")),
                                 dict(id_loss=1.0, id_margin=1.0), dict(id_loss=1.0),
                                 dict(id_loss=1.0, pairing="all", regime="koch"),
                                 dict(id_loss=1.0, pairing="all", class_rotations=True)])
def test_identity_loss_settings_are_validated(bad):
    with pytest.raises(ValueError, match="id_"):
        TrainConfig(**bad)
