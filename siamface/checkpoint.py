"""Checkpoints: safetensors weights + a JSON of every config, written atomically, loaded without pickle.

A run folder holds `model.safetensors` (the best weights) and `model.json` (model, preprocessing, training
and data configs, the split, the calibrated threshold and its provenance, metrics, version, and the
SHA-256 of the weights file, so a JSON never describes other weights than the ones beside it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from .card import META, ModelCard
from .config import PreprocessConfig
from .errors import ModelError
from .files import atomic_save_tensors, atomic_write_json, sha256_file
from .models import SiameseNet, create_model, state_dict_mismatch

WEIGHTS = "model.safetensors"
FROM_FACTORY = "factory"  # model.json "tower_weights": the tower is the factory's shipped one, not stored here


def save_model(run_dir: Path, model: SiameseNet, card: ModelCard | dict[str, Any]) -> ModelCard:
    """Write the weights, then the card (`card.to_dict()`, naming their hash) as model.json; a crash between
    leaves the old pair valid or is detected at load time by the hash. A card may also be given as its JSON
    (without the hash); either way it is validated before it is written. Returns the card as written."""
    tower = card.tower_weights if isinstance(card, ModelCard) else card.get("tower_weights", "")
    state = model.state_dict()
    if tower == FROM_FACTORY:  # a frozen pretrained tower: its factory rebuilds it
        state = {k: v for k, v in state.items() if not k.startswith("tower.")}
    digest = atomic_save_tensors(run_dir / WEIGHTS, state)
    if not isinstance(card, ModelCard):
        card = ModelCard.from_dict({**card, "weights_sha256": digest}, run_dir)
    meta = replace(card, path=run_dir, weights_sha256=digest).to_dict()
    written = ModelCard.from_dict(meta, run_dir)
    atomic_write_json(run_dir / META, meta)
    return written


@dataclass
class LoadedModel:
    """A network rebuilt from a run folder, with its validated model card."""

    model: SiameseNet
    card: ModelCard

    @property
    def path(self) -> Path:
        return self.card.path

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.card.preprocess

    @property
    def threshold(self) -> float | None:
        return self.card.threshold


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "dlib-twin"  # verify's default: dlib's descriptor under a head trained on LFW


def default_model_path() -> Path:
    """The default face model shipped inside the package: dlib's face descriptor (converted, CC0) under the
    Siamese L1 head trained by siamface on LFW people, with its calibrated operating points."""
    if not (DEFAULT_MODEL / META).is_file():
        raise ModelError(f"no --model given and no model is shipped in this install ({DEFAULT_MODEL} is missing)")
    return DEFAULT_MODEL


def shipped_models() -> list[str]:
    """Names of the models inside the package (siamface/weights/<name>), usable wherever a run folder is."""
    return sorted(d.name for d in WEIGHTS_DIR.iterdir() if (d / META).is_file()) if WEIGHTS_DIR.is_dir() else []


def resolve_run(path: str | Path) -> Path:
    """Accept a run folder, its model.json or its model.safetensors, or the bare name of a shipped model
    ('dlib-twin', 'dlib-resnet', 'face-prior', 'lfw-view1') when no such local path exists; return the folder."""
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


def read_card(path: str | Path) -> ModelCard:
    """The validated model card of a run folder or shipped model (no weights read)."""
    return ModelCard.read(resolve_run(path))


def load_model(path: str | Path, device: str = "cpu", verify_hash: bool = True) -> LoadedModel:
    """Rebuild a model from a run folder without any flag; refuses mismatched or tampered weights.

    verify_hash=False only for training's own reload of the weights it just wrote (a crash between the
    weights and their JSON must not block the resume that finishes the run)."""
    card = read_card(path)
    weights = card.path / WEIGHTS
    if verify_hash and sha256_file(weights) != card.weights_sha256:
        raise ModelError(f"{weights}: SHA-256 differs from {META}; the weights were changed or half-written")
    try:
        model = create_model(card.model.name, preprocess=card.preprocess, **card.model.kwargs)
    except (ModelError, ValueError) as e:
        raise ModelError(f"{card.file}: cannot build model {card.model.name!r} for this preprocessing ({e})") from e
    from_factory = card.tower_weights == FROM_FACTORY
    if from_factory and not model.pretrained_tower:
        raise ModelError(f"{card.file}: tower_weights 'factory', but {card.model.name} {card.model.kwargs} builds no "
                         "pretrained tower")
    try:
        state = load_file(weights, device="cpu")
        if from_factory:
            state = {**{f"tower.{k}": v for k, v in model.tower.state_dict().items()}, **state}
        if problem := state_dict_mismatch(model, state):
            raise ModelError(f"{card.file}: the architecture it describes ({card.model.name} {card.model.kwargs} at "
                             f"{card.preprocess.size}px, {card.preprocess.channels} channel(s)) does not fit the "
                             f"weights in {WEIGHTS}: {problem}")
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise ModelError(f"{weights}: incompatible with model {card.model.name!r} ({str(e).splitlines()[0]})") from e
    return LoadedModel(model.to(device).eval(), card)
