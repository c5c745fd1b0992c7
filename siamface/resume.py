"""Training state for `--resume`: what a run folder holds after each epoch, and how a run continues.

After every epoch the loop saves the weights, the optimiser and a `TrainState` (a new tensors file per
epoch, then the JSON naming it), so a process killed at any instant leaves either the previous epoch's
state or this one's. A run killed before its first state was saved restarts cleanly on `--resume`;
a folder holding a finished model without training state is never overwritten.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .card import META
from .config import RunConfig
from .errors import ModelError, SiamfaceError
from .files import atomic_save_tensors, atomic_write_bytes, atomic_write_json, remove_orphans, sha256_file

STATE, STATE_META, LOG = "state.safetensors", "state.json", "log.jsonl"
RUNTIME_ONLY = ("progress", "threads", "device", "compile")  # may change between a run and its resume


@dataclass
class TrainState:
    """Where a run stands after its last completed epoch."""

    epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    collapsed: int = 0
    elapsed_s: float = 0.0
    init_weights_sha256: str = ""
    stopped: str = ""  # why training stopped ('' while it goes on): never train past an early stop

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


# ---- run-diffing ---------------------------------------------------------------------------------------

def _comparable(run: RunConfig) -> dict[str, Any]:
    d = run.to_dict()
    d["train"] = {k: v for k, v in d["train"].items() if k not in RUNTIME_ONLY}
    return d


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def run_differences(a: RunConfig, b: RunConfig) -> list[str]:
    """Config fields (dotted) in which two runs differ, ignoring the runtime-only ones."""
    return _differences(_comparable(a), _comparable(b))


# ---- saving and loading --------------------------------------------------------------------------------

def save_state(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: TrainState, run: RunConfig,
               extra: dict[str, torch.nn.Module] | None = None, rebuilt: str = "") -> None:
    """Last-epoch state for resuming: weights and optimiser tensors in safetensors, the rest in JSON.
    `extra`: training-only modules (an identity classifier) saved under their own prefix. `rebuilt`: a prefix
    of the model's tensors not to save (a frozen pretrained tower: its factory rebuilds it, 22 MB saved)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items() if not (rebuilt and k.startswith(rebuilt))}
    for prefix, module in (extra or {}).items():
        tensors.update({f"extra.{prefix}.{k}": v for k, v in module.state_dict().items()})
    opt_sd = opt.state_dict()
    for idx, st in opt_sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    # A new file per epoch, named in the JSON written after it: a crash between the two writes leaves the
    # previous JSON pointing at the previous (intact) tensors.
    name = f"state-{state.epoch:04d}.safetensors"
    digest = atomic_save_tensors(out / name, tensors)
    atomic_write_json(out / STATE_META, {**asdict(state), "best": _json_float(state.best), "run": run.to_dict(),
                                         "param_groups": opt_sd["param_groups"], "tensors": name, "sha256": digest})
    for old in out.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _json_float(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)  # -inf before the first improvement: JSON has no infinities


def load_state(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
               extra: dict[str, torch.nn.Module] | None = None) -> TrainState:
    """Restore the last completed epoch; ModelError naming the file when the state is unreadable."""
    try:
        meta = json.loads((out / STATE_META).read_text())
        path = out / meta.get("tensors", STATE)
        if sha256_file(path) != meta["sha256"]:
            raise ModelError(f"{path}: SHA-256 differs from {STATE_META}; the training state is damaged")
        tensors = load_file(path)
    except (OSError, json.JSONDecodeError, KeyError, SafetensorError) as e:
        raise ModelError(f"{out / STATE_META}: unreadable training state ({e})") from e
    # tensors not saved (a frozen factory tower) keep the values the model was built with
    model.load_state_dict({**model.state_dict(), **{k[6:]: v for k, v in tensors.items() if k.startswith("model.")}})
    for prefix, module in (extra or {}).items():
        head = f"extra.{prefix}."
        try:
            module.load_state_dict({k[len(head):]: v for k, v in tensors.items() if k.startswith(head)})
        except RuntimeError as e:  # e.g. identities added to the data folder since the run started
            raise ModelError(f"{path}: the saved {prefix} does not fit this run ({str(e).splitlines()[0]}); "
                             "was the training data changed?") from e
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return TrainState.from_dict({**meta, "best": float(meta["best"])})


def rewrite_log(out: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """Keep the log lines of completed epochs only (a crash may have left one more, or half of one)."""
    path = out / LOG
    lines = path.read_text().splitlines() if path.exists() else []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: nothing after it was completed either
    rows = [r for r in rows if r["epoch"] <= upto_epoch]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return rows


def append_log(out: Path, row: dict[str, Any]) -> None:
    with open(out / LOG, "a") as f:
        f.write(json.dumps(row) + "\n")


# ---- starting or resuming ------------------------------------------------------------------------------

def _unfinished_first_epoch(out: Path) -> bool:
    """True when the folder holds only what a run killed before its first saved state leaves: a log, or
    a model.json still in status 'training'."""
    if not (out / META).exists():
        return True
    try:
        return json.loads((out / META).read_text()).get("status") == "training"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def start(out: Path, run: RunConfig, model: torch.nn.Module, opt: torch.optim.Optimizer, resume: bool,
          extra: dict[str, torch.nn.Module], init_sha: str = "") -> TrainState:
    """A fresh state, or the saved one after checking the run is the same. Call with the folder locked."""
    remove_orphans(out)
    fresh = TrainState(init_weights_sha256=init_sha)
    if not (out / STATE_META).exists():
        leftovers = (out / META).exists() or ((out / LOG).exists() and (out / LOG).stat().st_size > 0)
        if not leftovers:
            return fresh
        if not _unfinished_first_epoch(out):
            raise SiamfaceError(f"{out}: holds a model but no training state; choose another run folder", option="out")
        if not resume:
            raise SiamfaceError(f"{out}: holds a run that stopped before its first epoch was saved; resume it to "
                                "start it again, or choose another run folder", option="resume")
        for name in (META, LOG):  # nothing of that run can be continued: start it again, cleanly
            (out / name).unlink(missing_ok=True)
        return fresh
    if not resume:
        raise SiamfaceError(f"{out}: a run already exists there; resume it to continue it, or choose another run "
                            "folder", option="resume")
    saved = json.loads((out / STATE_META).read_text())
    diff = run_differences(RunConfig.from_dict(saved["run"]), run)
    if saved.get("init_weights_sha256", init_sha) != init_sha:
        diff.append(f"the weights of the starting model (init) {run.train.init} (SHA-256 {init_sha[:12]}, started from "
                    f"{saved['init_weights_sha256'][:12]})")
    if diff:
        raise SiamfaceError(f"{out / STATE_META}: the saved run differs in {', '.join(diff)}; cannot resume")
    return load_state(out, model, opt, extra)
