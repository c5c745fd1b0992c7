"""What the service does against hostile clients besides limits: the API key (strength, constant-time
comparison, throttling of wrong keys per client), the Host header (against DNS rebinding), security headers
on every answer, and no absolute paths in answers.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from siamface.errors import SiamfaceError
from siamface.serve.limits import _send_json

MIN_KEY_CHARS = 16
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# The page and /docs use only their own scripts and styles (Swagger UI sets inline styles); nothing may frame them.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"cross-origin-opener-policy", b"same-origin")]


class KeyTooWeakError(SiamfaceError, ValueError):
    """The configured API key is too short to resist guessing."""


class TooManyAttemptsError(SiamfaceError):
    """A client sent too many wrong keys (HTTP 429, with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_key_strength(key: str | None, what: str = "the API key") -> None:
    if key is not None and len(key) < MIN_KEY_CHARS:
        raise KeyTooWeakError(f"{what} has {len(key)} characters; use at least {MIN_KEY_CHARS} (for example "
                              "python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")


def default_hosts(bind: str) -> tuple[str, ...]:
    """The Host names a server bound to `bind` answers by default: loopback names on loopback, else any."""
    return LOOPBACK_NAMES if bind in LOOPBACK_NAMES or bind.startswith("127.") else ("*",)


class KeyThrottle:
    """At most `attempts` wrong keys per client address in `window_s`; then 429 until the window passes."""

    def __init__(self, attempts: int = 10, window_s: float = 60.0) -> None:
        self.attempts, self.window_s = attempts, window_s
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = defaultdict(list)

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, []) if now - t < self.window_s]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def check(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if len(times) >= self.attempts:
                wait = max(1, int(self.window_s - (now - times[0])) + 1)
                raise TooManyAttemptsError(f"too many wrong API keys from this client; retry in {wait} s", wait)

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # bounded memory whatever the number of clients
                self._failures.clear()
            self._failures[client].append(time.monotonic())


def _host_name(value: bytes) -> str:
    host = value.decode("latin-1").strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostAndHeadersMiddleware:
    """Refuse a request whose Host header is not allowed (400, one-line JSON) and add the security headers
    to every answer."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed = {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        host = _host_name(dict(scope.get("headers") or []).get(b"host", b""))
        if not self.any_host and host not in self.allowed:
            await _send_json(with_headers, 400, f"host {host or '(none)'!r} is not served here; allowed: "
                             f"{', '.join(sorted(self.allowed))} (siamface serve --allowed-hosts)", "HostNotAllowed")
            return
        await self.app(scope, receive, with_headers)


class Redactor:
    """Replace the absolute paths of the gallery and the model in a text with their file names."""

    def __init__(self, *paths: str | Path | None) -> None:
        found: set[str] = set()
        from siamface.gallery_store import is_url

        for p in paths:
            if p and is_url(p):  # a database URL, and how messages name it (no password): its name alone
                from siamface.gallery_postgres import redact

                found |= {str(p), redact(str(p))}
            elif p:
                found |= {str(p), str(Path(p).resolve()), str(Path(p).absolute())}
        self._paths = sorted((p for p in found if len(p) > 1), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for p in self._paths:
            text = text.replace(p, Path(p).name)
        return text
