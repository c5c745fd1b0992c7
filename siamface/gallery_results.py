"""What a gallery answers, as typed results: an identification, an enrollment, the people and one person.

Each result is a frozen dataclass with `to_dict()`, the JSON the CLI prints and the service sends (the
same keys, in the same order, as every earlier version). A face is reported in one shape everywhere: the
face report of `siamface.faces` (box, confidence, eyes, landmarks, how many faces the photo held).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .decision import Decision


@dataclass(frozen=True)
class Candidate:
    """An enrolled person and the probability that a face is them (their best or mean photo)."""

    name: str
    probability: float


@dataclass(frozen=True)
class IdentifiedFace:
    """One face of a searched photo: its report, the decision (`match`: None = unknown) and the top-k."""

    face: dict[str, Any]
    match: str | None
    candidates: tuple[Candidate, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"face": self.face, "match": self.match, "candidates": [asdict(c) for c in self.candidates]}


@dataclass(frozen=True)
class Identification:
    """The answer to "who is in this photo?": every face, decided by one `Decision` (an FPIR point by
    default), against a gallery of `people` people."""

    faces: tuple[IdentifiedFace, ...]
    decision: Decision
    model: str
    aggregate: str
    people: int
    elapsed_ms: float

    @property
    def threshold(self) -> float:
        return self.decision.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"faces": [f.to_dict() for f in self.faces], **self.decision.fields(), "model": self.model,
                "aggregate": self.aggregate, "people": self.people, "elapsed_ms": self.elapsed_ms}


@dataclass(frozen=True)
class EnrolledPhoto:
    """One stored photo: its row id, the file name given, the SHA-256 of its bytes and its face report."""

    id: int
    source: str
    sha256: str
    face: dict[str, Any]


@dataclass(frozen=True)
class Enrollment:
    """What an enrollment stored: the person's name, the photos added, and how many they now have."""

    name: str
    enrolled: tuple[EnrolledPhoto, ...]
    photos: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "enrolled": [asdict(e) for e in self.enrolled], "photos": self.photos}


@dataclass(frozen=True)
class Person:
    """An enrolled person: their name, number of photos and enrollment time (ISO 8601, UTC)."""

    name: str
    photos: int
    created: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PersonRecord:
    """One person with every enrollment (no embeddings and no crops: `Gallery.face_crop` has those)."""

    name: str
    created: str
    photos: int
    enrollments: tuple[dict[str, Any], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "created": self.created, "photos": self.photos,
                "enrollments": list(self.enrollments)}
