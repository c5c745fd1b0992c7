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

import platform
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, distributed, metrics, threads
from .calibration import PairScores, all_pairs
from .card import META, Calibration, Lineage, ModelCard, Provenance, calibrate
from .checkpoint import FROM_FACTORY, load_model, read_card, save_model
from .config import RunConfig, TrainConfig
from .data.prepare import Prepared, prepare_data
from .distributed import Shard
from .embed import embed_batches, score_indices
from .errors import CollapseError, SiamfaceError
from .evaluate import evaluate_identities
from .files import FolderLock, check_output_folder
from .freeze import ALL, FrozenDescriptors, embed_frozen, freeze_tower, keep_frozen_in_eval
from .lineage import init_from
from .losses import CosineClassifier
from .models import SiameseNet, count_parameters, create_model
from .optim import cosine_lr, make_optimizer, seed_for, set_epoch_hparams
from .plots import plot_training
from .preprocess import load_input
from .progress import on_terminal, progress_bar
from .resume import LOG, STATE_META, TrainState, append_log, load_state, rewrite_log, save_state, start
from .step import FixedDistortions, Step, affine_for, augmented, fixed_distortions, make_step, rotate_classes

__all__ = ["FixedDistortions", "Step", "affine_for", "augmented", "fixed_distortions", "make_step", "rotate_classes",
           "train", "train_epoch", "validate"]

CURVES = "curves.png"
COLLAPSE_EPOCHS = 3
MAX_CALIBRATION_PAIRS = 2_000_000  # validation pairs thresholds are calibrated on, at most


# ---- one epoch -----------------------------------------------------------------------------------------

def train_epoch(step: Step, opt: torch.optim.Optimizer, epoch: int) -> float:
    """One pass over the epoch's batches (drawn from (seed, epoch) alone); returns the mean loss. With several
    processes the gradients are averaged over the ranks before each optimiser step."""
    cfg = step.cfg
    torch.manual_seed(seed_for(cfg.seed, epoch))
    augments = cfg.distortions or cfg.flip or cfg.class_rotations
    gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch) + 1) if augments else None
    batches = step.batches(epoch)
    total = len(batches) * cfg.epochs
    step.model.train()
    keep_frozen_in_eval(step.model)
    losses = []
    bar = _progress(range(len(batches)), cfg.progress and step.shard.main, f"epoch {epoch + 1}/{cfg.epochs}")
    for s in bar:
        if cfg.regime == "adamw":
            lr = cosine_lr(epoch * len(batches) + s, total, int(cfg.warmup_epochs * len(batches)), cfg.lr)
            for g in opt.param_groups:
                g["lr"] = lr
        loss = step.loss(batches[s], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        step.shard.sync_grads(opt)
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


def validation_pairs(model: SiameseNet, data: Prepared, run: RunConfig, emb: torch.Tensor, labels: np.ndarray,
                     scores: np.ndarray) -> PairScores:
    """The pairs thresholds are calibrated on: every pair of validation images (embeddings `emb`; a seeded
    sample beyond MAX_CALIBRATION_PAIRS) with the identity of each side, so each point's interval counts
    people; a validation pairs file gives its own pairs (each its own cluster: the file names no identities)."""
    if data.val_pairs is not None:
        return PairScores.of(scores, labels, kind="validation")
    return all_pairs(lambda i, j: score_indices(model, emb, i, j), data.val_labels, kind="validation",
                     max_pairs=MAX_CALIBRATION_PAIRS, seed=run.train.seed + 2)


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

    The run folder is locked for the whole run: a second process training into it fails at once. Started
    by torchrun, each process is one rank (siamface.distributed); rank 0 alone locks and writes the folder,
    which every rank reads on --resume (on several machines: a shared filesystem)."""
    out = Path(out)
    shard, device = distributed.start(run.train.device)
    run = run.replace_train(device=device) if device != run.train.device else run
    try:
        if shard.main:
            _check_before_work(run, out, resume)
            with FolderLock(out, "training run"):
                return _train(run, out, resume, shard)
        return _train(run, out, resume, shard)
    finally:
        distributed.stop(shard)


def _train(run: RunConfig, out: Path, resume: bool, shard: Shard) -> dict[str, Any]:
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    with threads.using(torch.get_num_threads()):  # its validation passes too (siamface.threads)
        return _train_run(run, out, resume, shard)


def _train_run(run: RunConfig, out: Path, resume: bool, shard: Shard) -> dict[str, Any]:
    cfg, main = run.train, shard.main
    data = prepare_data(run.data, run.preprocess, cfg.seed, load_input, progress=cfg.progress and main,
                        val_way=cfg.val_way)
    torch.manual_seed(cfg.seed)
    model = create_model(run.model.name, preprocess=run.preprocess, **run.model.kwargs).to(cfg.device)
    lineage = _lineage(model, run)
    freeze_tower(model, cfg.freeze)
    if shard.world > 1:
        distributed.globalize_batch_norm(model)  # the statistics of the whole batch, as one process has them
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    classifier = CosineClassifier(int(data.train_labels.max()) + 1, model.embed_dim).to(cfg.device) \
        if cfg.id_loss else None
    extra = {"classifier": classifier} if classifier is not None else {}
    opt = make_optimizer(model, cfg, classifier)
    cache = val_emb = None
    if cfg.freeze == ALL:  # the tower never changes: each image's descriptor is computed once
        cache = FrozenDescriptors(model, data.train_images, run.preprocess, cfg.device, cfg.bf16, cfg.flip)
        val_emb = embed_frozen(model, data.val_images, run.preprocess, cfg.device, cfg.bf16)
    state = _start(out, run, model, opt, resume, extra, lineage.init_weights_sha256, shard)
    rows = rewrite_log(out, state.epoch) if main else []
    step = make_step(run, model, data, torch.compile(model.embed) if cfg.compile else None, classifier, cache, shard)
    card = _card(out, run, data, model, lineage, shard)
    for epoch in range(state.epoch, cfg.epochs if not state.stopped else 0):
        t0 = time.perf_counter()
        set_epoch_hparams(opt, cfg, epoch)
        loss = train_epoch(step, opt, epoch)
        summary, labels, scores = validate(model, data, run, val_emb)  # every rank: the same weights, same answer
        score = selection_score(summary, cfg.select)
        state.elapsed_s += time.perf_counter() - t0
        row = {"epoch": epoch + 1, "loss": loss, **{f"val_{k}": v for k, v in summary.items()},
               "lr": opt.param_groups[0]["lr"], "elapsed_s": round(state.elapsed_s, 2)}
        rows.append(row)
        collapsed = metrics.is_collapsed(scores, labels)
        state.collapsed = state.collapsed + 1 if collapsed else 0
        if collapsed and float(np.std(scores)) < 1e-6:  # constant output: no point in waiting
            state.collapsed = COLLAPSE_EPOCHS
        improved = score > state.best and not collapsed
        if improved:
            state.best, state.best_epoch, state.bad_epochs = score, epoch + 1, 0
        else:
            state.bad_epochs += 1
        state.epoch = epoch + 1
        state.stopped = _stop_reason(state, cfg)
        state = shard.agree(state)  # rank 0's clock decides max_minutes for every rank
        if main:
            append_log(out, row)
            if improved:
                save_model(out, model, replace(card, status="training", epoch=epoch + 1, val=summary))
            save_state(out, model, opt, state, run, extra,
                       rebuilt="tower." if card.tower_weights == FROM_FACTORY else "")
            plot_training(rows, out / CURVES)
            _report_epoch(row, cfg, improved)
        if state.stopped:
            break
    if not main:  # rank 0 reloads the best epoch, calibrates it and writes the final model.json
        shard.barrier()
        return read_card(out).to_dict()
    try:
        return _finish(out, run, data, state, card, rows)
    finally:
        shard.barrier()


def _lineage(model: SiameseNet, run: RunConfig) -> Lineage:
    """Load `--init`'s weights into the model and record where they came from (nothing without --init)."""
    if not run.train.init:
        return Lineage()
    got = init_from(model, run, run.train.init)
    return Lineage(run.train.init, got["init_weights_sha256"], tuple(got["lineage_identities"]))


def _start(out: Path, run: RunConfig, model: SiameseNet, opt: torch.optim.Optimizer, resume: bool,
           extra: dict[str, Any], init_sha: str, shard: Shard) -> TrainState:
    """Rank 0 starts or resumes the run (resume.start); the other ranks then load the same saved state, and
    every rank takes rank 0's weights."""
    state = start(out, run, model, opt, resume, extra, init_sha) if shard.main else TrainState()
    if shard.world == 1:
        return state
    shard.barrier()
    if not shard.main and resume and (out / STATE_META).exists():
        state = load_state(out, model, opt, extra)
    shard.broadcast(model)
    for module in extra.values():
        shard.broadcast(module)
    return shard.agree(state)


def _check_before_work(run: RunConfig, out: Path, resume: bool) -> None:
    """Refuse what would fail later, before any data is read: an unusable --out, --resume with nothing to
    resume, options that cannot go together."""
    if run.data.pairs_file and run.train.pairing == "all":
        raise SiamfaceError("pairing 'all' needs an identity folder (data.root); a pairs file gives fixed pairs")
    if resume and not out.is_dir():
        raise SiamfaceError(f"{out}: no such run folder, so nothing to resume; start the run without resuming")
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


def _card(out: Path, run: RunConfig, data: Prepared, model: SiameseNet, lineage: Lineage, shard: Shard) -> ModelCard:
    """The run's model card before its first epoch: every config, the split, the lineage, who made it where."""
    machine = {"platform": platform.platform(), "processor": platform.processor(), "threads": torch.get_num_threads()}
    if shard.world > 1:
        machine["processes"] = shard.world
    made = Provenance(__version__, torch.__version__, "siamface train", count_parameters(model), machine)
    return ModelCard(out, run.model, run.preprocess, "", "training", 0, run.data, run.train,
                     {k: tuple(v) for k, v in data.split.to_dict().items()}, lineage, provenance=made,
                     tower_weights=FROM_FACTORY if run.train.freeze == ALL and model.pretrained_tower else "")


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


def _finish(out: Path, run: RunConfig, data: Prepared, state: TrainState, card: ModelCard,
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
    emb = embed_batches(model, data.val_images, run.preprocess, device=run.train.device)  # fp32, as verify scores
    summary, labels, scores = validate(model, data, run.replace_train(bf16=False), emb)
    cal = calibrate(validation_pairs(model, data, run, emb, labels, scores), data.split.val, run.train.seed)
    warning = below_chance(summary)
    if collapsed:
        warning = (f"training stopped at epoch {state.epoch} after a collapse "
                   f"({_collapse_message(state, rows, out)}); kept epoch {state.best_epoch}")
    if warning:
        warnings.warn(f"{out}: {warning}", stacklevel=4)
    made = replace(card.provenance, epochs_run=state.epoch, train_seconds=round(state.elapsed_s, 1))
    final = replace(card, status="complete", epoch=state.best_epoch, val=summary, warning=warning, provenance=made,
                    calibration=Calibration.from_dict(cal, f"{out / META}: calibration"))
    return save_model(out, model, final).to_dict()
