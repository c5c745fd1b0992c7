"""Errors siamface raises on purpose. Each message names the file or value at fault and what was expected."""

from __future__ import annotations


class SiamfaceError(Exception):
    """Base class: the CLI turns any of these into one line on stderr and a non-zero exit.

    `reason`: a short label of the problem for per-item reports (the `error` column of `verify --pairs`).
    `option`: the library argument that would resolve it (`select`, `detect`, `resume`...), or None. Messages
    never name a command-line flag; the CLI adds the flag for `option` (siamface.cli.OPTION_FLAGS).
    """

    reason = "error"
    option: str | None = None

    def __init__(self, *args: object, option: str | None = None) -> None:
        super().__init__(*args)
        if option is not None:
            self.option = option


class ImageError(SiamfaceError, ValueError):
    """An image file is missing, unreadable, corrupt or not an image.

    `reason`: a short label for per-pair reports ('missing', 'unreadable', 'not a regular file', 'too large').
    """

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


class DataError(SiamfaceError, ValueError):
    """A dataset folder, pairs file or split is malformed."""


class LeakageError(DataError):
    """An identity appears in two splits that must be disjoint."""


class ModelError(SiamfaceError):
    """A model is unknown, missing, or incompatible with its checkpoint or input."""


class CollapseError(SiamfaceError):
    """Training collapsed: validation scores are (near) constant or at chance."""


class NoFaceError(SiamfaceError):
    """No face was found in an image that had to contain one (`option`: detect=False takes face crops)."""

    reason = "no face"
    option = "detect"


class DlibFormatError(SiamfaceError, ValueError):
    """A dlib model file is truncated, corrupt or of another kind; the message names the byte offset."""


class PersonNotFoundError(SiamfaceError, KeyError):
    """A gallery has no person of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicatePersonError(SiamfaceError):
    """A person of that name already exists in the gallery (rename onto it, or enroll with new=True)."""


class GalleryModelError(SiamfaceError):
    """A gallery's embeddings were made by another model (or preprocessing) than the one opening it."""


class MultipleFacesError(SiamfaceError):
    """An enrollment photo holds several faces and nothing says which one to enroll (`option`: select)."""

    option = "select"
