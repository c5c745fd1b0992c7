"""The door view: what a door terminal may learn from a photo, and the key it needs.

A door shows who is at it, so its answer holds each face's box and the gallery's decision (a name, or None
for someone the gallery does not know) and nothing else: no candidates, probabilities, threshold, model or
gallery size. Whoever holds the door's page or its key therefore cannot list the enrolled people or measure
how close a face comes to each of them. A door terminal stands where anyone can reach it, so it may have a
key of its own (SIAMFACE_DOOR_KEY) that opens the door endpoint and nothing else; the API key opens it too.
"""

from __future__ import annotations

from typing import Any

from siamface.gallery_results import Identification

DOOR_KEY_ENV = "SIAMFACE_DOOR_KEY"
BOX_FIELDS = ("x", "y", "w", "h")


def door_keys(api_key: str | None, door_key: str | None) -> tuple[str, ...]:
    """The keys the door endpoint accepts; none (a server without either key) leaves it open, as /identify."""
    return tuple(k for k in (door_key, api_key) if k)


def check_door_key(api_key: str | None, door_key: str | None) -> None:
    """A door key must differ from the API key: a door terminal holding the API key could administer the gallery."""
    if door_key is not None and door_key == api_key:
        raise ValueError(f"{DOOR_KEY_ENV} equals the API key; give the door a key of its own (or none)")


def door_view(identification: Identification) -> dict[str, Any]:
    """Each face's box (image pixels; None when the model reads the whole photo) and its match (None: unknown)."""
    def box(face: dict[str, Any]) -> dict[str, int] | None:
        b = face.get("box")
        return None if b is None else {k: int(b[k]) for k in BOX_FIELDS}

    return {"faces": [{"box": box(f.face), "match": f.match} for f in identification.faces]}
