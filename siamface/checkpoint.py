"""Checkpoints: safetensors weights + a JSON of every config, written atomically, loaded without pickle.

A run folder holds `model.safetensors` (the best weights) and `model.json` (model, preprocessing, training
and data configs, the split, the calibrated threshold and its provenance, metrics, version, and the
SHA-256 of the weights file, so a JSON never describes other weights than the ones beside it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, PreprocessConfig, from_dict
from .errors import ModelError
from .models import SiameseNet, create_model, state_dict_mismatch

WEIGHTS, META = "model.safetensors", "model.json"
STATE, STATE_META, LOG = "state.safetensors", "state.json", "log.jsonl"  # training state for --resume


def _publish(tmp: str, path: Path) -> None:
    """Give the temp file the usual permissions (mkstemp makes 0600), then rename it over `path`."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Save tensors as safetensors atomically; returns the file's SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        digest = sha256_file(Path(tmp))
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(run_dir: Path, model: SiameseNet, meta: dict[str, Any]) -> None:
    """Write the weights, then the JSON that names their hash (a crash between leaves the old pair valid
    or is detected at load time by the hash)."""
    digest = atomic_save_tensors(run_dir / WEIGHTS, model.state_dict())
    atomic_write_json(run_dir / META, {**meta, "weights_sha256": digest})


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with everything its JSON recorded."""

    model: SiameseNet
    preprocess: PreprocessConfig
    meta: dict[str, Any]
    path: Path

    @property
    def threshold(self) -> float | None:
        cal = self.meta.get("calibration") or {}
        return cal.get("threshold")


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = WEIGHTS_DIR / "lfw-view1"  # the default face model of verify
FACE_PRIOR = WEIGHTS_DIR / "face-prior"  # every LFW person: a starting point for fine-tuning (train --init)


def default_model_path() -> Path:
    """The face model shipped inside the package (trained on LFW View 1 DevTrain people only)."""
    if not (SHIPPED / META).is_file():
        raise ModelError(f"no --model given and no model is shipped in this install ({SHIPPED} is missing)")
    return SHIPPED


def shipped_models() -> list[str]:
    """Names of the models inside the package (siamface/weights/<name>), usable wherever a run folder is."""
    return sorted(d.name for d in WEIGHTS_DIR.iterdir() if (d / META).is_file()) if WEIGHTS_DIR.is_dir() else []


def resolve_run(path: str | Path) -> Path:
    """Accept a run folder, its model.json or its model.safetensors, or the bare name of a shipped model
    ('face-prior', 'lfw-view1') when no such local path exists; return the folder."""
    p = Path(path)
    if not p.exists() and str(path) in shipped_models():
        p = WEIGHTS_DIR / str(path)
    if p.is_file() and p.name in (WEIGHTS, META):
        p = p.parent
    if not p.is_dir():
        raise ModelError(f"{path}: no such model (expected a run folder with {META} and {WEIGHTS})")
    for name in (META, WEIGHTS):
        if not (p / name).is_file():
            raise ModelError(f"{p / name}: missing (not a siamface model folder)")
    return p


def read_model_json(run: Path) -> tuple[dict[str, Any], ModelConfig, PreprocessConfig]:
    """A run folder's model.json and the model and preprocessing configs it describes (no weights read)."""
    try:
        meta = json.loads((run / META).read_text())
        mcfg = from_dict(ModelConfig, meta["model"])
        pre = from_dict(PreprocessConfig, meta["preprocess"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelError(f"{run / META}: not a valid siamface model description ({e})") from e
    if not isinstance(mcfg.kwargs, dict):
        raise ModelError(f"{run / META}: model.kwargs must be an object, got {type(mcfg.kwargs).__name__}")
    return meta, mcfg, pre


def load_model(path: str | Path, device: str = "cpu", verify_hash: bool = True) -> LoadedModel:
    """Rebuild a model from a run folder without any flag; refuses mismatched or tampered weights."""
    run = resolve_run(path)
    meta, mcfg, pre = read_model_json(run)
    if verify_hash and meta.get("weights_sha256") and sha256_file(run / WEIGHTS) != meta["weights_sha256"]:
        raise ModelError(f"{run / WEIGHTS}: SHA-256 differs from {META}; the weights were changed or half-written")
    try:
        model = create_model(mcfg.name, preprocess=pre, **mcfg.kwargs)
    except (ModelError, ValueError) as e:
        raise ModelError(f"{run / META}: cannot build model {mcfg.name!r} for this preprocessing ({e})") from e
    try:
        state = load_file(run / WEIGHTS, device="cpu")
        if problem := state_dict_mismatch(model, state):
            raise ModelError(f"{run / META}: the architecture it describes ({mcfg.name} {mcfg.kwargs} at {pre.size}px, "
                             f"{pre.channels} channel(s)) does not fit the weights in {WEIGHTS}: {problem}")
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise ModelError(f"{run / WEIGHTS}: incompatible with model {mcfg.name!r} ({str(e).splitlines()[0]})") from e
    return LoadedModel(model.to(device).eval(), pre, meta, run)


# ---- training state for --resume -----------------------------------------------------------------------

def save_state(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any],
               extra: dict[str, torch.nn.Module] | None = None) -> None:
    """Last-epoch state for --resume: weights and optimiser tensors in safetensors, the rest in JSON.
    `extra`: training-only modules (an identity classifier) saved under their own prefix."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for prefix, module in (extra or {}).items():
        tensors.update({f"extra.{prefix}.{k}": v for k, v in module.state_dict().items()})
    opt_sd = opt.state_dict()
    for idx, st in opt_sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    # A new file per epoch, named in the JSON written after it: a crash between the two writes leaves the
    # previous JSON pointing at the previous (intact) tensors.
    name = f"state-{int(state['epoch']):04d}.safetensors"
    digest = atomic_save_tensors(out / name, tensors)
    atomic_write_json(out / STATE_META, {**state, "param_groups": opt_sd["param_groups"], "tensors": name,
                                         "sha256": digest})
    for old in out.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_state(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
               extra: dict[str, torch.nn.Module] | None = None) -> dict[str, Any]:
    """Restore the last completed epoch; ModelError naming the file when the state is unreadable."""
    try:
        meta = json.loads((out / STATE_META).read_text())
        path = out / meta.get("tensors", STATE)
        if sha256_file(path) != meta["sha256"]:
            raise ModelError(f"{path}: SHA-256 differs from {STATE_META}; the training state is damaged")
        tensors = load_file(path)
    except (OSError, json.JSONDecodeError, KeyError, SafetensorError) as e:
        raise ModelError(f"{out / STATE_META}: unreadable training state ({e})") from e
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
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
    return meta


def rewrite_log(out: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """Keep the log lines of completed epochs only (a crash may have left one more)."""
    path = out / LOG
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    rows = [r for r in rows if r["epoch"] <= upto_epoch]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return rows
