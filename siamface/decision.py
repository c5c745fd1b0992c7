"""The decision: one threshold on p(same), the rate it stands for, and where it came from.

`Verifier`, `Gallery` and the service decide through a `Decision`, so `p >= threshold` is written once,
and every answer carries the same fields: the threshold, its operating point, the false-accept rate (FAR,
per pair) or false-positive identification rate (FPIR, per search of a gallery) it stands for with its 95%
interval, and which calibration chose it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .calibration import OperatingPoint, curve_threshold, far_for_fpir, fpir_name, fpir_of_far

DEFAULT_FPIR = 1e-2


@dataclass(frozen=True)
class Decision:
    """"Same person" when p(same) >= threshold."""

    threshold: float
    operating_point: str
    source: str
    far: float | None = None
    far_interval: tuple[float, float] | None = None
    fpir: float | None = None
    gallery_size: int | None = None
    calibration: str = ""
    fpir_interval: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:  # also NaN
            raise ValueError(f"threshold must be a probability in [0, 1], got {self.threshold}")

    def accepts(self, p: float) -> bool:
        return bool(p >= self.threshold)

    def fields(self) -> dict[str, Any]:
        """What every answer that decided with it reports."""
        return {"threshold": self.threshold, "threshold_source": self.source, "operating_point": self.operating_point,
                "far": self.far, "far_interval": list(self.far_interval) if self.far_interval else None,
                "fpir": self.fpir, "fpir_interval": list(self.fpir_interval) if self.fpir_interval else None,
                "calibration": self.calibration}

    def with_note(self, note: str) -> Decision:
        return replace(self, source=f"{self.source}; {note}")


def from_point(point: OperatingPoint, calibration: str) -> Decision:
    return Decision(point.threshold, point.name, point.source, point.far, point.far_interval, None, None, calibration)


def given(threshold: float) -> Decision:
    return Decision(float(threshold), "given threshold",
                    "given explicitly by the caller (not calibrated; no measured rate)", calibration="none")


def from_curve(curve: tuple[tuple[float, float], ...], fpir: float, n_people: int, calibration: str,
               what: str) -> Decision | None:
    """The FPIR point for a gallery of n_people derived from a FAR curve: the pairwise FAR at which a
    stranger, searched against n_people independent people, is matched with probability fpir. None when
    the curve does not reach that FAR."""
    far = far_for_fpir(fpir, n_people)
    t = curve_threshold(curve, far)
    if t is None:
        return None
    src = (f"FPIR {fpir:g} at {n_people} people, derived from {what}'s FAR curve: pairwise FAR {far:.2g} "
           f"(1 - (1 - FAR)^N = FPIR, independent comparisons)")
    return Decision(t, fpir_name(fpir), src, far, None, fpir, n_people, calibration)


def lowest_on_curve(curve: tuple[tuple[float, float], ...], fpir: float, n_people: int, calibration: str,
                    what: str) -> Decision:
    """When a curve cannot reach the FAR an FPIR needs: its strictest point, stating the FPIR it gives."""
    far, t = min(curve)
    got = fpir_of_far(far, n_people)
    src = (f"FPIR {fpir:g} at {n_people} people needs a pairwise FAR of {far_for_fpir(fpir, n_people):.2g}, below "
           f"the lowest FAR {what} resolves ({far:.2g}); its strictest threshold gives FPIR about {got:.2g}")
    return Decision(t, fpir_name(got), src, far, None, got, n_people, calibration)
