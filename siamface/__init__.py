"""siamface: face verification with Siamese networks (Koch, Zemel & Salakhutdinov, 2015).

The public API. Nothing heavy happens at import time: names are imported lazily on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "siamface.models", "list_models": "siamface.models", "load_model": "siamface.checkpoint",
    "Verifier": "siamface.verify", "train": "siamface.training", "RunConfig": "siamface.config",
    "evaluate_pairs": "siamface.evaluate", "evaluate_oneshot": "siamface.evaluate",
    "run_evaluation": "siamface.evaluate", "ModelCard": "siamface.card",
    "ModelConfig": "siamface.config", "PreprocessConfig": "siamface.config",
    "DataConfig": "siamface.config", "TrainConfig": "siamface.config", "SiamfaceError": "siamface.errors",
    "ImageError": "siamface.errors", "ModelError": "siamface.errors", "NoFaceError": "siamface.errors",
    "Gallery": "siamface.gallery", "export_onnx": "siamface.export", "calibrate": "siamface.recalibrate",
    "Decision": "siamface.decision", "Verdict": "siamface.verify",
    "watch": "siamface.watch",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'siamface' has no attribute {name!r}")
