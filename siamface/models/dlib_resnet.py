"""dlib's face descriptor (dlib_face_recognition_resnet_model_v1, Davis E. King, CC0) as a plain nn.Module.

The network of dlib's `examples/dnn_face_recognition_ex.cpp`, with dlib's arithmetic reproduced exactly:
- input: a 150x150 RGB face chip; channel c becomes (x - mean_c) / 256 on the 0..255 scale;
- dlib's padding rule for conv and pooling: 0 when the stride is not 1, kernel // 2 otherwise;
- stem: conv 7x7/2 (32), affine, relu, max-pool 3x3/2;
- residual blocks: conv 3x3 (stride s), affine, relu, conv 3x3, affine, then relu of the sum with the
  shortcut (the input, or in a down block its 2x2/2 average pool);
- dlib's add_prev sums tensors of different shapes: the result takes the larger size in every dimension,
  both aligned at the top-left, the missing parts counted as zeros (this pads channels, and space where a
  3x3/2 conv of a 4x4 map meets its 2x2 pooled shortcut);
- head: the mean over all positions, then a fully connected 256 -> 128 without bias. The descriptor is not
  normalised; dlib calls two faces the same person below Euclidean distance 0.6.

`affine` layers are dlib's inference form of batch norm (per-channel scale and shift, trainable here).
The shipped weights (`siamface/weights/dlib/dlib_resnet_v1.safetensors`) are written by
`python -m siamface.dlib_convert` from the original .dat file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .siamese import SiameseNet

# (channels, blocks, first block downsamples) from the input towards the output
STAGES: tuple[tuple[int, int, bool], ...] = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True),
                                              (256, 1, True))
# The channel means of dlib's input layer, as stored in the model file (float32 on the 0..255 scale)
DLIB_MEANS = (122.782, 117.001, 104.298)
PARAMETERS = 5_614_592


def dlib_padding(kernel: int, stride: int) -> int:
    """dlib's default padding for con_ and pooling layers."""
    return 0 if stride != 1 else kernel // 2


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev_: the sum of two (N, C, H, W) tensors zero-padded at the end of every dimension."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class Affine(nn.Module):
    """dlib's affine_ layer in CONV_MODE: y = x * weight[c] + bias[c]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in x's dtype, so bf16 activations under autocast are not promoted back to fp32
        return x * self.weight.to(x.dtype).view(1, -1, 1, 1) + self.bias.to(x.dtype).view(1, -1, 1, 1)


def dlib_conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=dlib_padding(kernel, stride))


class DlibBlock(nn.Module):
    """dlib's `ares` / `ares_down`: relu(add_prev(affine(conv(relu(affine(conv(x))))), shortcut(x)))."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = dlib_conv(cin, cout, 3, 2 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = dlib_conv(cout, cout, 3, 1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(torch.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return torch.relu(add_prev(y, shortcut))


def _clone(module: nn.Module) -> nn.Module:
    """A new module tree holding the same tensors, made without any __init__ (random initialisation) or
    deepcopy: both cost about half a second at a cold start for this tower."""
    new = object.__new__(type(module))
    new.__dict__ = dict(module.__dict__)
    new._parameters, new._buffers = dict(module._parameters), dict(module._buffers)
    new._modules = {k: None if m is None else _clone(m) for k, m in module._modules.items()}
    return new


class DlibResNet(nn.Module):
    """The descriptor tower: (N, 3, 150, 150) RGB in [0, 1] -> (N, 128) dlib face descriptors.

    Inputs are [0, 1] (siamface's PreprocessConfig with mean 0 and std 1, i.e. uint8 / 255); the tower maps
    them back to 0..255 (exact in float32 for every uint8 value) and applies dlib's (x - mean) / 256.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(DLIB_MEANS, dtype=torch.float32).view(1, 3, 1, 1))
        self.conv = dlib_conv(3, 32, 7, 2)
        self.affine = Affine(32)
        blocks: list[nn.Module] = []
        cin = 32
        for width, n, down in STAGES:
            blocks += [DlibBlock(cin if i == 0 else width, width, down and i == 0) for i in range(n)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.out_features = 128

    def fused(self) -> DlibResNet:
        """An inference copy with every affine folded into the conv before it (w * g, b * g + beta): the
        same function up to float rounding (within 3e-7 of this tower on real chips), about twice as fast
        on CPU since it skips 29 elementwise passes. Frozen, in eval mode; fine-tune the unfused tower."""
        out = _clone(self).eval()  # the module tree, still sharing this tower's tensors
        pairs = [(out, "conv", "affine")] + [(b, f"conv{i}", f"affine{i}") for b in out.blocks for i in (1, 2)]
        with torch.no_grad():
            for owner, conv_name, affine_name in pairs:  # new tensors, written once (a clone + mul_ is two passes)
                conv, affine = getattr(owner, conv_name), getattr(owner, affine_name)
                conv.weight = nn.Parameter(conv.weight * affine.weight.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(conv.bias * affine.weight + affine.bias)
                setattr(owner, affine_name, nn.Identity())
            mine = {t.data_ptr() for t in [*self.parameters(), *self.buffers()]}
            for module in out.modules():  # what is not folded (fc, pixel_mean): copies of its own
                for store in (module._parameters, module._buffers):
                    for k, t in store.items():
                        if t is not None and t.data_ptr() in mine:
                            store[k] = nn.Parameter(t.detach().clone()) if isinstance(t, nn.Parameter) else t.clone()
        return out.requires_grad_(False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 255.0 - self.pixel_mean.to(x.dtype)) / 256.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.affine(self.conv(self.normalise(x))))
        x = F.max_pool2d(x, 3, 2, padding=dlib_padding(3, 2))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "dlib" / "dlib_resnet_v1.safetensors"
# SHA-256 of the shipped conversion (tests/test_dlib_resnet.py re-converts and compares)
WEIGHTS_SHA256 = "8cba732849d12fbbb2543679c19db31010cdc93bcaf988cc47857609674849cc"


def load_dlib_weights(tower: DlibResNet, path: Path = WEIGHTS, sha256: str | None = WEIGHTS_SHA256) -> None:
    """Load the converted dlib weights into `tower` (safetensors only), checking the file's SHA-256."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read the dlib descriptor weights: {e.strerror or e}") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ModelError(f"{path}: SHA-256 differs from the shipped conversion; reinstall siamface or re-run "
                         "python -m siamface.dlib_convert")
    try:
        tower.load_state_dict(safetensors.torch.load(data), strict=True)
    except (RuntimeError, safetensors.SafetensorError) as e:
        raise ModelError(f"{path}: not the dlib descriptor's weights: {e}") from None


def dlib_parameters(in_channels: int = 3, input_size: int = 150, pretrained: bool = True,
                    head_weights: str = "free") -> int:
    """The parameter count of `dlib_siamese(...)`: dlib's tower and the L1 head over its 128-d descriptor."""
    return PARAMETERS + 128 + 1


def dlib_siamese(in_channels: int = 3, input_size: int = 150, pretrained: bool = True,
                 head_weights: str = "free") -> SiameseNet:
    """dlib's descriptor tower (pretrained: the shipped converted weights) under the paper's L1 head."""
    if (in_channels, input_size) != (3, 150):
        raise ValueError(f"dlib_resnet takes 3x150x150 RGB face chips, got {in_channels}x{input_size}x{input_size}")
    tower = DlibResNet()
    if pretrained:
        load_dlib_weights(tower)
    net = SiameseNet(tower, 128, 3, 150, head_weights)
    net.pretrained_tower = pretrained  # a checkpoint of a frozen tower may then store only the head
    return net
