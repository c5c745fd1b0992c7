"""dlib's CNN face detector (MMOD, King 2015, "Max-Margin Object Detection") as a torch module.

Runs dlib's CC0 model `mmod_human_face_detector.dat` (converted to safetensors by `siamface.dlib_convert`)
the way `dlib.cnn_face_detection_model_v1` does: the image (optionally doubled `upsample` times with
`pyramid_up`) becomes dlib's tiled pyramid of 5/6 steps on one canvas (`siamface.faces.pyramid`); a small
fully convolutional network scores every position of the canvas; each position scoring above the threshold
is an 80x80 window mapped back to the image through the tiled pyramid; non-maximum suppression
(`loss_mmod_::to_label`, `test_box_overlap`) keeps the best of overlapping windows. Images of one size run
as one batch. The network: three 5x5 stride-2 convolutions (16, 32, 32 filters), three 5x5 convolutions of
45, each followed by dlib's batch norm folded into a per-channel affine and a ReLU, then a 9x9 convolution to
one score map.

Boxes are dlib rectangles (left, top, right, bottom), inclusive, and may reach outside the image as dlib's do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from siamface import threads
from siamface.errors import ModelError
from siamface.faces.pyramid import IntRect, pyramid_up2, rect_down2, round_rect, tiled_pyramid, tiled_to_image

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "dlib" / "mmod_detector.safetensors"
BAND_PIXELS = 1_500_000  # canvas pixels per band of rows (activations: about 90 MB of float32 per band)


@dataclass(frozen=True)
class Detection:
    """One face: a dlib rectangle (left, top, right, bottom, inclusive) and the detector's score."""

    rect: IntRect
    confidence: float


class MMODNet(nn.Module):
    """The detector's fully convolutional network: (N, 3, H, W) canvas -> (N, 1, h, w) scores."""

    def __init__(self, convs: Sequence[dict[str, Any]]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(c["in"], c["out"], tuple(c["kernel"]), tuple(c["stride"]), tuple(c["padding"]))
            for c in convs)
        for i, c in enumerate(convs[:-1]):
            self.register_buffer(f"bn{i}_scale", torch.ones(c["out"]))
            self.register_buffer(f"bn{i}_shift", torch.zeros(c["out"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < last:
                scale, shift = getattr(self, f"bn{i}_scale"), getattr(self, f"bn{i}_shift")
                x = torch.relu(x * scale[:, None, None] + shift[:, None, None])
        return x

    def fused(self) -> nn.Sequential:
        """An inference copy with each batch-norm affine folded into its convolution and in-place ReLUs: the
        same function (to float rounding) with one pass over each activation instead of four; the last
        convolution (to one score map) as a `RowSumConv`."""
        layers: list[nn.Module] = []
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
            w, b = conv.weight.detach(), conv.bias.detach()
            if i < last:
                scale, shift = getattr(self, f"bn{i}_scale"), getattr(self, f"bn{i}_shift")
                w, b = w * scale[:, None, None, None], b * scale + shift
            new.weight.data.copy_(w)
            new.bias.data.copy_(b)
            layers.append(new if i < last or new.stride != (1, 1) else RowSumConv(new))
            if i < last:
                layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers).eval()


class RowSumConv(nn.Module):
    """A stride-1 k x k convolution to one channel as one 1 x k convolution to k channels (a channel per kernel
    row) whose k maps are summed with their rows shifted: the same products summed in another order (equal
    to float rounding). oneDNN runs a one-channel output slowly; this way dlib's 9x9 last layer takes about a
    quarter of the time."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.out_channels != 1 or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError("RowSumConv rewrites a stride-1 convolution to one channel")
        (kh, kw), (ph, pw) = conv.kernel_size, conv.padding  # type: ignore[misc]
        self.kh, self.ph = int(kh), int(ph)
        self.rows = nn.Conv2d(conv.in_channels, self.kh, (1, int(kw)), padding=(0, int(pw)), bias=False)
        self.rows.weight.data.copy_(conv.weight.detach()[0].permute(1, 0, 2)[:, :, None, :])
        self.register_buffer("bias", conv.bias.detach().clone() if conv.bias is not None else torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = nn.functional.pad(self.rows(x), (0, 0, self.ph, self.ph))
        out_h = z.shape[2] - self.kh + 1
        out = z[:, 0, :out_h]
        for i in range(1, self.kh):
            out = out + z[:, i, i:i + out_h]
        return (out + self.bias)[:, None]


def _overlaps(a: IntRect, b: IntRect, iou: float, covered: float) -> bool:
    """dlib's test_box_overlap (the 'union' is the bounding box of both rectangles)."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return False
    inner = float(iw * ih)
    outer = float((max(a[2], b[2]) - min(a[0], b[0]) + 1) * (max(a[3], b[3]) - min(a[1], b[1]) + 1))
    area_a = float((a[2] - a[0] + 1) * (a[3] - a[1] + 1))
    area_b = float((b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return inner / outer > iou or inner / area_a > covered or inner / area_b > covered


class MMODDetector:
    """`detector([rgb images], upsample=1)` -> one list of Detection per image, best first."""

    def __init__(self, state: dict[str, torch.Tensor], config: dict[str, Any], source: str = "<state>",
                 device: str | torch.device = "cpu") -> None:
        try:
            self.net = MMODNet(config["convs"])
            self.net.load_state_dict(_net_state(state, len(config["convs"])))
            self.window = config["detector_windows"][0]
            self.means = tuple(float(m) for m in config["input_means_rgb"])
            self.scale_n = int(config["pyramid_down"])
            self.padding = int(config["pyramid_padding"]), int(config["pyramid_outer_padding"])
            nms = config["overlaps_nms"]
            self.nms = float(nms["iou_thresh"]), float(nms["percent_covered_thresh"])
            self.threshold = float(config["adjust_threshold"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ModelError(f"{source}: not an MMOD detector this version can run ({e})") from None
        if len(config["detector_windows"]) != 1 or config.get("use_bounding_box_regression"):
            raise ModelError(f"{source}: only one detector window and no box regression are supported")
        self.device = torch.device(device)
        self.net.eval()
        self.fast = self.net.fused().to(self.device, memory_format=torch.channels_last)  # faster on CPU
        # each score position maps back onto the canvas through the convolutions (con_::map_output_to_input)
        self.convs = config["convs"]
        self.step, self.offset, reach = 1.0, 0.0, 0
        for c in reversed(config["convs"]):
            self.offset = self.offset * c["stride"][0] - c["padding"][0] + c["kernel"][0] // 2
            reach = reach * c["stride"][0] + c["kernel"][0] // 2
            self.step *= c["stride"][0]
        self.stride = int(self.step)
        # rows each side of a band that reach its kept scores (the receptive field's half), to the stride
        self.margin = -(-(reach + self.stride) // self.stride) * self.stride

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> MMODDetector:
        """Read the converted detector (safetensors with its JSON config; the shipped one by default)."""
        from safetensors import safe_open

        path = Path(path) if path is not None else WEIGHTS
        if not path.is_file():
            raise ModelError(f"{path}: MMOD detector weights not found; they ship in siamface/weights/dlib "
                             "(python -m siamface.dlib_convert writes them)")
        try:
            with safe_open(str(path), "pt") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}
                config = json.loads((f.metadata() or {})["config"])
        except Exception as e:  # noqa: BLE001 - safetensors and json raise several types for a bad file
            raise ModelError(f"{path}: not a readable MMOD detector file ({e})") from None
        return cls(state, config, str(path), device)

    def canvas(self, image: np.ndarray, upsample: int = 0) -> tuple[np.ndarray, list[IntRect]]:
        """The network's input for one RGB or grey uint8 image: dlib's tiled pyramid and its level rectangles."""
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        elif image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        for _ in range(upsample):
            image = pyramid_up2(image)
        return tiled_pyramid(image, self.means, self.scale_n, *self.padding)

    def fits(self, height: int, width: int) -> bool:
        """Whether a canvas is large enough to give a score map (tiny images give none, and no faces)."""
        for c in self.convs:
            height = (height + 2 * c["padding"][0] - c["kernel"][0]) // c["stride"][0] + 1
            width = (width + 2 * c["padding"][1] - c["kernel"][1]) // c["stride"][1] + 1
            if height < 1 or width < 1:
                return False
        return True

    @torch.no_grad()
    def scores(self, canvases: np.ndarray) -> np.ndarray:
        """Score maps (N, h, w) for a stack of canvases of one size (N, 3, H, W).

        A large canvas runs in bands of rows that overlap by the network's receptive field and start at
        multiples of its stride, so every kept score sees the same pixels as in one pass (equal to float
        rounding) while the activations stay bounded (a 16 Mpx photo's canvas would need GBs at once)."""
        x = torch.from_numpy(np.ascontiguousarray(canvases))
        n, _, height, width = x.shape
        out_h = self._out_size(height, 0)
        band = max(self.stride, BAND_PIXELS // max(1, n * width) // self.stride * self.stride)
        if height <= band + 2 * self.margin:
            return self._run(x)
        parts = []
        for top in range(0, out_h * self.stride, band):
            lo, hi = max(0, top - self.margin), min(height, top + band + self.margin)
            first, stop = top // self.stride, min(out_h, (top + band) // self.stride)
            parts.append(self._run(x[:, :, lo:hi])[:, first - lo // self.stride:stop - lo // self.stride])
        return np.concatenate(parts, axis=1)

    def _run(self, x: torch.Tensor) -> np.ndarray:
        x = x.to(self.device, memory_format=torch.channels_last)
        return self.fast(x)[:, 0].float().cpu().numpy()

    def _out_size(self, size: int, axis: int) -> int:
        for c in self.convs:
            size = (size + 2 * c["padding"][axis] - c["kernel"][axis]) // c["stride"][axis] + 1
        return size

    def decode(self, scores: np.ndarray, rects: list[IntRect], upsample: int = 0,
               threshold: float | None = None) -> list[Detection]:
        """loss_mmod_::to_label on one score map: windows above the threshold, image coordinates, NMS."""
        thr = self.threshold if threshold is None else threshold
        rows, cols = np.nonzero(scores > thr)
        if len(rows) == 0 or not rects:
            return []
        half_w, half_h = (self.window["width"] - 1) / 2.0, (self.window["height"] - 1) / 2.0
        found = []
        for r, c in zip(rows.tolist(), cols.tolist()):
            px, py = c * self.step + self.offset, r * self.step + self.offset
            box = tiled_to_image(rects, (px - half_w, py - half_h, px + half_w, py + half_h), self.scale_n)
            found.append((float(scores[r, c]), round_rect(box)))
        found.sort(key=lambda d: -d[0])
        kept: list[tuple[float, IntRect]] = []
        for score, rect in found:
            if not any(_overlaps(k, rect, *self.nms) for _, k in kept):
                kept.append((score, rect))
        return [Detection(round_rect(rect_down2(rect, upsample)), score) for score, rect in kept]

    def __call__(self, images: Sequence[np.ndarray], upsample: int = 0, threshold: float | None = None,
                 batch_size: int = 16) -> list[list[Detection]]:
        """Faces in each image (RGB or grey uint8), best first; images of one size share a batch."""
        if isinstance(upsample, bool) or not isinstance(upsample, int) or upsample < 0:
            raise ValueError(f"upsample must be an integer >= 0, got {upsample!r}")
        threads.apply()
        prepared = [self.canvas(im, upsample) for im in images]
        out: list[list[Detection]] = [[] for _ in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (canvas, _) in enumerate(prepared):
            groups.setdefault(canvas.shape, []).append(i)
        for shape, idx in groups.items():
            if not self.fits(shape[1], shape[2]):
                continue
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                canvases = [prepared[i][0] for i in chunk]  # one canvas: a view, not a 100 MB copy
                maps = self.scores(canvases[0][None] if len(chunk) == 1 else np.stack(canvases))
                for i, score_map in zip(chunk, maps):
                    out[i] = self.decode(score_map, prepared[i][1], upsample, threshold)
        return out


def _net_state(state: dict[str, torch.Tensor], n_convs: int) -> dict[str, torch.Tensor]:
    """The converter's names (conv{i}.weight, bn{i}.scale) -> MMODNet's."""
    out = {}
    for i in range(n_convs):
        out[f"convs.{i}.weight"] = state[f"conv{i}.weight"].float()
        out[f"convs.{i}.bias"] = state[f"conv{i}.bias"].float()
    for i in range(n_convs - 1):
        out[f"bn{i}_scale"] = state[f"bn{i}.scale"].float()
        out[f"bn{i}_shift"] = state[f"bn{i}.shift"].float()
    return out
