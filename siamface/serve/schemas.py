"""Pydantic shapes of every answer of the service (the requests are multipart forms, declared in the routes).

They mirror the CLI's JSON: the same field names, so a client can move between `siamface verify` and
`POST /verify` without translation.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Box(BaseModel):
    """A face box in image pixels with the detector's confidence (Haar: in (0, 1); MMOD: dlib's raw score,
    about 1 for a clear frontal face)."""

    x: int
    y: int
    w: int
    h: int
    confidence: float


class FaceReport(BaseModel):
    """How the face of one photo was found (siamface.faces.report, one shape in every answer): the face used
    (`box`; null: the whole image was the input), every face found, the eyes and landmarks (x, y), in the
    photo's own pixels."""

    model_config = ConfigDict(extra="allow")

    box: Box | None = None
    faces: list[Box] = Field(default_factory=list)
    faces_in_photo: int = 1
    eyes_source: str = "none"
    eyes: list[list[float]] | None = None
    landmarks: list[list[float]] = Field(default_factory=list)


class Decision(BaseModel):
    """How a probability becomes a decision: the threshold, where it came from, the operating point."""

    threshold: float
    threshold_source: str
    operating_point: str | None = None
    far: float | None = Field(None, description="the false-accept rate the threshold stands for")
    far_interval: list[float] | None = Field(None, description="its 95% interval")
    fpir: float | None = Field(None, description="identification: the share of strangers matched to someone")
    fpir_interval: list[float] | None = Field(None, description="its 95% interval, where measured")
    calibration: str = Field("", description="which calibration chose the threshold")
    model: str
    elapsed_ms: float


class VerifyAnswer(Decision):
    same: bool
    probability: float = Field(ge=0.0, le=1.0, description="p(same person) from the Siamese head")
    faces: list[FaceReport] = Field(default_factory=list, description="one per image, in order (face models)")


class VerifyAgainstAnswer(Decision):
    model_config = ConfigDict(extra="allow")

    name: str
    same: bool
    probability: float = Field(ge=0.0, le=1.0)
    photos: int
    faces: list[dict[str, Any]] = Field(default_factory=list)


class Candidate(BaseModel):
    name: str
    probability: float


class IdentifiedFace(BaseModel):
    model_config = ConfigDict(extra="allow")

    face: dict[str, Any] | None = Field(None, description="the face this row is about: box and landmarks")
    match: str | None = Field(None, description="the best candidate at or above the threshold; null: unknown")
    candidates: list[Candidate] = Field(default_factory=list)


class IdentifyAnswer(Decision):
    model_config = ConfigDict(extra="allow")

    faces: list[IdentifiedFace]


class Enrollment(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    source: str | None = None
    sha256: str | None = None
    face: dict[str, Any] | None = None


class EnrollAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    enrolled: list[Enrollment]
    photos: int


class Person(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    photos: int
    created: Any = None


class PersonDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    created: Any = None
    photos: int
    enrollments: list[dict[str, Any]]


class Deleted(BaseModel):
    name: str
    deleted: bool = True


class Health(BaseModel):
    status: str = "ok"
    version: str
    model: str
    threshold: float
    threshold_source: str
    operating_point: str | None = None
    gallery: str | None = Field(None, description="the gallery's file name (not its path)")
    people: int | None = None
    read_only: bool = Field(description="true when SIAMFACE_API_KEY is unset: the write endpoints refuse")
    key_required: bool = Field(False, description="true when the gallery endpoints need the X-API-Key header")
    limits: dict[str, int | float]
    pid: int = Field(description="the answering process's id (several with `siamface serve --processes N`)")


class ErrorAnswer(BaseModel):
    """Every error: a one-line message, and the error's kind."""

    detail: str
    error: str | None = None


class DoorFace(BaseModel):
    """One face at a door: where it is, and the gallery's decision."""

    box: dict[str, int] | None = Field(None, description="x, y, w, h in image pixels (null: the whole photo)")
    match: str | None = Field(None, description="the enrolled person recognised; null: unknown")


class DoorAnswer(BaseModel):
    """What a door may learn: each face and its decision, no candidates, probabilities or threshold."""

    faces: list[DoorFace]
