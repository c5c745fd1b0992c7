"""What the service accepts: upload size, image type (by content), pixel count (from the header, before
decoding), smallest usable side, the size a photo is analysed at, and how long a request may take.

Uploads are checked in the order that costs least: the request's byte count while it streams in, the first
bytes of each file (its type), the image header (its size), and only then the decode. A photo longer than
`max_side` is analysed at reduced size (a JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself, which
costs a fraction of the full decode; other formats are resized after decoding): the face detector looks at
1024 pixels at most anyway, and face reports are mapped back to the photo's own pixels.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from siamface.data.images import decode_image
from siamface.errors import ImageError
from siamface.photo_faces import Photo

# Magic bytes of the accepted formats -> (Pillow format name, label). Content decides, never the file name.
SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"\xff\xd8\xff", "JPEG", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG", "PNG"),
    (b"BM", "BMP", "BMP"),
    (b"II*\x00", "TIFF", "TIFF"),
    (b"MM\x00*", "TIFF", "TIFF"),
    (b"P5", "PPM", "PGM"),
    (b"P2", "PPM", "PGM"),
)
ACCEPTED = "JPEG, PNG, WebP, PGM, BMP or TIFF"


class UploadTooLargeError(ImageError):
    """The request, a file or its decoded pixel count is above the configured limit (HTTP 413)."""


class UnsupportedImageTypeError(ImageError):
    """The upload is not one of the accepted image types (HTTP 415)."""


class ImageTooSmallError(ImageError):
    """The image decodes but is too small to hold a face (HTTP 422)."""


@dataclass(frozen=True)
class Limits:
    """The service's limits; every one is a `siamface serve` flag.

    max_side: photos with a longer side are analysed at reduced size (see the module's docstring).
    max_full_decode_pixels: the pixel cap of formats that must be decoded whole (all but JPEG, whose decoder
    reduces at no cost): a 36 Mpx PNG takes 2 s and 400 MB to decode, the same JPEG 0.2 s.
    workers: requests that compute at once; queue: requests that may wait for a worker (more: 503).
    light_workers: extra workers for light requests only (photos of light_pixels in all, from their headers),
    so a burst of large photos does not hold up an ordinary verify behind it."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16
    timeout_s: float = 30.0
    max_side: int = 2048
    max_full_decode_pixels: int = 16_000_000
    workers: int = 2
    queue: int = 8
    light_workers: int = 1
    light_pixels: int = 2_000_000

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "min_side", "max_side", "max_full_decode_pixels", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("queue", "light_workers", "light_pixels"):
            if getattr(self, name) < 0:
                raise ValueError(f"Limits.{name} must be >= 0, got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise ValueError(f"Limits.timeout_s must be > 0, got {self.timeout_s}")

    @property
    def max_request_bytes(self) -> int:
        """Two images (verify) plus room for the multipart framing and the form fields."""
        return 2 * self.max_upload_bytes + 1024 * 1024


def sniff(data: bytes, name: str) -> str:
    """The Pillow format the bytes start with, or UnsupportedImageTypeError naming the upload."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt, _label in SIGNATURES:
        if data.startswith(magic):
            return fmt
    return _unsupported(data, name)


def _unsupported(data: bytes, name: str) -> str:
    what = "empty" if not data else "text" if _looks_like_text(data[:512]) else "not an image"
    raise UnsupportedImageTypeError(f"{name}: {what}; expected a {ACCEPTED} image (judged by content, not by name)")


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_upload(data: bytes, name: str, limits: Limits) -> str:
    """Size, type (by content) and pixel count (from the header: nothing is decoded); returns the format.

    Errors name the upload: UploadTooLargeError (413), UnsupportedImageTypeError (415), ImageError for an
    unreadable header (400), ImageTooSmallError (422)."""
    with _open(data, name, limits) as im:
        return str(im.format)


def pixels_of(data: bytes, name: str, limits: Limits) -> int:
    """`check_upload`, returning the image's pixel count (from its header: what decoding it will cost)."""
    with _open(data, name, limits) as im:
        return int(im.size[0] * im.size[1])


def decode_upload(data: bytes, name: str, limits: Limits) -> np.ndarray:
    """`check_upload`, then decode to RGB uint8 (H, W, 3) with EXIF orientation applied and the file
    decoder's conversions (16-bit, palette, alpha); a corrupt or truncated file is an ImageError (400).
    A photo longer than `limits.max_side` comes back reduced (see `decode_photo` for the scale)."""
    return decode_photo(data, name, limits).rgb


def decode_photo(data: bytes, name: str, limits: Limits, source: str | None = None) -> Photo:
    """`decode_upload` as a gallery `Photo`: the pixels (at most `limits.max_side` long), the scale they
    were decoded at, the SHA-256 of the uploaded bytes, `source` (the file name kept with an enrollment)
    and `name` (how errors name the upload). The checks are `check_upload`'s; the decoding is the library's
    one decoder of image bytes (`siamface.data.decode_image`), so the service sees what the CLI sees."""
    check_upload(data, name, limits)
    rgb, scale = decode_image(data, name, 3, limits.max_side, limits.max_pixels)
    return Photo(rgb, source or name, hashlib.sha256(data).hexdigest(), name, scale)


def _open(data: bytes, name: str, limits: Limits) -> Image.Image:
    if len(data) > limits.max_upload_bytes:
        raise UploadTooLargeError(f"{name}: larger than the {limits.max_upload_bytes:,}-byte limit for one image")
    fmt = sniff(data, name)
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])  # reads the header only
    except Image.DecompressionBombError as e:  # Pillow's own cap (far above ours) fires inside open()
        raise UploadTooLargeError(f"{name}: {e}; the limit here is {limits.max_pixels / 1e6:g} Mpx "
                                  "(checked before decoding)") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: starts like a {fmt} image but its header is unreadable ({e})") from e
    try:
        _check_size(im.size, name, limits)
        w, h = im.size
        if fmt != "JPEG" and w * h > limits.max_full_decode_pixels:
            raise UploadTooLargeError(f"{name}: {w}x{h} is {w * h / 1e6:.1f} Mpx; a {fmt} image is decoded whole, "
                                      f"so {limits.max_full_decode_pixels / 1e6:g} Mpx is its limit (a JPEG may have "
                                      f"up to {limits.max_pixels / 1e6:g} Mpx: it is decoded at reduced size)")
    except ImageError:
        im.close()
        raise
    return im


def _check_size(size: tuple[int, int], name: str, limits: Limits) -> None:
    w, h = size
    if w * h > limits.max_pixels:
        raise UploadTooLargeError(f"{name}: {w}x{h} is {w * h / 1e6:.1f} Mpx, above the "
                                  f"{limits.max_pixels / 1e6:g} Mpx limit (checked before decoding)")
    if min(w, h) < limits.min_side:
        raise ImageTooSmallError(f"{name}: {w}x{h} pixels is too small to hold a face "
                                 f"(each side must be at least {limits.min_side} pixels)")


# ---- ASGI middleware: request size while streaming, and the request timeout -------------------------------

class _BodyTooLarge(Exception):
    pass


DEADLINE = "siamface.deadline"  # the scope key of a request's deadline (time.monotonic() seconds)


def deadline_of(scope: dict) -> float:
    """When the request's time runs out (set by LimitsMiddleware; no limit outside it)."""
    return float(scope.get(DEADLINE, float("inf")))


class LimitsMiddleware:
    """Refuse a request body above `limits.max_request_bytes` (413, before any multipart parsing finishes)
    and answer 504 when a request takes longer than `limits.timeout_s`. A route computing in the threadpool
    cannot be interrupted from here: it reads the deadline this middleware puts in the scope (`deadline_of`)
    and stops at its next stage (siamface.serve.work), so a timed-out request stops using the CPU."""

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[DEADLINE] = time.monotonic() + self.limits.timeout_s
        cap = self.limits.max_request_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await _send_json(send, 413, f"request body of {int(declared):,} bytes is above the {cap:,}-byte limit "
                                        f"({self.limits.max_upload_bytes:,} bytes per image)")
            return
        started, seen, over = False, 0, False

        async def counting_receive() -> dict:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > cap:
                over = True
                raise _BodyTooLarge
            return message

        timed_out = False

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if over or timed_out:  # replaced: the app's answer to a body cut off by the cap (FastAPI makes it
                return  # a 400), or anything it says after the 504
            started = started or message["type"] == "http.response.start"
            await send(message)

        # The app is not cancelled at the deadline: a route computing in a thread cannot be interrupted (it
        # stops at its next stage, siamface.serve.work), and cancelling the task could cut an answer it is
        # sending between its start and its body. Past the deadline, what it sends is dropped instead.
        task = asyncio.ensure_future(self.app(scope, counting_receive, guarded_send))
        done, _ = await asyncio.wait({task}, timeout=self.limits.timeout_s)
        if not done and started:
            await asyncio.wait({task})  # it is answering: let it finish
        elif not done:
            timed_out = True
            task.add_done_callback(_quiet)
            await _send_json(send, 504, f"request took longer than the {self.limits.timeout_s:g} s limit",
                             "RequestTimeoutError")
            return
        if task.done() and not task.cancelled() and not isinstance(task.exception(), _BodyTooLarge):
            task.result()  # the app's own exception, if any, goes on to the server
        if over and not started:
            await _send_json(send, 413, f"request body is above the {cap:,}-byte limit "
                                        f"({self.limits.max_upload_bytes:,} bytes per image)")


def _quiet(task: asyncio.Future) -> None:
    """Collect the outcome of an app task whose answer was already replaced by a 504."""
    if not task.cancelled():
        task.exception()


async def _send_json(send: Any, status: int, message: str, error: str | None = None) -> None:
    body = json.dumps({"detail": message, "error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
