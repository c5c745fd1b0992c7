"""Tests for siamface.augment: the paper's random affine distortions (Koch et al. 2015, section 3.2)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from siamface.augment import (
    AffineConfig,
    AffineParams,
    affine_matrices,
    apply_affine,
    random_affine,
    sample_params,
)

N_LARGE = 20000


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    """(x, y) intensity centroid of a 2-D image, in pixels (x = column, y = row)."""
    img = img.double()
    ys, xs = torch.meshgrid(torch.arange(img.shape[0]), torch.arange(img.shape[1]), indexing="ij")
    total = img.sum()
    return float((xs * img).sum() / total), float((ys * img).sum() / total)


@pytest.fixture(scope="module")
def big_params() -> AffineParams:
    return sample_params(N_LARGE, AffineConfig(), _seeded(0))


def test_params_within_range_and_masked_components_are_identity(big_params: AffineParams) -> None:
    p = big_params
    assert len(p) == N_LARGE and p.theta.dtype == torch.float32 and p.rotate.dtype == torch.bool
    assert p.theta.abs().max() <= 10.0 and p.theta.abs().max() > 9.9
    for v in (p.shear_x, p.shear_y):
        assert v.abs().max() <= 0.3 and v.abs().max() > 0.29
    for v in (p.scale_x, p.scale_y):
        assert v.min() >= 0.8 and v.max() <= 1.2
    for v in (p.tx, p.ty):
        assert v.abs().max() <= 2.0 and v.abs().max() > 1.99
    assert torch.all(p.theta[~p.rotate] == 0) and torch.all(p.theta[p.rotate] != 0)
    assert torch.all(p.shear_x[~p.shear] == 0) and torch.all(p.shear_y[~p.shear] == 0)
    assert torch.all(p.scale_x[~p.scale] == 1) and torch.all(p.scale_y[~p.scale] == 1)
    assert torch.all(p.tx[~p.translate] == 0) and torch.all(p.ty[~p.translate] == 0)
    # the two axes of one component are drawn independently
    assert abs(float(torch.corrcoef(torch.stack([p.scale_x[p.scale], p.scale_y[p.scale]]))[0, 1])) < 0.05


def test_components_included_with_probability_half_independently(big_params: AffineParams) -> None:
    masks = torch.stack([big_params.rotate, big_params.shear, big_params.scale, big_params.translate]).double()
    tol1 = 4 * math.sqrt(0.25 / N_LARGE)
    tol2 = 4 * math.sqrt(0.25 * 0.75 / N_LARGE)
    for i in range(4):
        assert abs(float(masks[i].mean()) - 0.5) < tol1
        for j in range(i + 1, 4):
            assert abs(float((masks[i] * masks[j]).mean()) - 0.25) < tol2
    assert abs(float(masks.prod(0).mean()) - 1 / 16) < 4 * math.sqrt(1 / 16 * 15 / 16 / N_LARGE)


def test_p_zero_and_one_and_identity_config() -> None:
    none = sample_params(50, AffineConfig(p=0.0), _seeded(1))
    assert bool(none.is_identity().all()) and not bool(none.rotate.any())
    assert bool(sample_params(50, AffineConfig.identity(), _seeded(1)).is_identity().all())
    every = sample_params(50, AffineConfig(p=1.0), _seeded(1))
    assert all(bool(m.all()) for m in (every.rotate, every.shear, every.scale, every.translate))


def test_identity_params_reproduce_input() -> None:
    x = torch.rand(3, 2, 9, 13, generator=_seeded(2))
    assert torch.equal(apply_affine(x, AffineParams.constant(3)), x)
    # identity matrix, and also exact inside a mixed batch
    assert torch.equal(affine_matrices(AffineParams.constant(1), 9, 13)[0], torch.eye(2, 3))
    mixed = sample_params(3, AffineConfig(p=1.0), _seeded(3))
    ident = AffineParams.constant(1)
    batch = AffineParams(*(torch.cat([getattr(ident, f.name), getattr(mixed, f.name)[1:]])
                           for f in dataclasses.fields(AffineParams)))
    out = apply_affine(x, batch)
    assert torch.equal(out[0], x[0]) and not torch.allclose(out[1:], x[1:])


def test_same_seed_same_output_different_seed_different_output() -> None:
    x = torch.rand(8, 1, 16, 16, generator=_seeded(4))
    cfg = AffineConfig(p=1.0)
    a = random_affine(x, cfg, _seeded(7))
    assert torch.equal(a, random_affine(x, cfg, _seeded(7)))
    assert not torch.allclose(a, random_affine(x, cfg, _seeded(8)))


def test_translation_moves_bright_pixel() -> None:
    img = torch.zeros(1, 1, 15, 21)
    img[0, 0, 7, 10] = 1.0
    right = apply_affine(img, AffineParams.constant(translate=(2.0, 0.0)), padding_mode="zeros")[0, 0]
    assert divmod(int(right.argmax()), 21) == (7, 12)
    assert right[7, 12] == pytest.approx(1.0, abs=1e-5)
    down = apply_affine(img, AffineParams.constant(translate=(0.0, -1.0)), padding_mode="zeros")[0, 0]
    assert divmod(int(down.argmax()), 21) == (6, 10)  # negative ty moves content up


def test_rotation_is_counter_clockwise_as_displayed() -> None:
    size = 65
    img = torch.zeros(1, 1, size, size)
    img[0, 0, 32, 12:53] = 1.0  # horizontal line through the centre
    out = apply_affine(img, AffineParams.constant(theta=10.0), padding_mode="zeros")[0, 0].double()
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    w = out / out.sum()
    mx, my = (xs * w).sum(), (ys * w).sum()
    cxx, cyy = ((xs - mx) ** 2 * w).sum(), ((ys - my) ** 2 * w).sum()
    cxy = ((xs - mx) * (ys - my) * w).sum()
    angle_down = 0.5 * math.degrees(math.atan2(2 * float(cxy), float(cxx - cyy)))  # in (x, y-down) axes
    assert -angle_down == pytest.approx(10.0, abs=0.5)  # right end goes UP on screen
    assert (float(mx), float(my)) == pytest.approx((32.0, 32.0), abs=0.05)


def test_scale_enlarges_centred_square_per_axis() -> None:
    img = torch.zeros(1, 1, 65, 65)
    img[0, 0, 22:43, 22:43] = 1.0  # side 21, centred at pixel 32
    both = apply_affine(img, AffineParams.constant(scale=(1.2, 1.2)), padding_mode="zeros")[0, 0]
    assert math.sqrt(float(both.sum())) / 21 == pytest.approx(1.2, abs=0.02)
    wide = apply_affine(img, AffineParams.constant(scale=(1.2, 1.0)), padding_mode="zeros")[0, 0]
    assert float(wide[32].sum()) / 21 == pytest.approx(1.2, abs=0.02)  # width along a row
    assert float(wide[:, 32].sum()) / 21 == pytest.approx(1.0, abs=0.02)  # height unchanged


def test_composition_order_maps_blob_centre() -> None:
    """A = T @ R @ Sh @ S about the centre, checked on a smooth blob for a non-square image."""
    h, w = 41, 57
    cx, cy = (w - 1) / 2, (h - 1) / 2
    x0, y0 = cx + 6.0, cy - 4.0
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = torch.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * 1.5**2)).float()[None, None]
    th, shx, shy, sx, sy, tx, ty = 8.0, 0.2, -0.1, 1.1, 0.9, 1.5, -0.7
    params = AffineParams.constant(theta=th, shear=(shx, shy), scale=(sx, sy), translate=(tx, ty))
    out = apply_affine(img, params, padding_mode="zeros")[0, 0]
    c, s = math.cos(math.radians(th)), math.sin(math.radians(th))
    m = torch.tensor([[c, s], [-s, c]]) @ torch.tensor([[1, shx], [shy, 1]]) @ torch.diag(torch.tensor([sx, sy]))
    expected = m @ torch.tensor([x0 - cx, y0 - cy]) + torch.tensor([tx + cx, ty + cy])
    assert _centroid(out) == pytest.approx(tuple(expected.tolist()), abs=0.1)


def test_batch_equals_per_sample_and_multichannel_non_square() -> None:
    x = torch.rand(5, 3, 12, 20, generator=_seeded(5))
    params = sample_params(5, AffineConfig(p=1.0), _seeded(6))
    out = apply_affine(x, params)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(5):
        one = AffineParams(*(getattr(params, f.name)[i : i + 1] for f in dataclasses.fields(AffineParams)))
        assert torch.allclose(out[i : i + 1], apply_affine(x[i : i + 1], one), atol=1e-6)
        for ch in range(3):  # every channel gets the same warp
            assert torch.allclose(out[i, ch], apply_affine(x[i : i + 1, ch : ch + 1], one)[0, 0], atol=1e-6)


def test_dtypes_and_errors() -> None:
    x = torch.rand(2, 1, 8, 8, generator=_seeded(9))
    params = sample_params(2, AffineConfig(p=1.0), _seeded(10))
    ref = apply_affine(x, params)
    assert apply_affine(x.double(), params).dtype == torch.float64
    assert torch.allclose(apply_affine(x.double(), params).float(), ref, atol=1e-5)
    assert apply_affine(x.half(), params).dtype == torch.float16
    with pytest.raises(TypeError):
        apply_affine((x * 255).to(torch.uint8), params)
    with pytest.raises(TypeError):
        random_affine(torch.zeros(2, 1, 8, 8, dtype=torch.int64), AffineConfig())
    with pytest.raises(ValueError):
        apply_affine(x[0], params)
    with pytest.raises(ValueError):
        apply_affine(x[:1], params)
    with pytest.raises(ValueError):
        apply_affine(x, params, padding_mode="wrap")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rotation": -1.0}, "rotation"),
        ({"rotation": float("nan")}, "rotation"),
        ({"shear": 1.0}, "shear"),
        ({"shear": -0.1}, "shear"),
        ({"scale": (1.2, 0.8)}, "scale"),
        ({"scale": (0.0, 1.0)}, "scale"),
        ({"scale": (1.0,)}, "scale"),
        ({"translate": -2.0}, "translate"),
        ({"p": 1.5}, "p"),
        ({"p": "half"}, "p"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"AffineConfig\.{field}\b"):
        AffineConfig(**kwargs)


def test_config_defaults_and_frozen() -> None:
    cfg = AffineConfig()
    assert (cfg.rotation, cfg.shear, cfg.scale, cfg.translate, cfg.p) == (10.0, 0.3, (0.8, 1.2), 2.0, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.p = 1.0  # type: ignore[misc]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    x = torch.rand(4, 1, 32, 24, generator=_seeded(11))
    cpu = random_affine(x, AffineConfig(p=1.0), _seeded(12))
    gpu = random_affine(x.cuda(), AffineConfig(p=1.0), _seeded(12))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-5)


def test_real_omniglot_image(data_root) -> None:
    folder = data_root / "omniglot" / "images_background" / "Latin" / "character01"
    pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not pngs:
        pytest.skip(f"no Omniglot images at {folder}")
    from PIL import Image

    with Image.open(pngs[0]) as im:
        gray = im.convert("L")
        arr = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).reshape(gray.height, gray.width)
    x = (arr.float() / 255.0)[None, None].repeat(4, 1, 1, 1)
    out = random_affine(x, AffineConfig(p=1.0), _seeded(13))
    assert out.shape == x.shape
    assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6
    for i in range(4):
        assert not torch.allclose(out[i], x[i])
