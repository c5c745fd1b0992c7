"""Random affine distortions of Koch, Zemel & Salakhutdinov (2015), "Siamese Neural Networks for One-shot
Image Recognition", section 3.2, on batched tensors with independent per-sample parameters.

Each image gets T = (theta, rho_x, rho_y, s_x, s_y, t_x, t_y) with theta ~ U[-10, 10] degrees,
rho ~ U[-0.3, 0.3], s ~ U[0.8, 1.2] and t ~ U[-2, 2] pixels, each axis drawn independently. The paper
includes "each of these components" with probability 0.5; we read that as FOUR components (rotation,
shear, scale, translation), each covering both axes and each included independently with probability p.
An excluded component is the identity (0 degrees, 0 shear, scale 1, 0 pixels).

Conventions (pixel coordinates x = column to the right, y = row downwards, origin at the image centre):

* forward map A = Translate @ Rotate @ Shear @ Scale, i.e. content is scaled, then sheared, then rotated
  about the centre, then translated: p_out = M @ p_in + t with M = R @ Sh @ S;
* S = diag(s_x, s_y); Sh = [[1, rho_x], [rho_y, 1]];
* positive theta rotates content COUNTER-CLOCKWISE as the image is displayed (rows downwards):
  R = [[cos, sin], [-sin, cos]] in (x, y-down) coordinates;
* positive t_x moves content right, positive t_y moves content down, by exactly that many pixels.

Parameters are drawn on the CPU with the given generator, so results are identical on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "AffineConfig", "AffineParams", "FixedDistortions", "affine_matrices", "apply_affine", "random_affine",
    "sample_params",
]

_PADDING_MODES = ("zeros", "border", "reflection")


def _number(name: str, value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"AffineConfig.{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"AffineConfig.{name} must be finite, got {value!r}")
    return out


@dataclass(frozen=True)
class AffineConfig:
    """Ranges of the distortion: rotation in [-rotation, rotation] degrees, shear in [-shear, shear] per
    axis, scale in [scale[0], scale[1]] per axis, translation in [-translate, translate] pixels per axis;
    each of the four components is included independently with probability ``p``."""

    rotation: float = 10.0
    shear: float = 0.3
    scale: tuple[float, float] = (0.8, 1.2)
    translate: float = 2.0
    p: float = 0.5

    def __post_init__(self) -> None:
        rotation, shear = _number("rotation", self.rotation), _number("shear", self.shear)
        translate, p = _number("translate", self.translate), _number("p", self.p)
        if not 0.0 <= rotation <= 180.0:
            raise ValueError(f"AffineConfig.rotation must be in [0, 180] degrees, got {self.rotation!r}")
        if not 0.0 <= shear < 1.0:
            raise ValueError(f"AffineConfig.shear must be in [0, 1), got {self.shear!r}")
        if translate < 0.0:
            raise ValueError(f"AffineConfig.translate must be >= 0 pixels, got {self.translate!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"AffineConfig.p must be a probability in [0, 1], got {self.p!r}")
        try:
            lo, hi = self.scale
        except (TypeError, ValueError):
            raise ValueError(f"AffineConfig.scale must be a pair (low, high), got {self.scale!r}") from None
        lo, hi = _number("scale", lo), _number("scale", hi)
        if not 0.0 < lo <= hi:
            raise ValueError(f"AffineConfig.scale must satisfy 0 < low <= high, got {self.scale!r}")
        for name, value in (("rotation", rotation), ("shear", shear), ("translate", translate), ("p", p)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "scale", (lo, hi))

    @classmethod
    def identity(cls) -> AffineConfig:
        """A configuration that never distorts (all ranges collapsed, p = 0)."""
        return cls(rotation=0.0, shear=0.0, scale=(1.0, 1.0), translate=0.0, p=0.0)


@dataclass(frozen=True)
class AffineParams:
    """Per-sample transforms: 1-D CPU tensors of length N (theta in degrees, tx/ty in pixels) and boolean
    masks saying which components were included (an excluded component holds its identity value)."""

    theta: torch.Tensor
    shear_x: torch.Tensor
    shear_y: torch.Tensor
    scale_x: torch.Tensor
    scale_y: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    rotate: torch.Tensor
    shear: torch.Tensor
    scale: torch.Tensor
    translate: torch.Tensor

    def __post_init__(self) -> None:
        n = None
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.dim() != 1:
                raise ValueError(f"AffineParams.{name} must be a 1-D tensor")
            if n is not None and len(value) != n:
                raise ValueError(f"AffineParams.{name} has length {len(value)}, expected {n}")
            n = len(value)

    def __len__(self) -> int:
        return len(self.theta)

    @classmethod
    def constant(
        cls,
        n: int = 1,
        *,
        theta: float = 0.0,
        shear: tuple[float, float] = (0.0, 0.0),
        scale: tuple[float, float] = (1.0, 1.0),
        translate: tuple[float, float] = (0.0, 0.0),
    ) -> AffineParams:
        """The same transform for n samples; a component's mask is set where it differs from the identity."""

        def full(v: float) -> torch.Tensor:
            return torch.full((n,), float(v), dtype=torch.float32)

        def flag(on: bool) -> torch.Tensor:
            return torch.full((n,), bool(on), dtype=torch.bool)

        return cls(
            theta=full(theta), shear_x=full(shear[0]), shear_y=full(shear[1]),
            scale_x=full(scale[0]), scale_y=full(scale[1]), tx=full(translate[0]), ty=full(translate[1]),
            rotate=flag(theta != 0), shear=flag(tuple(shear) != (0, 0)),
            scale=flag(tuple(scale) != (1, 1)), translate=flag(tuple(translate) != (0, 0)),
        )

    def is_identity(self) -> torch.Tensor:
        """Boolean (N,) tensor: True where the sample's transform is exactly the identity."""
        return (
            (self.theta == 0) & (self.shear_x == 0) & (self.shear_y == 0) & (self.scale_x == 1)
            & (self.scale_y == 1) & (self.tx == 0) & (self.ty == 0)
        )


def sample_params(n: int, cfg: AffineConfig, generator: torch.Generator | None = None) -> AffineParams:
    """Draw n independent transforms on the CPU (generator must be a CPU generator; None = global RNG)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    kw = {"generator": generator, "dtype": torch.float32, "device": "cpu"}
    include = torch.rand(n, 4, **kw) < cfg.p  # columns: rotate, shear, scale, translate
    u = torch.rand(n, 7, **kw)
    theta = (2 * u[:, 0] - 1) * cfg.rotation
    shear = (2 * u[:, 1:3] - 1) * cfg.shear
    lo, hi = cfg.scale
    scale = (lo + (hi - lo) * u[:, 3:5]).clamp(lo, hi)
    trans = (2 * u[:, 5:7] - 1) * cfg.translate
    zero, one = torch.zeros(()), torch.ones(())
    rot_m, sh_m, sc_m, tr_m = include.unbind(1)
    return AffineParams(
        theta=torch.where(rot_m, theta, zero),
        shear_x=torch.where(sh_m, shear[:, 0], zero), shear_y=torch.where(sh_m, shear[:, 1], zero),
        scale_x=torch.where(sc_m, scale[:, 0], one), scale_y=torch.where(sc_m, scale[:, 1], one),
        tx=torch.where(tr_m, trans[:, 0], zero), ty=torch.where(tr_m, trans[:, 1], zero),
        rotate=rot_m.clone(), shear=sh_m.clone(), scale=sc_m.clone(), translate=tr_m.clone(),
    )


def affine_matrices(params: AffineParams, height: int, width: int) -> torch.Tensor:
    """(N, 2, 3) float32 CPU matrices for ``F.affine_grid(..., align_corners=False)``.

    The forward pixel map p_out = M p_in + t (M = R @ Sh @ S, about the image centre) is inverted, because
    affine_grid maps output to input coordinates, then conjugated by P = diag(W/2, H/2), which converts
    normalised coordinates to centred pixel coordinates (exact for align_corners=False)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    f64 = torch.float64
    rad = torch.deg2rad(params.theta.to(f64))
    c, s = torch.cos(rad), torch.sin(rad)
    rot = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)
    one = torch.ones_like(rad)
    shx, shy = params.shear_x.to(f64), params.shear_y.to(f64)
    shear = torch.stack([torch.stack([one, shx], -1), torch.stack([shy, one], -1)], -2)
    scale = torch.diag_embed(torch.stack([params.scale_x.to(f64), params.scale_y.to(f64)], -1))
    m = rot @ shear @ scale
    a, b, cc, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    det = a * d - b * cc
    if bool((det.abs() < 1e-12).any()):
        raise ValueError("affine transform is singular (shear_x * shear_y == 1 or zero scale)")
    m_inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-cc, a], -1)], -2) / det[:, None, None]
    p = torch.tensor([width / 2.0, height / 2.0], dtype=f64)
    lin = m_inv * p[None, None, :] / p[None, :, None]  # P^-1 @ M^-1 @ P
    t = torch.stack([params.tx.to(f64), params.ty.to(f64)], -1)
    offset = -(m_inv @ t[:, :, None])[:, :, 0] / p  # -P^-1 @ M^-1 @ t
    return torch.cat([lin, offset[:, :, None]], -1).to(torch.float32)


def apply_affine(images: torch.Tensor, params: AffineParams, padding_mode: str = "border") -> torch.Tensor:
    """Warp float (N, C, H, W) images on any device with bilinear sampling; identity samples are returned
    unchanged. The grid is computed in float32 (float64 for float64 input) and the result has the input dtype."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {getattr(images, 'dtype', type(images))}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if len(params) != images.shape[0]:
        raise ValueError(f"got {len(params)} transforms for {images.shape[0]} images")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    identity = params.is_identity()
    if bool(identity.all()):
        return images.clone()
    work = images if images.dtype == torch.float64 else images.float()
    theta = affine_matrices(params, images.shape[2], images.shape[3]).to(device=images.device, dtype=work.dtype)
    grid = F.affine_grid(theta, list(work.shape), align_corners=False)
    out = F.grid_sample(work, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    out = out.to(images.dtype)
    return torch.where(identity.to(images.device)[:, None, None, None], images, out)


def random_affine(
    images: torch.Tensor,
    cfg: AffineConfig,
    generator: torch.Generator | None = None,
    padding_mode: str = "border",
) -> torch.Tensor:
    """Distort each image of a (N, C, H, W) float batch with its own random transform drawn from cfg."""
    return apply_affine(images, sample_params(len(images), cfg, generator), padding_mode)


def _cat_params(parts: list[AffineParams]) -> AffineParams:
    return AffineParams(**{f: torch.cat([getattr(p, f) for p in parts]) for f in AffineParams.__dataclass_fields__})


def _take_params(params: AffineParams, idx: torch.Tensor) -> AffineParams:
    return AffineParams(**{f: getattr(params, f)[idx] for f in AffineParams.__dataclass_fields__})


@dataclass(frozen=True)
class FixedDistortions:
    """Koch et al.'s fixed distorted training set (section 4.2: "eight transforms for each training example").

    Row r of the epoch's pairs is [i, j, same, r]; image i is warped by `first[r]` and image j by `second[r]`
    (independent T1, T2). The first N rows are the N fixed pairs undistorted (identity transforms), then k
    blocks of the same pairs with transforms drawn once and reused in every epoch.
    """

    rows: np.ndarray
    first: AffineParams
    second: AffineParams

    @classmethod
    def draw(cls, pairs: np.ndarray, k: int, cfg: AffineConfig, generator: torch.Generator) -> FixedDistortions:
        """The x(1 + k) rows of the (N, 3) [i, j, same] `pairs` and their transforms."""
        n = len(pairs)
        rows = np.concatenate([np.tile(pairs[:, :3], (1 + k, 1)), np.arange(n * (1 + k))[:, None]], axis=1)
        identity = AffineParams.constant(n)
        first = _cat_params([identity, sample_params(n * k, cfg, generator)])
        second = _cat_params([identity, sample_params(n * k, cfg, generator)])
        return cls(rows.astype(np.int64), first, second)

    def apply(self, images: torch.Tensor, batch: np.ndarray) -> torch.Tensor:
        """uint8 images i then j of the batch rows, scaled to [0, 1] and warped by their rows' transforms."""
        r = torch.as_tensor(batch[:, 3])
        params = _cat_params([_take_params(self.first, r), _take_params(self.second, r)])
        return apply_affine(images.float() / 255.0, params)
