"""The HTTP service: `create_app(settings)` builds a FastAPI app whose lifespan opens the gallery (with the
model that built it) once; the routes translate multipart uploads into `Verifier` and `Gallery` calls.

Inference runs in plain `def` routes, which FastAPI runs in its threadpool, so the event loop keeps serving
while a request computes; a gate (siamface.serve.work) lets only `Limits.workers` of them compute at once and
`Limits.queue` wait, and each stops at its next stage once its time is up. The model is read-only at
inference (eval mode, no grad); the gallery guards its SQLite connection and matrix with its own lock.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from siamface import __version__
from siamface.errors import (
    DuplicatePersonError,
    GalleryModelError,
    ImageError,
    MultipleFacesError,
    NoFaceError,
    PersonNotFoundError,
    SiamfaceError,
)
from siamface.gallery_store import gallery_label
from siamface.photo_faces import Photo
from siamface.serve import schemas
from siamface.serve.door import DOOR_KEY_ENV, check_door_key, door_keys, door_view
from siamface.serve.limits import (
    ImageTooSmallError,
    Limits,
    LimitsMiddleware,
    UnsupportedImageTypeError,
    UploadTooLargeError,
    deadline_of,
    decode_photo,
    pixels_of,
)
from siamface.serve.metrics import Metrics, MetricsMiddleware
from siamface.serve.security import (
    HostAndHeadersMiddleware,
    KeyThrottle,
    Redactor,
    TooManyAttemptsError,
    check_key_strength,
)
from siamface.serve.work import BusyError, Gate, RequestTimeoutError, check, verify_photos
from siamface.verify import Verifier

STATIC = Path(__file__).resolve().parent / "static"
KEY_ENV = "SIAMFACE_API_KEY"

# Library errors -> HTTP status, by type along the error's MRO (the most specific class wins).
STATUS: dict[type[BaseException], int] = {
    UploadTooLargeError: 413, UnsupportedImageTypeError: 415, ImageTooSmallError: 422, NoFaceError: 422,
    MultipleFacesError: 422, PersonNotFoundError: 404, DuplicatePersonError: 409, GalleryModelError: 409,
    BusyError: 503, RequestTimeoutError: 504, TooManyAttemptsError: 429, ImageError: 400, ValueError: 422,
}


@dataclass(frozen=True)
class Settings:
    """What `siamface serve` starts with. api_key None = read-only mode (write endpoints refuse); with a key,
    every gallery endpoint needs it. door_key: a key that opens the door endpoint only (siamface.serve.door).
    allowed_hosts: the Host header names served ("*": any)."""

    gallery: str | Path | None = None  # a file or a postgresql:// URL
    model: str | None = None
    far: float | None = None
    keep_crops: str | None = None  # where enrollments keep their face crop (db, dir, none); None: as recorded
    crops_dir: str | Path | None = None
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    allowed_hosts: tuple[str, ...] = ("*",)
    door_key: str | None = None

    def __post_init__(self) -> None:
        check_key_strength(self.api_key)
        check_key_strength(self.door_key, f"the door key ({DOOR_KEY_ENV})")
        check_door_key(self.api_key, self.door_key)

    @classmethod
    def from_env(cls, **kw: Any) -> Settings:
        """Settings with the API key and the door key from the environment (an empty value counts as unset)."""
        return cls(api_key=os.environ.get(KEY_ENV) or None, door_key=os.environ.get(DOOR_KEY_ENV) or None, **kw)


@dataclass
class Resources:
    """What the lifespan opens once: the verifier and the gallery (or None; it serialises its own writes)."""

    verifier: Verifier
    gallery: Any = None

    def close(self) -> None:
        if self.gallery is not None:
            self.gallery.close()


def open_resources(settings: Settings) -> Resources:
    """Open the gallery with the model that built it (or settings.model) after checking the file, or load the
    model alone; library errors (a damaged file, a gallery of another model) surface here, before listening."""
    if settings.gallery is None:
        return Resources(Verifier(settings.model, far=settings.far))
    from siamface.gallery import Gallery

    gallery = Gallery.open(settings.gallery, settings.model, far=settings.far, keep_crops=settings.keep_crops,
                           crops_dir=settings.crops_dir)
    return Resources(gallery.verifier, gallery)


def model_label(v: Verifier) -> str:
    """How answers name the model: a shipped model's name or the run folder's name, never a full path."""
    return Path(v.name).name


def create_app(settings: Settings, resources: Resources | None = None) -> FastAPI:
    """The app; `resources` already opened (the CLI opens them first to report errors in one line)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = resources or open_resources(settings)
        app.state.redact = Redactor(settings.gallery, app.state.resources.verifier.name)
        try:
            yield
        finally:
            app.state.resources.close()

    app = FastAPI(title="siamface", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Face verification, enrollment and identification with a Siamese network. With "
                              "an API key configured (SIAMFACE_API_KEY), every gallery endpoint needs the "
                              "X-API-Key header; without one, enrolling and deleting are disabled.",
                  responses={400: {"model": schemas.ErrorAnswer}, 413: {"model": schemas.ErrorAnswer},
                             415: {"model": schemas.ErrorAnswer}, 422: {"model": schemas.ErrorAnswer},
                             503: {"model": schemas.ErrorAnswer}, 504: {"model": schemas.ErrorAnswer}})
    app.state.settings, app.state.metrics = settings, Metrics()
    app.state.gate = Gate(settings.limits.workers, settings.limits.queue, settings.limits.light_workers)
    app.state.throttle = KeyThrottle()
    app.state.redact = Redactor(settings.gallery, settings.model)
    app.add_middleware(LimitsMiddleware, limits=settings.limits)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, routes_of=lambda: app)
    app.add_middleware(HostAndHeadersMiddleware, allowed_hosts=settings.allowed_hosts)
    _add_error_handlers(app)
    _add_routes(app)
    _add_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# ---- dependencies ----------------------------------------------------------------------------------------

def get_resources(request: Request) -> Resources:
    return request.app.state.resources


def get_verifier(res: Annotated[Resources, Depends(get_resources)]) -> Verifier:
    return res.verifier


def get_gallery(res: Annotated[Resources, Depends(get_resources)]) -> Any:
    if res.gallery is None:
        raise HTTPException(503, "this server has no gallery (it was started without one)")
    return res.gallery


_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's SIAMFACE_API_KEY")


def _check_key(request: Request, key: str | None, *expected: str, name: str = "API key") -> None:
    """401 for a missing key or one that is none of `expected` (`name` in the message); 429 once a client sent
    too many wrong ones (constant-time compare)."""
    throttle, client = request.app.state.throttle, request.client.host if request.client else "unknown"
    throttle.check(client)
    if not key:
        raise HTTPException(401, f"missing X-API-Key header (this server's gallery needs its {name})")
    if not any([hmac.compare_digest(key.encode(), e.encode()) for e in expected]):  # a list: compare every key
        throttle.failed(client)
        raise HTTPException(401, f"wrong {name} (X-API-Key)")


def require_key(request: Request, key: Annotated[str | None, Depends(_key_header)]) -> None:
    """Write endpoints: 403 in read-only mode (no key configured), else the key."""
    expected = request.app.state.settings.api_key
    if not expected:
        raise HTTPException(403, f"read-only mode: the server was started without {KEY_ENV}, "
                                 "so enrolling and deleting are disabled")
    _check_key(request, key, expected)


def read_key(request: Request, key: Annotated[str | None, Depends(_key_header)]) -> None:
    """Gallery reads (people, identify, verify against a person): the key when one is configured."""
    expected = request.app.state.settings.api_key
    if expected:
        _check_key(request, key, expected)


def door_key(request: Request, key: Annotated[str | None, Depends(_key_header)]) -> None:
    """The door endpoint: the door key or the API key, when either is configured."""
    settings = request.app.state.settings
    if expected := door_keys(settings.api_key, settings.door_key):
        _check_key(request, key, *expected, name="door key or API key")


@dataclass
class Upload:
    """An uploaded photo's bytes, checked from its header (size, type, pixel count) but not decoded yet."""

    data: bytes
    label: str  # how errors name it: the form field and the file name
    source: str
    pixels: int


def read_upload(upload: UploadFile, field_name: str, limits: Limits) -> Upload:
    """Read at most one byte past the limit (a bigger file is refused without reading it all) and check the
    header: a bad upload is refused before it waits for a worker. Errors name the field and the file name."""
    data = upload.file.read(limits.max_upload_bytes + 1)
    label = f"{field_name} ({upload.filename or 'unnamed upload'})"
    return Upload(data, label, upload.filename or "upload", pixels_of(data, label, limits))


def is_light(uploads: list[Upload], limits: Limits) -> bool:
    """Whether a request may use the light workers: its photos hold limits.light_pixels or fewer in all."""
    return sum(u.pixels for u in uploads) <= limits.light_pixels


def decode(upload: Upload, limits: Limits, deadline: float) -> Photo:
    """Decode (at reduced size when large), once the deadline is checked."""
    check(deadline, f"decoding {upload.label}")
    return decode_photo(upload.data, upload.label, limits, source=upload.source)


def _for_gallery(photo: Photo) -> Photo:
    """Gallery errors name the photo by its file name alone (the endpoints take one photo)."""
    return dataclasses.replace(photo, where=photo.source)


# ---- errors ----------------------------------------------------------------------------------------------

def status_of(error: BaseException) -> int:
    """The HTTP status of a library error: the first of its classes (most specific first) in STATUS."""
    return next((STATUS[cls] for cls in type(error).__mro__ if cls in STATUS), 500)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _add_error_handlers(app: FastAPI) -> None:
    def answer(exc: Exception, status: int, detail: str) -> JSONResponse:
        headers = {"Retry-After": str(getattr(exc, "retry_after", 1))} if status in (429, 503) else None
        return JSONResponse({"detail": _one_line(app.state.redact(detail)), "error": type(exc).__name__},
                            status_code=status, headers=headers)

    @app.exception_handler(SiamfaceError)
    async def library_error(request: Request, exc: SiamfaceError) -> JSONResponse:
        return answer(exc, status_of(exc), str(exc))

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return answer(exc, status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "invalid request: " + "; ".join(parts), "error": "RequestValidationError",
                             "errors": jsonable_errors(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Anything else (a damaged gallery page read mid-way, a bug): one line of JSON, never a traceback."""
        if isinstance(exc, sqlite3.DatabaseError):
            return answer(exc, 500, f"the gallery file cannot be read ({exc}); check or restore it")
        if type(exc).__module__.startswith("psycopg"):  # the database server: down, restarting, refusing
            return answer(exc, 503, f"the gallery database cannot be used now ({exc})")
        return answer(exc, 500, f"internal error ({type(exc).__name__}: {exc})")


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


# ---- routes ----------------------------------------------------------------------------------------------

Image = Annotated[UploadFile, File(description="a JPEG, PNG, WebP, PGM, BMP or TIFF photo")]
GalleryDep = Annotated[Any, Depends(get_gallery)]
Key, ReadKey, DoorKey = Depends(require_key), Depends(read_key), Depends(door_key)
Select = Annotated[Literal["largest", "central"] | None,
                   Form(description="which face of a photo with several (default: refuse such a photo)")]


def _add_routes(app: FastAPI) -> None:
    limits, gate = app.state.settings.limits, app.state.gate

    def public(answer: dict[str, Any], v: Verifier) -> dict[str, Any]:
        """The model by name and no path in the texts that explain the decision."""
        out = {k: app.state.redact(x) if k in ("threshold_source", "calibration") and isinstance(x, str) else x
               for k, x in answer.items()}
        return {**out, "model": model_label(v)} if "model" in out else out

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health", response_model=schemas.Health)
    def health(res: Annotated[Resources, Depends(get_resources)]) -> dict[str, Any]:
        v, gallery = res.verifier, app.state.settings.gallery
        return {"version": __version__, "model": model_label(v), "threshold": v.threshold,
                "threshold_source": app.state.redact(v.threshold_source), "operating_point": v.operating_point,
                "gallery": None if gallery is None else gallery_label(gallery),
                "people": None if res.gallery is None else len(res.gallery.people()),
                "read_only": not app.state.settings.api_key, "key_required": bool(app.state.settings.api_key),
                "limits": asdict(limits), "pid": os.getpid()}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(app.state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/verify", response_model=schemas.VerifyAnswer)
    def verify(request: Request, image_a: Image, image_b: Image,
               v: Annotated[Verifier, Depends(get_verifier)]) -> dict[str, Any]:
        """Are the people in two photos the same person?"""
        deadline = deadline_of(request.scope)
        uploads = [read_upload(image_a, "image_a", limits), read_upload(image_b, "image_b", limits)]
        with gate.slot(deadline, is_light(uploads, limits)):
            photos = [decode(u, limits, deadline) for u in uploads]
            return public(verify_photos(v, photos, deadline).to_dict(), v)

    @app.post("/identify", response_model=schemas.IdentifyAnswer, dependencies=[ReadKey])
    def identify(request: Request, image: Image, gallery: GalleryDep,
                 k: Annotated[int, Form(ge=1, le=100, description="candidates per face")] = 5,
                 fpir: Annotated[float | None, Form(gt=0.0, lt=1.0, description=(
                     "the share of strangers allowed to match someone in this gallery (default 0.01); the "
                     "threshold follows the gallery's size"))] = None) -> dict[str, Any]:
        """Who is in this photo? Every face, with its top-k people; match is null when no one passes the
        decision: by default the gallery's FPIR 1% point (the answer names the FPIR and its calibration)."""
        deadline, upload = deadline_of(request.scope), read_upload(image, "image", limits)
        with gate.slot(deadline, is_light([upload], limits)):
            photo = decode(upload, limits, deadline)
            check(deadline, "identifying")
            return public(gallery.identify(_for_gallery(photo), k=k, fpir=fpir).to_dict(), gallery.verifier)

    @app.get("/door", include_in_schema=False)
    def door_page() -> FileResponse:
        return FileResponse(STATIC / "door.html")

    @app.post("/door/identify", response_model=schemas.DoorAnswer, dependencies=[DoorKey])
    def door_identify(request: Request, image: Image, gallery: GalleryDep) -> dict[str, Any]:
        """A door's question: each face's box and the gallery's decision (a name, or null: unknown), and
        nothing else (no candidates or probabilities). Takes the door key (SIAMFACE_DOOR_KEY) or the API key."""
        deadline, upload = deadline_of(request.scope), read_upload(image, "image", limits)
        with gate.slot(deadline, is_light([upload], limits)):
            photo = decode(upload, limits, deadline)
            check(deadline, "identifying")
            return door_view(gallery.identify(_for_gallery(photo), k=1))

    @app.post("/enroll", response_model=schemas.EnrollAnswer, dependencies=[Key])
    def enroll(request: Request, name: Annotated[str, Form(min_length=1, max_length=200)], image: Image,
               gallery: GalleryDep, select: Select = None,
               add: Annotated[bool, Form(description="add this photo to an existing person")] = False,
               ) -> dict[str, Any]:
        """Enroll a person from one photo (409 if the name exists, unless add=true)."""
        deadline, upload = deadline_of(request.scope), read_upload(image, "image", limits)
        with gate.slot(deadline, is_light([upload], limits)):
            photo = decode(upload, limits, deadline)
            check(deadline, "enrolling")
            return gallery.enroll(name, [_for_gallery(photo)], select=select, new=not add).to_dict()

    @app.post("/people/{name:path}/verify", response_model=schemas.VerifyAgainstAnswer, dependencies=[ReadKey])
    def verify_against(request: Request, name: str, image: Image, gallery: GalleryDep) -> dict[str, Any]:
        """Is the person in this photo the enrolled `name`? (best of their photos)"""
        deadline, upload = deadline_of(request.scope), read_upload(image, "image", limits)
        with gate.slot(deadline, is_light([upload], limits)):
            photo = decode(upload, limits, deadline)
            check(deadline, "verifying")
            return public(gallery.verify_against(name, _for_gallery(photo)).to_dict(), gallery.verifier)

    @app.get("/people", response_model=list[schemas.Person], dependencies=[ReadKey])
    def people(gallery: GalleryDep) -> list[dict[str, Any]]:
        return [p.to_dict() for p in gallery.people()]

    @app.get("/people/{name:path}", response_model=schemas.PersonDetail, dependencies=[ReadKey])
    def person(name: str, gallery: GalleryDep) -> dict[str, Any]:
        """One person and their enrollments: sources, SHA-256, face boxes and landmarks (no embeddings)."""
        return gallery.person(name).to_dict()

    @app.delete("/people/{name:path}", response_model=schemas.Deleted, dependencies=[Key])
    def delete(name: str, gallery: GalleryDep) -> dict[str, Any]:
        """Delete a person and everything stored about them (embeddings, face crops, sources)."""
        gallery.delete(name)
        return {"name": name, "deleted": True}


def _add_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the swagger-ui-bundle package, served here (no CDN: it works offline)."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse((STATIC / "docs.html").read_text())
