"""The HTTP service: `create_app(settings)` builds a FastAPI app whose lifespan opens the model and the
gallery once; the routes translate multipart uploads into `Verifier` and `Gallery` calls.

Inference runs in plain `def` routes, which FastAPI runs in its threadpool, so the event loop keeps serving
while a request computes. The model is read-only at inference (eval mode, no grad) and the face cascades are
per thread; the gallery guards its SQLite connection and in-memory matrix with its own lock.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from siamface import __version__
from siamface.errors import ImageError, MultipleFacesError, NoFaceError, SiamfaceError
from siamface.serve import schemas
from siamface.serve.limits import Limits, LimitsMiddleware, check_upload, decode_upload
from siamface.serve.metrics import Metrics, MetricsMiddleware
from siamface.verify import Verifier

STATIC = Path(__file__).resolve().parent / "static"
KEY_ENV = "SIAMFACE_API_KEY"

# Library errors -> HTTP status, by class name along the error's MRO (the first name found wins).
STATUS = {
    "UploadTooLargeError": 413, "UnsupportedImageTypeError": 415, "ImageTooSmallError": 422,
    "NoFaceError": 422, "MultipleFacesError": 422, "PersonNotFoundError": 404, "DuplicatePersonError": 409,
    "GalleryModelError": 409, "ImageError": 400, "ValueError": 422,
}


@dataclass(frozen=True)
class Settings:
    """What `siamface serve` starts with. api_key None = read-only mode (write endpoints refuse)."""

    gallery: Path | None = None
    model: str | None = None
    far: float | None = None
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, **kw: Any) -> Settings:
        """Settings with the API key from the environment (an empty value counts as unset)."""
        return cls(api_key=os.environ.get(KEY_ENV) or None, **kw)


@dataclass
class Resources:
    """What the lifespan opens once: the verifier and the gallery (or None; it serialises its own writes)."""

    verifier: Verifier
    gallery: Any = None

    def close(self) -> None:
        if self.gallery is not None:
            self.gallery.close()


def open_resources(settings: Settings) -> Resources:
    """Load the model and open the gallery; library errors (a missing model, a gallery of another model)
    surface here, before the server listens."""
    verifier = Verifier(settings.model, far=settings.far)
    gallery = None
    if settings.gallery is not None:
        from siamface.gallery import Gallery

        gallery = Gallery(settings.gallery, verifier)
    return Resources(verifier, gallery)


def create_app(settings: Settings, resources: Resources | None = None) -> FastAPI:
    """The app; `resources` already opened (the CLI opens them first to report errors in one line)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = resources or open_resources(settings)
        try:
            yield
        finally:
            app.state.resources.close()

    app = FastAPI(title="siamface", version=__version__, lifespan=lifespan,
                  description="Face verification, enrollment and identification with a Siamese network. "
                              "Write endpoints need the X-API-Key header (the server's SIAMFACE_API_KEY).",
                  responses={400: {"model": schemas.ErrorAnswer}, 413: {"model": schemas.ErrorAnswer},
                             415: {"model": schemas.ErrorAnswer}, 422: {"model": schemas.ErrorAnswer}})
    app.state.settings, app.state.metrics = settings, Metrics()
    app.add_middleware(LimitsMiddleware, limits=settings.limits)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, routes_of=lambda: app)
    _add_error_handlers(app)
    _add_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# ---- dependencies ----------------------------------------------------------------------------------------

def get_resources(request: Request) -> Resources:
    return request.app.state.resources


def get_verifier(res: Annotated[Resources, Depends(get_resources)]) -> Verifier:
    return res.verifier


def get_gallery(res: Annotated[Resources, Depends(get_resources)]) -> Any:
    if res.gallery is None:
        raise HTTPException(503, "this server has no gallery (start it with --gallery FILE)")
    return res.gallery


_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's SIAMFACE_API_KEY")


def require_key(request: Request, key: Annotated[str | None, Depends(_key_header)]) -> None:
    """Write endpoints: 403 in read-only mode (no key configured), 401 for a missing or wrong key."""
    expected = request.app.state.settings.api_key
    if not expected:
        raise HTTPException(403, f"read-only mode: the server was started without {KEY_ENV}, "
                                 "so enrolling and deleting are disabled")
    if not key:
        raise HTTPException(401, "missing X-API-Key header (write endpoints need the server's API key)")
    if not hmac.compare_digest(key.encode(), expected.encode()):
        raise HTTPException(401, "wrong API key (X-API-Key)")


def read_image(upload: UploadFile, field_name: str, limits: Limits) -> np.ndarray:
    """Read at most one byte past the limit (a bigger file is refused without reading it all), decode."""
    data = upload.file.read(limits.max_upload_bytes + 1)
    return decode_upload(data, f"{field_name} ({upload.filename or 'unnamed upload'})", limits)


@contextmanager
def naming(field_name: str, upload: UploadFile) -> Iterator[None]:
    """Make an error about an uploaded photo name it (`image (probe.jpg): ...`) when it does not already."""
    label = f"{field_name} ({upload.filename or 'unnamed upload'})"
    try:
        yield
    except (ImageError, NoFaceError, MultipleFacesError) as e:
        message = str(e).replace(" <upload>", "").replace("<upload>: ", "")
        if (upload.filename or label) in message:
            raise
        named = type(e)(f"{label}: {message}")
        if hasattr(e, "reason"):  # the short label of per-item reports
            named.reason = e.reason
        raise named from e


def read_upload(upload: UploadFile, field_name: str, limits: Limits) -> bytes:
    """The checked file bytes (size, type, header): the gallery decodes them and records their SHA-256."""
    data = upload.file.read(limits.max_upload_bytes + 1)
    check_upload(data, f"{field_name} ({upload.filename or 'unnamed upload'})", limits)
    return data


# ---- errors ----------------------------------------------------------------------------------------------

def _status_of(error: Exception) -> int:
    for cls in type(error).__mro__:
        if cls.__name__ in STATUS:
            return STATUS[cls.__name__]
    return 500


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SiamfaceError)
    async def library_error(request: Request, exc: SiamfaceError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=_status_of(exc))

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "invalid request: " + "; ".join(parts), "error": "RequestValidationError",
                             "errors": jsonable_errors(exc)}, status_code=422)


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


# ---- routes ----------------------------------------------------------------------------------------------

Image = Annotated[UploadFile, File(description="a JPEG, PNG, WebP, PGM, BMP or TIFF photo")]
GalleryDep = Annotated[Any, Depends(get_gallery)]
Key = Depends(require_key)


def _add_routes(app: FastAPI) -> None:
    limits = app.state.settings.limits

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health", response_model=schemas.Health)
    def health(res: Annotated[Resources, Depends(get_resources)]) -> dict[str, Any]:
        v = res.verifier
        people = None
        if res.gallery is not None:
            people = len(res.gallery.people())
        return {"version": __version__, "model": v.name, "threshold": v.threshold,
                "threshold_source": v.threshold_source, "operating_point": v.operating_point,
                "gallery": None if app.state.settings.gallery is None else str(app.state.settings.gallery),
                "people": people, "read_only": not app.state.settings.api_key, "limits": asdict(limits)}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(app.state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/verify", response_model=schemas.VerifyAnswer)
    def verify(image_a: Image, image_b: Image, v: Annotated[Verifier, Depends(get_verifier)]) -> dict[str, Any]:
        """Are the people in two photos the same person?"""
        a, b = read_image(image_a, "image_a", limits), read_image(image_b, "image_b", limits)
        try:
            return v.verify(a, b).to_dict()
        except NoFaceError:  # which photo? (only on this error path: detect in `a` alone)
            with naming("image_a", image_a):
                v.inputs([a])
            with naming("image_b", image_b):
                raise

    @app.post("/identify", response_model=schemas.IdentifyAnswer)
    def identify(image: Image, gallery: GalleryDep,
                 k: Annotated[int, Form(ge=1, le=100, description="candidates per face")] = 5) -> dict[str, Any]:
        """Who is in this photo? Every face, with its top-k people; match is null when no one passes."""
        data = read_upload(image, "image", limits)
        with naming("image", image):
            return gallery.identify(data, k=k)

    @app.post("/enroll", response_model=schemas.EnrollAnswer, dependencies=[Key])
    def enroll(name: Annotated[str, Form(min_length=1, max_length=200)], image: Image, gallery: GalleryDep,
               add: Annotated[bool, Form(description="add this photo to an existing person")] = False,
               select: Annotated[Literal["largest", "central"] | None,
                                 Form(description="which face of a photo with several")] = None,
               ) -> dict[str, Any]:
        """Enroll a person from one photo (409 if the name exists, unless add=true)."""
        data = read_upload(image, "image", limits)
        with naming("image", image):
            return gallery.enroll(name, [data], select=select, sources=[image.filename or "upload"], new=not add)

    @app.post("/people/{name}/verify", response_model=schemas.VerifyAgainstAnswer)
    def verify_against(name: str, image: Image, gallery: GalleryDep) -> dict[str, Any]:
        """Is the person in this photo the enrolled `name`? (best of their photos)"""
        data = read_upload(image, "image", limits)
        with naming("image", image):
            return gallery.verify_against(name, data)

    @app.get("/people", response_model=list[schemas.Person])
    def people(gallery: GalleryDep) -> list[dict[str, Any]]:
        return gallery.people()

    @app.get("/people/{name}", response_model=schemas.PersonDetail)
    def person(name: str, gallery: GalleryDep) -> dict[str, Any]:
        """One person and their enrollments: sources, SHA-256, face boxes and landmarks (no embeddings)."""
        return gallery.person(name)

    @app.delete("/people/{name}", response_model=schemas.Deleted, dependencies=[Key])
    def delete(name: str, gallery: GalleryDep) -> dict[str, Any]:
        """Delete a person and everything stored about them (embeddings, face crops, sources)."""
        gallery.delete(name)
        return {"name": name, "deleted": True}
