"""Lineage: which identities a model has seen, through every model it was fine-tuned from.

A fine-tuned model (`train --init X`) records X's weights hash and every identity X and X's own ancestors
trained or selected on. Evaluation refuses all of them (`check_no_leakage`), so a model can never be scored
on people any of its ancestors learned from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .card import ModelCard
from .checkpoint import WEIGHTS_DIR, load_model, read_card, resolve_run
from .config import ModelConfig, PreprocessConfig, RunConfig
from .data import assert_disjoint
from .errors import SiamfaceError
from .models import SiameseNet


def check_no_leakage(card: ModelCard, evaluated: set[str], what: str, leaf: bool = False) -> None:
    """LeakageError when an identity the model (or an ancestor) trained or selected on is being evaluated.

    leaf: `evaluated` holds folder names of images (pairs files), so compare the last path component of the
    model's identities (trained with --data lfw, an identity is 'deepfunneled/Name'; a pairs file says 'Name').
    """
    seen = card.seen_identities()
    if leaf:
        seen = {i.rsplit("/", 1)[-1] for i in seen}
    assert_disjoint(**{"model training/validation": seen, what: evaluated})


def init_defaults(path: str) -> tuple[ModelConfig, PreprocessConfig, str]:
    """What a fine-tuning run inherits from `--init path` unless told otherwise: the model config, the
    preprocessing, and how to record the path (a shipped model by its name, anything else absolute)."""
    folder = resolve_run(path).resolve()
    card = read_card(folder)  # the weights are loaded (and hash-checked) once, by init_from
    stored = folder.name if folder.parent == WEIGHTS_DIR.resolve() and str(path) == folder.name else str(folder)
    return card.model, card.preprocess, stored


def init_from(model: SiameseNet, run: RunConfig, path: str | Path) -> dict[str, Any]:
    """Start from a trained model's weights (fine-tuning): same architecture and input, and factory options
    (kwargs) that leave every weight's shape as it was. Returns its provenance for model.json: the SHA-256 of
    its weights and every identity it (and its own ancestors) trained or selected on."""
    src = load_model(path)
    card = src.card
    if card.model.name != run.model.name or (card.preprocess.size, card.preprocess.channels) != (
            run.preprocess.size, run.preprocess.channels):
        raise SiamfaceError(f"{path}: the starting model (init) is {card.model.name} at {card.preprocess.size}px and "
                            f"{card.preprocess.channels} channel(s), this run is {run.model.name} at "
                            f"{run.preprocess.size}px and {run.preprocess.channels}")
    try:
        model.load_state_dict(src.model.state_dict())
    except RuntimeError as e:
        changed = sorted(k for k in {**card.model.kwargs, **run.model.kwargs}
                         if card.model.kwargs.get(k) != run.model.kwargs.get(k))
        raise SiamfaceError(f"{path}: its weights do not fit this run's model (model kwargs that differ: "
                            f"{', '.join(changed) or 'none'}): {str(e).splitlines()[0]}") from e
    return {"init_weights_sha256": card.weights_sha256, "lineage_identities": sorted(card.seen_identities())}
