"""The training loop, top to bottom (Koch et al. 2015, section 3.2; nanoGPT's train.py for the shape).

Binary cross-entropy on balanced same/different pairs with the paper's random affine distortions.
Each distinct image of a batch goes through the tower once; pairs are scored from the embeddings.
After every epoch: validation on held-out identities (N-way one-shot and verification pairs), a JSONL
log line, a best-on-validation checkpoint, a resumable state, early stopping and collapse detection.
At the end the decision threshold is calibrated on the validation pairs and stored with the weights.
Every epoch draws its pairs, distortions and dropout from (seed, epoch) alone, so `--resume` after a
crash continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, metrics, threads
from .augment import AffineConfig, FixedDistortions, apply_affine, sample_params
from .card import calibrate
from .checkpoint import FROM_FACTORY, load_model, save_model
from .config import PreprocessConfig, RunConfig, TrainConfig
from .data.batches import ClassBatches
from .data.prepare import Prepared, prepare_data
from .embed import autocast, embed_batches, score_indices
from .errors import CollapseError, SiamfaceError
from .evaluate import evaluate_identities
from .files import FolderLock, check_output_folder
from .freeze import ALL, FrozenDescriptors, embed_frozen, freeze_tower, keep_frozen_in_eval
from .lineage import init_from
from .losses import CosineClassifier, all_pairs_bce, cosface, pair_bce
from .models import SiameseNet, count_parameters, create_model
from .optim import cosine_lr, make_optimizer, seed_for, set_epoch_hparams
from .plots import plot_training
from .preprocess import load_input, normalize
from .progress import on_terminal, progress_bar
from .resume import LOG, TrainState, append_log, rewrite_log, save_state, start

CURVES = "curves.png"
COLLAPSE_EPOCHS = 3


# ---- one epoch -----------------------------------------------------------------------------------------

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


def _network_input(x: torch.Tensor, pre: PreprocessConfig, cfg: TrainConfig) -> torch.Tensor:
    x = normalize(x, pre)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def pair_batch_loss(
    model: SiameseNet, images: torch.Tensor, batch: np.ndarray, pre: PreprocessConfig, cfg: TrainConfig,
    gen: torch.Generator | None, embed: Any = None, fixed: FixedDistortions | None = None,
    cache: FrozenDescriptors | None = None,
) -> torch.Tensor:
    """BCE of a batch of [i, j, same] rows; each distinct image is distorted and embedded once.

    With `fixed` (rows [i, j, same, r]), each pair's two images get the stored transforms of row r instead
    of online distortions, so the same image appears with different transforms: every row is embedded.
    With `cache` (a frozen tower), the embeddings are looked up, not computed.
    """
    if cache is not None:
        uniq, inv = np.unique(np.concatenate([batch[:, 0], batch[:, 1]]), return_inverse=True)
        emb = cache(uniq, gen)
        inv_t = torch.as_tensor(inv, device=emb.device)
        logits = model.score(emb[inv_t[: len(batch)]], emb[inv_t[len(batch):]])
        return pair_bce(logits, torch.as_tensor(batch[:, 2], device=cfg.device), cfg.label_smoothing)
    if fixed is not None:
        x = fixed.apply(images[torch.as_tensor(np.concatenate([batch[:, 0], batch[:, 1]]))].to(cfg.device), batch)
        inv = np.arange(2 * len(batch))
    else:
        uniq, inv = np.unique(np.concatenate([batch[:, 0], batch[:, 1]]), return_inverse=True)
        x = augmented(images, uniq, pre, cfg, gen)
    x = _network_input(x, pre, cfg)
    inv_t = torch.as_tensor(inv, device=cfg.device)
    with autocast(cfg.device, cfg.bf16):
        emb = (embed or model.embed)(x)
        logits = model.score(emb[inv_t[: len(batch)]], emb[inv_t[len(batch):]])
    return pair_bce(logits, torch.as_tensor(batch[:, 2], device=cfg.device), cfg.label_smoothing)


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


def class_batch_loss(
    model: SiameseNet, images: torch.Tensor, idx: np.ndarray, data: Prepared, run: RunConfig,
    gen: torch.Generator | None, embed: Any = None, classifier: CosineClassifier | None = None,
    cache: FrozenDescriptors | None = None,
) -> torch.Tensor:
    """All-pairs BCE of one class-balanced batch (pairing='all'); each image embedded once (looked up with
    a frozen tower's `cache`). With a `classifier`, plus id_loss x the CosFace identity loss on the same
    embeddings."""
    cfg = run.train
    if cache is not None:
        embed, x = (lambda _: cache(idx, gen)), None
    else:
        x = augmented(images, idx, run.preprocess, cfg, gen)
        if cfg.class_rotations:
            x = rotate_classes(x, data.train_labels[idx], gen)
        x = _network_input(x, run.preprocess, cfg)
    labels = torch.as_tensor(data.train_labels[idx], device=cfg.device)
    groups = None
    if run.data.within_group and data.train_groups is not None:
        groups = torch.as_tensor(data.train_groups[idx], device=cfg.device)
    with autocast(cfg.device, cfg.bf16):
        emb = (embed or model.embed)(x)
        loss = all_pairs_bce(model, emb, labels, groups, cfg.label_smoothing)
    if classifier is not None:
        loss = loss + cfg.id_loss * cosface(emb, labels, classifier, cfg.id_margin, cfg.id_scale)
    return loss


def train_epoch(
    model: SiameseNet, opt: torch.optim.Optimizer, data: Prepared, run: RunConfig, epoch: int,
    fixed: np.ndarray | FixedDistortions | None, embed: Any = None, classifier: CosineClassifier | None = None,
    cache: FrozenDescriptors | None = None,
) -> float:
    """One pass over the epoch's pairs; `embed` is the tower to run (torch.compile'd with --compile).

    `fixed`: the fixed pairs (fixed_pairs), or their distorted copies with stored transforms
    (distortions_per_pair > 0), shuffled anew each epoch; None draws fresh pairs.
    """
    cfg, pre = run.train, run.preprocess
    torch.manual_seed(seed_for(cfg.seed, epoch))
    rng = np.random.default_rng(seed_for(cfg.seed, epoch))
    augments = cfg.distortions or cfg.flip or cfg.class_rotations
    gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch) + 1) if augments else None
    stored = fixed if isinstance(fixed, FixedDistortions) else None
    fixed = stored.rows if stored is not None else fixed
    if cfg.pairing == "all":
        sampler = ClassBatches(data.train_labels, cfg.classes_per_batch, cfg.images_per_class,
                               data.train_groups, run.data.within_group)
        pairs = np.zeros((cfg.pairs_per_epoch, 3), dtype=np.int64)  # only its length sets the steps
    else:
        pairs = fixed[rng.permutation(len(fixed))] if fixed is not None else data.sample_train_pairs(
            cfg.pairs_per_epoch, rng, run.data.within_group)
    steps = math.ceil(len(pairs) / cfg.batch_size)
    total = steps * cfg.epochs
    model.train()
    keep_frozen_in_eval(model)
    losses = []
    bar = _progress(range(steps), cfg.progress, f"epoch {epoch + 1}/{cfg.epochs}")
    for s in bar:
        if cfg.regime == "adamw":
            lr = cosine_lr(epoch * steps + s, total, int(cfg.warmup_epochs * steps), cfg.lr)
            for g in opt.param_groups:
                g["lr"] = lr
        if cfg.pairing == "all":
            loss = class_batch_loss(model, data.train_images, sampler(rng), data, run, gen, embed, classifier, cache)
        else:
            batch = pairs[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            loss = pair_batch_loss(model, data.train_images, batch, pre, cfg, gen, embed, stored, cache)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if hasattr(bar, "set_postfix") and s % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    return float(np.mean(losses))


def _progress(it: Any, enabled: bool, desc: str) -> Any:
    """A bar on a terminal only; elsewhere `_report_epoch` prints one line per epoch."""
    if not (enabled and on_terminal()):
        return it
    return progress_bar(it, desc=desc, leave=False, dynamic_ncols=True)


# ---- validation and selection --------------------------------------------------------------------------

def validate(model: SiameseNet, data: Prepared, run: RunConfig, emb: torch.Tensor | None = None
             ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One-shot and verification metrics on the validation identities (fixed tasks and pairs by seed).
    `emb`: the validation images' embeddings when they are known (a frozen tower)."""
    cfg = run.train
    if emb is None:
        emb = embed_batches(model, data.val_images, run.preprocess, device=cfg.device, bf16=cfg.bf16)
    if data.val_pairs is not None:
        scores = score_indices(model, emb, data.val_pairs[:, 0], data.val_pairs[:, 1])
        labels = data.val_pairs[:, 2].astype(int)
        return metrics.verification_summary(labels, scores), labels, scores
    return evaluate_identities(
        model, run.preprocess, data.val_store, data.val_labels, n_way=cfg.val_way, n_tasks=cfg.val_tasks,
        n_pairs=cfg.val_pairs, seed=cfg.seed + 1, groups=data.val_groups, within_group=run.data.within_group,
        device=cfg.device, bf16=cfg.bf16, emb=emb)


def selection_score(summary: dict[str, Any], select: str) -> float:
    """Higher is better: one-shot accuracy (the paper), AUC, or minus the EER."""
    if select == "oneshot" and "oneshot_accuracy" in summary:
        return float(summary["oneshot_accuracy"])
    if select == "eer":
        return -float(summary["eer"])
    return float(summary["auc"])


# ---- the loop ------------------------------------------------------------------------------------------

def train(run: RunConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train, validate each epoch, keep the best epoch, calibrate its threshold; returns the model.json dict.

    The run folder is locked for the whole run: a second process training into it fails at once."""
    out, cfg = Path(out), run.train
    _check_before_work(run, out, resume)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with FolderLock(out, "training run"), threads.using(torch.get_num_threads()):  # validation too
        data = prepare_data(run.data, run.preprocess, cfg.seed, load_input, progress=cfg.progress,
                            val_way=cfg.val_way)
        torch.manual_seed(cfg.seed)
        model = create_model(run.model.name, preprocess=run.preprocess, **run.model.kwargs).to(cfg.device)
        init_meta = init_from(model, run, cfg.init) if cfg.init else {"lineage_identities": []}
        freeze_tower(model, cfg.freeze)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        classifier = CosineClassifier(int(data.train_labels.max()) + 1, model.embed_dim).to(cfg.device) \
            if cfg.id_loss else None
        extra = {"classifier": classifier} if classifier is not None else {}
        opt = make_optimizer(model, cfg, classifier)
        embed = torch.compile(model.embed) if cfg.compile else model.embed
        cache = val_emb = None
        if cfg.freeze == ALL:  # the tower never changes: each image's descriptor is computed once
            cache = FrozenDescriptors(model, data.train_images, run.preprocess, cfg.device, cfg.bf16, cfg.flip)
            val_emb = embed_frozen(model, data.val_images, run.preprocess, cfg.device, cfg.bf16)
        state = start(out, run, model, opt, resume, extra, init_meta.get("init_weights_sha256", ""))
        rows = rewrite_log(out, state.epoch)
        pairs = data.sample_train_pairs(cfg.pairs_per_epoch, np.random.default_rng(cfg.seed),
                                        run.data.within_group) if cfg.fixed_pairs else None
        fixed = fixed_distortions(pairs, cfg, run.preprocess) if cfg.distortions_per_pair else pairs
        base = {**_base_meta(run, data, model), **init_meta}
        if cfg.freeze == ALL and model.pretrained_tower:
            base["tower_weights"] = FROM_FACTORY  # store the head only: the factory rebuilds the tower
        for epoch in range(state.epoch, cfg.epochs if not state.stopped else 0):
            t0 = time.perf_counter()
            set_epoch_hparams(opt, cfg, epoch)
            loss = train_epoch(model, opt, data, run, epoch, fixed, embed, classifier, cache)
            summary, labels, scores = validate(model, data, run, val_emb)
            score = selection_score(summary, cfg.select)
            state.elapsed_s += time.perf_counter() - t0
            row = {"epoch": epoch + 1, "loss": loss, **{f"val_{k}": v for k, v in summary.items()},
                   "lr": opt.param_groups[0]["lr"], "elapsed_s": round(state.elapsed_s, 2)}
            rows.append(row)
            append_log(out, row)
            collapsed = metrics.is_collapsed(scores, labels)
            state.collapsed = state.collapsed + 1 if collapsed else 0
            if collapsed and float(np.std(scores)) < 1e-6:  # constant output: no point in waiting
                state.collapsed = COLLAPSE_EPOCHS
            improved = score > state.best and not collapsed
            if improved:
                state.best, state.best_epoch, state.bad_epochs = score, epoch + 1, 0
                save_model(out, model, {**base, "status": "training", "epoch": epoch + 1, "val": summary})
            else:
                state.bad_epochs += 1
            state.epoch = epoch + 1
            state.stopped = _stop_reason(state, cfg)
            save_state(out, model, opt, state, run, extra)
            plot_training(rows, out / CURVES)
            _report_epoch(row, cfg, improved)
            if state.stopped:
                break
        return _finish(out, run, data, state, base, rows)


def _check_before_work(run: RunConfig, out: Path, resume: bool) -> None:
    """Refuse what would fail later, before any data is read: an unusable --out, --resume with nothing to
    resume, options that cannot go together."""
    if run.data.pairs_file and run.train.pairing == "all":
        raise SiamfaceError("--pairing all needs an identity folder (--data); a pairs file gives fixed pairs")
    if resume and not out.is_dir():
        raise SiamfaceError(f"--resume {out}: no such run folder (nothing to resume); leave out --resume to start")
    check_output_folder(out)


def _stop_reason(state: TrainState, cfg: TrainConfig) -> str:
    """Why training stops after this epoch ('' to go on); saved so a resumed run does not train past it."""
    if state.collapsed >= COLLAPSE_EPOCHS:
        return "collapse"
    if state.bad_epochs >= cfg.patience:
        return "patience"
    if cfg.max_minutes and state.elapsed_s > 60 * cfg.max_minutes:
        return "max_minutes"
    return ""


def _report_epoch(row: dict[str, Any], cfg: TrainConfig, improved: bool) -> None:
    if not cfg.progress:
        return
    keys = [k for k in ("val_oneshot_accuracy", "val_auc", "val_eer") if k in row]
    vals = " ".join(f"{k[4:]}={row[k]:.4f}" for k in keys)
    print(f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  {vals}  {row['elapsed_s']:.0f}s"
          + ("  *" if improved else ""), file=sys.stderr, flush=True)


def _base_meta(run: RunConfig, data: Prepared, model: SiameseNet) -> dict[str, Any]:
    return {
        "siamface_version": __version__, "torch_version": torch.__version__, "created_by": "siamface train",
        **run.to_dict(), "split": data.split.to_dict(), "parameters": count_parameters(model),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "threads": torch.get_num_threads()},
    }


def _collapse_message(state: TrainState, rows: list[dict[str, Any]], out: Path) -> str:
    return (f"training collapsed by epoch {state.epoch}: validation scores are constant or at chance "
            f"(AUC {rows[-1]['val_auc']:.3f}); lower the learning rate or check the data. Log: {out / LOG}")


def below_chance(summary: dict[str, Any]) -> str:
    """Why validation says the model is no better than guessing ('' when it is)."""
    if summary.get("auc", 1.0) <= 0.5:
        return f"validation AUC {summary['auc']:.3f} is at or below chance (0.5)"
    way = summary.get("oneshot_way")
    if way and summary.get("oneshot_accuracy", 1.0) <= 1.0 / way:
        return (f"validation {way}-way one-shot accuracy {summary['oneshot_accuracy']:.3f} is at or below "
                f"chance ({1.0 / way:.3f})")
    return ""


def _finish(out: Path, run: RunConfig, data: Prepared, state: TrainState, base: dict[str, Any],
            rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Reload the best epoch, calibrate its threshold on validation pairs, write the final model.json.
    A model that collapsed, or whose validation is no better than chance, is kept with a warning."""
    collapsed = state.stopped == "collapse"
    if collapsed and state.best_epoch == 0:
        raise CollapseError(_collapse_message(state, rows, out))
    if state.best_epoch == 0:
        raise CollapseError(f"no epoch beat chance on validation; see {out / LOG}")
    # no hash check: a crash between the best weights and their JSON must not block the resume that
    # finishes the run; the JSON written below names the weights' hash again
    model = load_model(out, device=run.train.device, verify_hash=False).model
    summary, labels, scores = validate(model, data, run.replace_train(bf16=False))  # fp32, as verify scores
    meta = {**base, "status": "complete", "epoch": state.best_epoch, "epochs_run": state.epoch,
            "train_seconds": round(state.elapsed_s, 1), "val": summary,
            "calibration": calibrate(labels, scores, data.split.val, run.train.seed)}
    warning = below_chance(summary)
    if collapsed:
        warning = (f"training stopped at epoch {state.epoch} after a collapse "
                   f"({_collapse_message(state, rows, out)}); kept epoch {state.best_epoch}")
    if warning:
        meta["warning"] = warning
        warnings.warn(f"{out}: {warning}", stacklevel=3)
    save_model(out, model, meta)
    return meta
