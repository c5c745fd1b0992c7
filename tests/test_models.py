"""The model contract over the whole registry (timm-style), and Koch et al. (2015)'s network exactly."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from _helpers import one_thread
from torch import nn

import siamface.models
from siamface.config import PreprocessConfig
from siamface.errors import ModelError
from siamface.models import (
    SiameseNet,
    count_parameters,
    create_model,
    default_preprocess,
    list_models,
    model_spec,
    parameter_count,
    state_dict_mismatch,
)

MODELS = list_models()
# Embeddings agree to 1e-5 across batch layouts; a logit sums D of them with weights (koch2015: 4096 terms of
# std 0.2), so its float32 rounding is ~10x larger.
EMB_TOL = dict(atol=1e-5, rtol=1e-5)
LOGIT_TOL = dict(atol=1e-4, rtol=1e-4)


_one_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _inputs(model: SiameseNet, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, model.in_channels, model.input_size, model.input_size, generator=g)


def _randomise_bn(model: nn.Module) -> None:
    """Non-default running statistics, so eval mode really uses them (seeded)."""
    g = torch.Generator().manual_seed(123)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.fixture(scope="module", params=MODELS)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def model(name: str) -> SiameseNet:
    torch.manual_seed(0)
    net = create_model(name)
    _randomise_bn(net)
    return net.eval()


@pytest.fixture(scope="module")
def koch() -> SiameseNet:
    torch.manual_seed(0)
    return create_model("koch2015")


def test_registry_lists_the_paper_model_and_the_test_model() -> None:
    assert {"koch2015", "tiny"} <= set(MODELS)
    assert MODELS == sorted(MODELS)


def test_create_model_follows_its_default_preprocessing(name: str, model: SiameseNet) -> None:
    assert isinstance(model, SiameseNet)
    assert model.embed_dim > 0
    pre = model_spec(name).preprocess
    assert pre == default_preprocess(name)
    assert (model.in_channels, model.input_size) == (pre.channels, pre.size)
    assert model_spec(name).description


def test_embed_shape_and_finite(model: SiameseNet) -> None:
    with torch.no_grad():
        e = model.embed(_inputs(model, 3, 0))
    assert e.shape == (3, model.embed_dim)
    assert e.dtype == torch.float32
    assert torch.isfinite(e).all()


def test_score_gives_one_logit_per_pair(model: SiameseNet) -> None:
    with torch.no_grad():
        e1, e2 = model.embed(_inputs(model, 3, 0)), model.embed(_inputs(model, 3, 1))
        s = model.score(e1, e2)
    assert s.shape == (3,)
    assert s.dtype == torch.float32
    assert torch.isfinite(s).all()


def test_score_returns_logits_not_probabilities() -> None:
    net = create_model("tiny").eval()
    with torch.no_grad():
        net.head.fc.bias.fill_(-3.0)
        e = net.embed(torch.rand(2, 1, 32, 32))
        # identical embeddings leave only the bias: a probability could never be -3
        torch.testing.assert_close(net.score(e, e), torch.full((2,), -3.0))


def test_forward_equals_score_of_embeddings(model: SiameseNet) -> None:
    x1, x2 = _inputs(model, 3, 0), _inputs(model, 3, 1)
    with torch.no_grad():
        direct = model(x1, x2)
        e1, e2 = model.embed(x1), model.embed(x2)
        composed = model.score(e1, e2)
        both = model.embed(torch.cat([x1, x2]))
    assert direct.shape == (3,)
    torch.testing.assert_close(both, torch.cat([e1, e2]), **EMB_TOL)
    torch.testing.assert_close(direct, composed, **LOGIT_TOL)


def test_score_is_symmetric(model: SiameseNet) -> None:
    with torch.no_grad():
        e1, e2 = model.embed(_inputs(model, 3, 0)), model.embed(_inputs(model, 3, 1))
        torch.testing.assert_close(model.score(e1, e2), model.score(e2, e1), atol=1e-6, rtol=0)
        torch.testing.assert_close(model(_inputs(model, 2, 0), _inputs(model, 2, 1)),
                                   model(_inputs(model, 2, 1), _inputs(model, 2, 0)), **LOGIT_TOL)


def test_batch_of_one_equals_batch_of_n(model: SiameseNet) -> None:
    x, y = _inputs(model, 3, 0), _inputs(model, 3, 1)
    with torch.no_grad():
        batch_e, batch_s = model.embed(x), model(x, y)
        for i in range(3):
            torch.testing.assert_close(model.embed(x[i : i + 1])[0], batch_e[i], **EMB_TOL)
            torch.testing.assert_close(model(x[i : i + 1], y[i : i + 1])[0], batch_s[i], **LOGIT_TOL)


def test_same_image_scores_the_same_in_eval_mode(model: SiameseNet) -> None:
    x = _inputs(model, 2, 0)
    with torch.no_grad():
        s = model(x, x)
        # identical inputs: |e1 - e2| = 0, so the logit is the head's bias alone
        torch.testing.assert_close(s, model.head.fc.bias.expand(2), **LOGIT_TOL)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    net = create_model(name).train()
    x1, x2 = _inputs(net, 4, 0), _inputs(net, 4, 1)
    loss = F.binary_cross_entropy_with_logits(net(x1, x2), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


# ---- Koch et al. (2015) exactly --------------------------------------------------------------------------

def test_koch2015_parameter_count(koch: SiameseNet) -> None:
    assert count_parameters(koch) == 38_951_745


def test_koch2015_layer_shapes(koch: SiameseNet) -> None:
    convs = [m for m in koch.tower.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [
        (64, 1, 10, 10), (128, 64, 7, 7), (128, 128, 4, 4), (256, 128, 4, 4)]
    pools = [m for m in koch.tower.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3  # after the first three convolutions only
    linears = [m for m in koch.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(4096, 9216), (1, 4096)]
    assert koch.embed_dim == 4096
    assert (koch.in_channels, koch.input_size) == (1, 105)


def test_koch2015_forward_batch_two(koch: SiameseNet) -> None:
    x = _inputs(koch, 2, 0)
    with torch.no_grad():
        e = koch.eval().embed(x)
        s = koch(x, x.flip(0))
    assert e.shape == (2, 4096)
    assert ((e >= 0) & (e <= 1)).all()  # sigmoid embedding (the paper's fc4096 + sigmoid)
    assert s.shape == (2,) and torch.isfinite(s).all()


def test_koch2015_initialisation_statistics(koch: SiameseNet) -> None:
    """Section 3.2: conv W ~ N(0, 1e-2^2), every bias ~ N(0.5, 1e-2^2), fully connected W ~ N(0, 0.2^2)."""
    convs = [m for m in koch.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in koch.modules() if isinstance(m, nn.Linear)]
    for c in convs:  # the smallest (64x1x10x10 = 6400 draws) has a std error of ~0.9% on its std
        w = c.weight.detach()
        assert abs(w.mean().item()) < 1e-3
        assert w.std().item() == pytest.approx(0.01, rel=0.06)
    fc_w = linears[0].weight.detach()
    assert abs(fc_w.mean().item()) < 1e-3
    assert fc_w.std().item() == pytest.approx(0.2, rel=0.01)
    biases = torch.cat([m.bias.detach() for m in convs + linears])
    assert biases.numel() == 64 + 128 + 128 + 256 + 4096 + 1
    assert biases.mean().item() == pytest.approx(0.5, abs=1e-3)
    assert biases.std().item() == pytest.approx(0.01, rel=0.1)
    for m in convs + linears:  # each layer's biases on their own, within 5 standard errors
        b = m.bias.detach()
        assert b.mean().item() == pytest.approx(0.5, abs=5 * 0.01 / b.numel() ** 0.5)


def test_koch2015_init_is_not_pytorch_default(koch: SiameseNet) -> None:
    # PyTorch's default Linear init would give std ~ 1/sqrt(3 * 9216) ~ 0.006, far from the paper's 0.2
    torch.manual_seed(1)
    again = create_model("koch2015")
    assert not torch.equal(again.tower.fc.weight, koch.tower.fc.weight)  # drawn, not constant
    assert again.tower.fc.weight.std().item() > 0.1


# ---- registry errors and preprocessing -------------------------------------------------------------------

def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ModelError) as info:
        create_model("resnet9000")
    msg = str(info.value)
    assert "resnet9000" in msg
    for name in MODELS:
        assert name in msg


def test_bad_factory_option_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="tiny"):
        create_model("tiny", no_such_option=3)


def test_default_preprocess() -> None:
    assert default_preprocess("koch2015") == PreprocessConfig(size=105, channels=1)
    tiny = default_preprocess("tiny")
    assert (tiny.size, tiny.channels) == (32, 1)
    assert default_preprocess("tiny", size=48).size == 48
    assert default_preprocess("tiny", size=48).mean == tiny.mean  # other fields kept
    with pytest.raises(ModelError):
        default_preprocess("nope")


def test_rgb_preprocess_builds_an_rgb_model() -> None:
    torch.manual_seed(0)
    net = create_model("tiny", preprocess=PreprocessConfig(size=32, channels=3)).eval()
    assert net.in_channels == 3
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.shape[1] == 3
    with torch.no_grad():
        assert net.embed(torch.rand(2, 3, 32, 32)).shape == (2, net.embed_dim)
        with pytest.raises(RuntimeError):
            net.embed(torch.rand(2, 1, 32, 32))


def test_preprocess_size_changes_the_model_input() -> None:
    torch.manual_seed(0)
    net = create_model("tiny", preprocess=PreprocessConfig(size=48, channels=1)).eval()
    assert net.input_size == 48
    with torch.no_grad():
        assert net.embed(torch.rand(1, 1, 48, 48)).shape == (1, 16)


def test_overrides_win_over_registry_defaults() -> None:
    net = create_model("tiny", embed_dim=8)
    assert net.embed_dim == 8
    assert count_parameters(net) < count_parameters(create_model("tiny"))


# ---- the non-positive L1 head ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "resface64", "koch2015"])
def test_nonpositive_head_keeps_the_paper_formula_with_weights_at_or_below_zero(name: str) -> None:
    torch.manual_seed(0)
    net = create_model(name, head_weights="nonpositive").eval()
    with torch.no_grad():
        net.head.fc.weight.normal_(0.0, 3.0)  # any raw value, positive or negative
    e1, e2 = torch.rand(5, net.embed_dim), torch.rand(5, net.embed_dim)
    a = net.head.effective_weight()
    assert (a <= 0).all()
    expected = ((e1 - e2).abs() * a).sum(1) + net.head.fc.bias
    torch.testing.assert_close(net.score(e1, e2), expected, **LOGIT_TOL)
    torch.testing.assert_close(net.score(e1, e2), net.score(e2, e1))
    further = e2 + torch.sign(e2 - e1) * 0.1  # every unit moves further from e1
    assert (net.score(e1, further) <= net.score(e1, e2) + 1e-6).all()


def test_nonpositive_head_starts_uniform_and_a_bad_choice_is_refused() -> None:
    a = create_model("resface64", head_weights="nonpositive").head.effective_weight()
    torch.testing.assert_close(a, torch.full_like(a, -12.8 / a.shape[1]))
    with pytest.raises(ModelError, match="head_weights"):
        create_model("tiny", head_weights="positive")


# ---- the l2 embedding -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "resface64"])
def test_l2_embedding_is_zero_centred_on_a_fixed_sphere_and_keeps_the_contract(name: str) -> None:
    from siamface.models.small import L2_SPREAD

    torch.manual_seed(0)
    net = create_model(name, embedding="l2").eval()
    _randomise_bn(net)
    x = _inputs(net, 6, seed=1)
    e = net.embed(x)
    torch.testing.assert_close(e.norm(dim=1), torch.full((6,), L2_SPREAD * net.embed_dim ** 0.5), **EMB_TOL)
    assert (e < 0).any()  # not confined to the positive corner like a sigmoid code
    torch.testing.assert_close(net.embed(x[:1]), e[:1], **EMB_TOL)
    torch.testing.assert_close(net(x[:3], x[3:]), net.score(e[:3], e[3:]), **LOGIT_TOL)
    torch.testing.assert_close(net.score(e[:3], e[3:]), net.score(e[3:], e[:3]))
    sigmoid = create_model(name)
    assert count_parameters(net) == count_parameters(sigmoid)  # a different output map, no new weights


def test_unknown_embedding_is_refused() -> None:
    with pytest.raises(ModelError, match="embedding"):
        create_model("resface64", embedding="tanh")
    with pytest.raises(ModelError):
        create_model("koch2015", embedding="l2")  # the paper's tower keeps its sigmoid


# ---- parameter counts without building weights (issue 11, fault 12) -----------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_formula_equals_the_built_models_count(name: str) -> None:
    assert parameter_count(name) == count_parameters(create_model(name))


@pytest.mark.parametrize("name,pre,overrides", [
    ("tiny", PreprocessConfig(size=45, channels=3), {"widths": (4, 8, 12), "embed_dim": 10}),
    ("conv4", PreprocessConfig(size=33, channels=1), {"embedding": "l2", "dropout": 0.1}),
    ("resface64", PreprocessConfig(size=57, channels=3), {"blocks": (2, 1, 3, 1), "embed_dim": 32}),
    ("resface96", PreprocessConfig(size=31, channels=1), {"widths": (8, 16, 24), "blocks": (1, 2, 1)}),
    ("koch_half", PreprocessConfig(size=99, channels=3), {"fc": 64, "head_weights": "nonpositive"}),
])
def test_parameter_count_formula_follows_preprocessing_and_overrides(name: str, pre: PreprocessConfig,
                                                                     overrides: dict) -> None:
    assert parameter_count(name, pre, **overrides) == count_parameters(create_model(name, pre, **overrides))


def test_siamface_models_builds_no_model(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from siamface import cli

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("siamface models built a model")

    monkeypatch.setattr(siamface.models, "create_model", refuse)
    monkeypatch.setattr(siamface.models, "_REGISTRY", {k: dataclasses.replace(v, factory=refuse)
                                                       for k, v in siamface.models._REGISTRY.items()})
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["parameters"] for r in rows}["koch2015"] == 38_951_745  # the paper's network (README)


def test_state_dict_mismatch_lists_missing_unexpected_and_reshaped_tensors() -> None:
    model = create_model("tiny")
    state = model.state_dict()
    assert state_dict_mismatch(model, state) == ""
    other = create_model("tiny", embed_dim=8).state_dict()
    problem = state_dict_mismatch(model, other)
    assert problem.startswith("shapes differ: tower.head.fc.weight is (16, 1024) in the model, (8, 1024) in the "
                              "weights")
    extra = {**state, "tower.extra.weight": torch.zeros(1)}
    del extra["head.fc.bias"]
    assert state_dict_mismatch(model, extra) == "missing head.fc.bias; unexpected tower.extra.weight"
    many = state_dict_mismatch(model, {}, limit=2)
    assert many.startswith("missing ") and f"and {len(state) - 2} more" in many
