"""One-shot verification of photos with a trained model and its calibrated threshold.

`Verifier` loads a model once, embeds each distinct image once, scores pairs with the Siamese head and
decides with the threshold calibrated on held-out validation identities at the end of training (or an
explicit override), always reporting where the threshold came from.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .card import EER
from .checkpoint import WEIGHTS_DIR, LoadedModel, default_model_path, load_model
from .config import PreprocessConfig
from .decision import Decision, from_point, given
from .embed import embed_batches, probability, store_for
from .errors import ModelError, SiamfaceError
from .models import SiameseNet
from .onnx_runtime import onnx_tower

Image = str | Path | np.ndarray


@dataclass
class Verdict:
    """The answer to 'same person?' with everything needed to trust it: the probability, the decision's
    threshold, the operating point and the false-accept rate it stands for (with its 95% interval), which
    calibration chose it, and every face used. `name`, `photos`, `aggregate`: set when verified against a
    person enrolled in a gallery."""

    same: bool
    probability: float
    threshold: float
    threshold_source: str
    model: str
    elapsed_ms: float
    faces: list[dict[str, Any]] = field(default_factory=list)
    operating_point: str = EER
    far: float | None = None
    far_interval: list[float] | None = None
    fpir: float | None = None
    fpir_interval: list[float] | None = None
    calibration: str = ""
    name: str | None = None
    photos: int | None = None
    aggregate: str | None = None

    @classmethod
    def of(cls, decision: Decision, p: float, model: str, elapsed_ms: float, faces: list[dict[str, Any]],
           **extra: Any) -> Verdict:
        return cls(same=decision.accepts(p), probability=p, model=model, elapsed_ms=elapsed_ms, faces=faces,
                   **decision.fields(), **extra)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("name", "photos", "aggregate"):
            if d[key] is None:
                d.pop(key)
        return d


def face_preprocess(pre: PreprocessConfig, detect: bool = True, select: str | None = None) -> PreprocessConfig:
    """The model's preprocessing with verify-time face options: `detect=False` takes each input as an
    already cropped face (centre square at the model's crop, no detector and no eye alignment, so the
    input must be framed like the model's aligned faces); `select` picks among several detected faces
    ("largest" or "central"). The eye positions and margins of alignment are never changed."""
    if select is not None and select not in ("largest", "central"):
        raise ValueError(f"select must be 'largest' or 'central', got {select!r}")
    if select is not None and not detect:
        raise SiamfaceError("select chooses among detected faces; it cannot go with detect=False (inputs taken as "
                            "face crops)")
    if not pre.detects:
        if select is not None:
            raise SiamfaceError("this model takes whole images (no face detection), so select does not apply")
        return pre
    align = pre.align if detect else replace(pre.align, detector="none")
    return replace(pre, align=align if select is None else replace(align, select=select))


def inference_net(model: SiameseNet) -> SiameseNet:
    """The model to embed with: a tower that offers a `fused()` inference copy (dlib's ResNet, its affines
    folded into the convolutions: the same function, about twice as fast) is swapped for it; the loaded
    model itself is left as it was."""
    fused = getattr(model.tower, "fused", None)
    if fused is None:
        return model
    net = copy.copy(model)
    net._modules = dict(model._modules)
    net.tower = fused()
    return net


def model_decision(loaded: LoadedModel, threshold: float | None = None, far: float | None = None) -> Decision:
    """A model's decision: a given threshold, its point at FAR `far`, or its default point."""
    if threshold is not None and far is not None:
        raise SiamfaceError("give a threshold or an operating point (far), not both")
    if threshold is not None:
        return given(threshold)  # a Decision refuses a threshold that is not a probability (NaN included)
    cal = loaded.card.calibration
    if cal is None:
        raise ModelError(f"{loaded.path}: the model has no calibrated threshold; give a threshold")
    try:
        point = cal.point(far)
    except ModelError as e:
        raise ModelError(f"{loaded.card.file}: {e}") from None
    return from_point(point, f"model {model_label(loaded)}")


def model_label(loaded: LoadedModel) -> str:
    """How answers name a model: a shipped one by its name, any other by its folder."""
    path = Path(loaded.path)
    return path.name if path.resolve().parent == WEIGHTS_DIR.resolve() else str(path)


class Verifier:
    """Verify pairs of images with one loaded model: `Verifier("runs/att").verify("a.jpg", "b.jpg")`.

    detect=False: inputs are already face crops (no detector, no NoFaceError); select: which face of a
    photo with several is used ("largest" or "central"; default: the model's setting); far: decide at the
    threshold calibrated for this false-accept rate (1e-2, 1e-3, 1e-4...) instead of the model's default point;
    runtime: "torch", or "onnx" to embed with onnxruntime (siamface.onnx_runtime; the `onnx` extra)."""

    def __init__(self, model: str | Path | LoadedModel | None = None, threshold: float | None = None,
                 device: str = "cpu", detect: bool = True, select: str | None = None,
                 far: float | None = None, runtime: str = "torch") -> None:
        if model is None:
            model = default_model_path()
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model, device=device)
        self.net = inference_net(self.loaded.model) if runtime == "torch" else onnx_tower(self.loaded, runtime)
        self.preprocess = face_preprocess(self.loaded.preprocess, detect, select)
        self.device = device
        self.explicit = threshold is not None or far is not None  # a gallery then decides with it, not by FPIR
        self.note = ""  # what every decision of this verifier adds to its provenance
        if self.preprocess.align != self.loaded.preprocess.align and not detect:
            self.note = ("note: inputs are taken as face crops (detect=False), not detected and aligned as the "
                         "faces this threshold was calibrated on")
        self.decision = self.noted(model_decision(self.loaded, threshold, far))

    def noted(self, decision: Decision) -> Decision:
        """A decision with this verifier's note (face crops taken whole) in its provenance."""
        return decision.with_note(self.note) if self.note else decision

    @property
    def threshold(self) -> float:
        return self.decision.threshold

    @property
    def threshold_source(self) -> str:
        return self.decision.source

    @property
    def operating_point(self) -> str:
        return self.decision.operating_point

    @property
    def name(self) -> str:
        return str(self.loaded.path)

    def inputs(self, images: list[Image]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Decode (and align, when the model's preprocessing says so) each image to uint8 (N, C, S, S), with
        each one's face report: the road every photo takes (`photo_faces.faces_for`)."""
        from .photo_faces import faces_for, photo_of

        faces = [faces_for(photo_of(im), self.preprocess)[0] for im in images]
        return torch.from_numpy(np.stack([f.input for f in faces])), [f.report for f in faces]

    def embed(self, images: list[Image]) -> torch.Tensor:
        """Embeddings (N, D) of images; a file named twice is decoded and embedded once."""
        keys = [str(Path(im).resolve()) if isinstance(im, (str, Path)) else i for i, im in enumerate(images)]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        unique = sorted(set(first.values()))
        x, _ = self.inputs([images[i] for i in unique])
        emb = embed_batches(self.net, x, self.preprocess, device=self.device)
        row = {i: r for r, i in enumerate(unique)}
        return emb[torch.as_tensor([row[first[k]] for k in keys])]

    @torch.no_grad()
    def probability(self, e1: torch.Tensor, e2: torch.Tensor) -> np.ndarray:
        return probability(self.loaded.model, e1, e2)

    def verify_pairs(self, pairs: list[tuple[Image, Image]], progress: bool = True,
                     strict: bool = False) -> list[dict[str, Any]]:
        """Score many pairs, embedding each distinct image once; one row per pair, in order.

        A pair with an image that cannot be used (no face, unreadable, not a regular file, too large...) is
        not scored: its row has probability and same None, `error` the reason and `error_detail` the
        message naming the file. strict=True raises the first such error instead."""
        from .evaluate import pair_errors

        paths = [Path(p) for pair in pairs for p in pair]
        errors: dict[Path, SiamfaceError] | None = None if strict else {}
        store = store_for(paths, self.preprocess, progress=progress, fallback=False, errors=errors)
        failed = pair_errors([(Path(a), Path(b)) for a, b in pairs], errors or {})
        ok = [pair for pair, e in zip(pairs, failed) if e is None]
        emb = embed_batches(self.net, store.images, self.preprocess, device=self.device)
        i = torch.as_tensor([store.index[Path(a)] for a, _ in ok], dtype=torch.long)
        j = torch.as_tensor([store.index[Path(b)] for _, b in ok], dtype=torch.long)
        probs = iter(self.probability(emb[i], emb[j]) if ok else [])
        rows = []
        for (a, b), e in zip(pairs, failed):
            p = None if e is not None else float(next(probs))
            rows.append({"image_a": str(a), "image_b": str(b), "probability": None if p is None else round(p, 10),
                         "same": None if p is None else self.decision.accepts(p),
                         "error": e.reason if e is not None else "", "error_detail": str(e) if e is not None else ""})
        return rows

    def verify(self, a: Image, b: Image) -> Verdict:
        """Same person or not, with the probability, the threshold and its provenance."""
        t0 = time.perf_counter()
        x, faces = self.inputs([a, b])
        emb = embed_batches(self.net, x, self.preprocess, device=self.device)
        p = float(self.probability(emb[:1], emb[1:])[0])
        if not math.isfinite(p):
            raise ModelError(f"{self.name}: the model gave a non-finite probability ({p}); its weights are broken")
        return Verdict.of(self.decision, p, self.name, round((time.perf_counter() - t0) * 1000, 2), faces)
