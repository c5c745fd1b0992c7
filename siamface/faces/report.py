"""Face reports of a photo analysed at reduced size, mapped back to the photo's own pixels.

A very large photo is decoded smaller (a JPEG at 1/2, 1/4 or 1/8 scale by its decoder, anything else
resized) before detection; its boxes, eyes and landmarks are then in the reduced image's pixels, and
`rescale_report` maps them back, whichever report shape holds them (a verify face report or a gallery one).
"""

from __future__ import annotations

from typing import Any

_BOX_KEYS = ("x", "y", "w", "h")
_POINT_KEYS = ("eyes", "landmarks")


def rescale_report(report: Any, factor: float) -> Any:
    """A copy of a face report (dicts and lists of them) with every box side and corner and every point
    multiplied by `factor` (box values stay whole pixels); everything else is kept as it is."""
    if factor == 1.0:
        return report
    if isinstance(report, list):
        return [rescale_report(r, factor) for r in report]
    if not isinstance(report, dict):
        return report
    out: dict[str, Any] = {}
    for key, value in report.items():
        if key in _BOX_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = round(value * factor) if isinstance(value, int) else value * factor
        elif key in _POINT_KEYS and isinstance(value, list):
            out[key] = [_point(p, factor) for p in value]
        else:
            out[key] = rescale_report(value, factor)
    return out


def _point(p: Any, factor: float) -> Any:
    if isinstance(p, (list, tuple)) and len(p) == 2:
        return [type(v)(round(v * factor)) if isinstance(v, int) else v * factor for v in p]
    return p
