"""Several training processes (`torchrun --nproc_per_node=N -m siamface train ...`): gloo on CPU, NCCL on GPUs.

Data parallel with one global batch: every rank draws the same batch and the same distortions from the
shared seed (cheap: indices and a few random numbers), runs the tower on its own disjoint slice of the
batch's images, gathers the embeddings of all slices and computes the loss of the whole batch. Batch norm
uses the statistics of the whole batch (`GlobalBatchNorm`), and the gradients are averaged over the ranks
before each optimiser step, so N processes take the steps one process takes with the same batch (up to
floating-point summation order). Rank 0 alone writes checkpoints, logs and plots.

Gradient scaling, for the record: each rank's loss is the loss of the whole batch, so the head's gradient
is the same on every rank; the gathered embeddings pass back only their own slice's gradient, scaled by the
world size, so that the average over ranks of the tower's gradients is their sum, the full gradient.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import SiamfaceError


@dataclass(frozen=True)
class Shard:
    """This process's place among `world` training processes (rank 0 of 1 when training alone)."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this module started the process group, so training ends it

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints progress."""
        return self.rank == 0

    def bounds(self, n: int) -> tuple[int, int]:
        """This rank's disjoint slice [lo, hi) of n items (contiguous, sizes differ by at most one)."""
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def embed(self, tower: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The tower's embeddings of a whole batch: of this rank's slice, gathered from every rank."""
        if self.world == 1:
            return tower(x)
        lo, hi = self.bounds(len(x))
        return _GatherSlices.apply(tower(x[lo:hi]), len(x), self)

    def sync_grads(self, opt: torch.optim.Optimizer) -> None:
        """Average every parameter's gradient over the ranks (one all-reduce of them all, flattened)."""
        if self.world == 1:
            return
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast(self, module: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers (the same start, whatever each rank built)."""
        if self.world == 1:
            return
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def agree(self, value: Any) -> Any:
        """Rank 0's value of a small picklable object, on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


class _GatherSlices(torch.autograd.Function):
    """Forward: the rows of every rank's slice, concatenated in rank order. Backward: this rank's rows of the
    gradient, times the world size (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, part: torch.Tensor, n: int, shard: Shard) -> torch.Tensor:  # type: ignore[override]
        sizes = [Shard(r, shard.world).bounds(n) for r in range(shard.world)]
        width = max(hi - lo for lo, hi in sizes)
        padded = part.new_zeros((width, *part.shape[1:]))
        padded[:len(part)] = part
        out = [torch.empty_like(padded) for _ in range(shard.world)]
        dist.all_gather(out, padded.contiguous())
        ctx.lo, ctx.hi, ctx.world = *shard.bounds(n), shard.world
        return torch.cat([o[:hi - lo] for o, (lo, hi) in zip(out, sizes)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:  # type: ignore[override]
        return grad[ctx.lo:ctx.hi] * ctx.world, None, None


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) with autograd: the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the whole batch of all ranks (training mode; eval uses the running statistics as
    usual). Same parameters and buffers as the nn.BatchNorm it replaces, so checkpoints do not change.
    torch's SyncBatchNorm does this on GPUs only; this one runs on any device through autograd-aware
    all-reduces (two passes: the mean, then the variance about it)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = all_reduce(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
        mean = all_reduce(xf.sum(dims)) / count
        var = all_reduce(((xf - mean.view(shape)) ** 2).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (count / max(float(count) - 1, 1.0)) * m)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def globalize_batch_norm(module: nn.Module) -> int:
    """Replace every nn.BatchNorm1d/2d/3d inside `module` by a GlobalBatchNorm holding the same tensors;
    returns how many were replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            for p_new, p_old in zip(new.parameters(), child.parameters()):
                p_new.requires_grad_(p_old.requires_grad)
            setattr(module, name, new.to(next(iter(child.state_dict().values())).device))
            count += 1
        else:
            count += globalize_batch_norm(child)
    return count


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: str) -> tuple[Shard, str]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the
    environment): NCCL with one GPU per process (device cuda:LOCAL_RANK), gloo on CPU. Alone: rank 0 of 1."""
    if not launched():
        return Shard(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SiamfaceError("device cuda with torchrun, but this machine has no CUDA GPU (device cpu: gloo)",
                                option="device")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
        backend = "nccl"
    elif device == "cpu":
        backend = "gloo"
    else:
        raise SiamfaceError(f"device {device}: several processes train on cpu (gloo) or cuda (NCCL) only",
                            option="device")
    owns = not dist.is_initialized()  # a caller's own group is used as it is, and left to the caller
    if owns:
        dist.init_process_group(backend, rank=rank, world_size=world)
    return Shard(rank, world, owns), device


def stop(shard: Shard) -> None:
    """Leave the process group this module started (nothing otherwise)."""
    if shard.owns_group and dist.is_initialized():
        dist.destroy_process_group()

