"""The training step, built once per run (Koch et al. 2015, section 3.2): `make_step(run, model, data)`.

A `Step` holds everything a batch's loss needs besides the batch itself: the model and the tower to run,
the training images, the preprocessing and training configs, the fixed pairs or their stored distortions,
a frozen tower's descriptor cache, an identity classifier, and the process shard. `step.loss(batch, gen)`
is the binary cross-entropy of one batch: balanced [i, j, same] pair rows (pairing 'sampled') or the
indices of a class-balanced batch (pairing 'all'). Each distinct image is distorted and embedded once.

Several processes (siamface.distributed): every rank draws the same global batch and the same distortions
from the shared seed; the tower runs on the rank's disjoint slice of the batch's images, the embeddings are
gathered, and each rank computes the loss of the whole batch, so the step equals one process's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .augment import AffineConfig, FixedDistortions, apply_affine, sample_params
from .config import PreprocessConfig, RunConfig, TrainConfig
from .data.batches import ClassBatches
from .data.prepare import Prepared
from .distributed import Shard
from .embed import autocast
from .freeze import FrozenDescriptors
from .losses import CosineClassifier, all_pairs_bce, cosface, pair_bce
from .models import SiameseNet
from .optim import seed_for
from .preprocess import normalize

Embed = Callable[[torch.Tensor], torch.Tensor]


def affine_for(pre: PreprocessConfig) -> AffineConfig:
    """The paper's ranges; translation (2 px at 105 px) scales with the input size."""
    return AffineConfig(translate=2.0 * pre.size / 105.0)


def fixed_distortions(pairs: np.ndarray | None, cfg: TrainConfig, pre: PreprocessConfig) -> FixedDistortions:
    """The x(1 + distortions_per_pair) dataset of the fixed `pairs` (augment.FixedDistortions), its transforms
    drawn once from the seed; they replace online distortions (`train.distortions` is not applied on top)."""
    if pairs is None or not cfg.fixed_pairs:
        raise ValueError("train.distortions_per_pair needs train.fixed_pairs (the paper distorts a fixed set)")
    gen = torch.Generator().manual_seed(seed_for(cfg.seed, -1))  # epochs use seed_for(seed, epoch >= 0)
    return FixedDistortions.draw(pairs, cfg.distortions_per_pair, affine_for(pre), gen)


def augmented(images: torch.Tensor, idx: np.ndarray, pre: PreprocessConfig, cfg: TrainConfig,
              gen: torch.Generator | None) -> torch.Tensor:
    """uint8 images at idx -> distorted (paper), optionally mirrored, normalised float batch on the device."""
    x = images[torch.as_tensor(idx)].to(cfg.device).float() / 255.0
    if gen is not None and cfg.distortions:
        x = apply_affine(x, sample_params(len(x), affine_for(pre), gen))
    if gen is not None and cfg.flip:
        mirror = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x


def rotate_classes(x: torch.Tensor, labels: np.ndarray, gen: torch.Generator | None) -> torch.Tensor:
    """Turn all images of each class by the same random multiple of 90 degrees (class augmentation)."""
    _, inv = np.unique(labels, return_inverse=True)
    turns = torch.randint(0, 4, (int(inv.max()) + 1,), generator=gen)[torch.as_tensor(inv)]
    out = x.clone()
    for k in (1, 2, 3):
        sel = (turns == k).to(x.device)
        if bool(sel.any()):
            out[sel] = torch.rot90(x[sel], k, dims=(2, 3))
    return out


@dataclass
class Step:
    """One run's training step: `loss(batch, gen)`; `batches(epoch)` draws an epoch's batches.

    `images`: the uint8 training images; `labels`/`groups`: their identities and groups (pairing 'all');
    `pairs`: the fixed pairs (fixed_pairs), or the rows of `fixed`, their stored distortions; `cache`: a
    frozen tower's descriptors (looked up instead of computed); `embed`: the tower to run (torch.compile'd
    with --compile; model.embed by default)."""

    model: SiameseNet
    images: torch.Tensor
    pre: PreprocessConfig
    cfg: TrainConfig
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None
    embed: Embed | None = None
    classifier: CosineClassifier | None = None
    cache: FrozenDescriptors | None = None
    pairs: np.ndarray | None = None
    fixed: FixedDistortions | None = None
    sampler: ClassBatches | None = None
    sample_pairs: Callable[[int, np.random.Generator], np.ndarray] | None = None
    shard: Shard = field(default_factory=Shard)

    def loss(self, batch: np.ndarray, gen: torch.Generator | None) -> torch.Tensor:
        """The loss of one batch: pair rows (pairing 'sampled') or image indices (pairing 'all')."""
        return self.class_loss(batch, gen) if self.cfg.pairing == "all" else self.pair_loss(batch, gen)

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's batches, drawn from (seed, epoch) alone: the same on every rank and after a resume.
        An epoch is ceil(pairs / batch_size) steps: its fixed pairs, a pairs file's pairs or pairs_per_epoch."""
        cfg = self.cfg
        rng = np.random.default_rng(seed_for(cfg.seed, epoch))
        if self.sampler is not None:
            return [self.sampler(rng) for _ in range(math.ceil(cfg.pairs_per_epoch / cfg.batch_size))]
        if self.pairs is not None:
            pairs = self.pairs[rng.permutation(len(self.pairs))]
        else:
            assert self.sample_pairs is not None, "a Step without fixed pairs needs sample_pairs"
            pairs = self.sample_pairs(cfg.pairs_per_epoch, rng)
        return [pairs[s:s + cfg.batch_size] for s in range(0, len(pairs), cfg.batch_size)]

    def _tower(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of a batch of network inputs; with several processes, of this rank's slice, gathered."""
        return self.shard.embed(self.embed or self.model.embed, x)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize(x, self.pre)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def pair_loss(self, batch: np.ndarray, gen: torch.Generator | None) -> torch.Tensor:
        """BCE of a batch of [i, j, same] rows; each distinct image is distorted and embedded once.

        With stored distortions (rows [i, j, same, r]), each pair's two images get the transforms of row r
        instead of online distortions, so the same image appears with different transforms: every row is
        embedded. With a frozen tower's cache, the embeddings are looked up, not computed."""
        cfg, n = self.cfg, len(batch)
        target = torch.as_tensor(batch[:, 2], device=cfg.device)
        if self.cache is not None:
            uniq, inv = np.unique(np.concatenate([batch[:, 0], batch[:, 1]]), return_inverse=True)
            emb = self.cache(uniq, gen)
            inv_t = torch.as_tensor(inv, device=emb.device)
            return pair_bce(self.model.score(emb[inv_t[:n]], emb[inv_t[n:]]), target, cfg.label_smoothing)
        if self.fixed is not None:
            x = self.fixed.apply(self.images[torch.as_tensor(np.concatenate([batch[:, 0], batch[:, 1]]))]
                                 .to(cfg.device), batch)
            inv = np.arange(2 * n)
        else:
            uniq, inv = np.unique(np.concatenate([batch[:, 0], batch[:, 1]]), return_inverse=True)
            x = augmented(self.images, uniq, self.pre, cfg, gen)
        x = self._input(x)
        inv_t = torch.as_tensor(inv, device=cfg.device)
        with autocast(cfg.device, cfg.bf16):
            emb = self._tower(x)
            logits = self.model.score(emb[inv_t[:n]], emb[inv_t[n:]])
        return pair_bce(logits, target, cfg.label_smoothing)

    def class_loss(self, idx: np.ndarray, gen: torch.Generator | None) -> torch.Tensor:
        """All-pairs BCE of one class-balanced batch, each image embedded once (looked up with a frozen
        tower's cache); with a classifier, plus id_loss x the CosFace identity loss on the same embeddings."""
        cfg = self.cfg
        assert self.labels is not None, "pairing 'all' needs the training labels"
        labels = torch.as_tensor(self.labels[idx], device=cfg.device)
        groups = torch.as_tensor(self.groups[idx], device=cfg.device) if self.groups is not None else None
        x = None
        if self.cache is None:
            x = augmented(self.images, idx, self.pre, cfg, gen)
            if cfg.class_rotations:
                x = rotate_classes(x, self.labels[idx], gen)
            x = self._input(x)
        with autocast(cfg.device, cfg.bf16):
            emb = self.cache(idx, gen) if self.cache is not None else self._tower(x)
            loss = all_pairs_bce(self.model, emb, labels, groups, cfg.label_smoothing)
        if self.classifier is not None:
            loss = loss + cfg.id_loss * cosface(emb, labels, self.classifier, cfg.id_margin, cfg.id_scale)
        return loss


def make_step(run: RunConfig, model: SiameseNet, data: Prepared, embed: Embed | None = None,
              classifier: CosineClassifier | None = None, cache: FrozenDescriptors | None = None,
              shard: Shard | None = None) -> Step:
    """The run's training step: its fixed pairs (and their distortions) drawn once from the seed, its class
    sampler (pairing 'all') or its pair sampler."""
    cfg, within = run.train, run.data.within_group
    step = Step(model, data.train_images, run.preprocess, cfg, data.train_labels,
                data.train_groups if within else None, embed, classifier, cache, shard=shard or Shard())
    if cfg.pairing == "all":
        step.sampler = ClassBatches(data.train_labels, cfg.classes_per_batch, cfg.images_per_class,
                                    data.train_groups, within)
        return step
    if cfg.fixed_pairs:
        step.pairs = data.sample_train_pairs(cfg.pairs_per_epoch, np.random.default_rng(cfg.seed), within)
        if cfg.distortions_per_pair:
            step.fixed = fixed_distortions(step.pairs, cfg, run.preprocess)
            step.pairs = step.fixed.rows
    step.sample_pairs = lambda n, rng: data.sample_train_pairs(n, rng, within)
    return step
