"""Running the app under uvicorn with connection limits: a cap on open connections (beyond it a new one is
answered 503, one line of JSON, and closed) and a deadline for a request's headers, so a client that sends
them a byte at a time (slowloris) cannot hold a connection open for ever. The request body and the work are
bounded by LimitsMiddleware (timeout) and the worker gate.
"""

from __future__ import annotations

import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose next request's headers are not all in within
    `header_timeout_s` of their first byte (or of the connection's start)."""

    header_timeout_s = 10.0
    max_connections = 64
    _header_timer: Any = None
    _refused = False

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refused = len(self.connections) > self.max_connections  # answered 503 once its request comes
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._refuse()
            return
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of a next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in: the request's own timeout takes over

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self) -> None:
        body = json.dumps({"detail": f"the server has {self.max_connections} connections open, its limit; retry "
                                     "in a moment", "error": "TooManyConnections"}).encode()
        head = ("HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n").encode()
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def server_config(app: Any, host: str, port: int, header_timeout_s: float = 10.0, max_connections: int = 64,
                  log_level: str = "info") -> Any:
    """A uvicorn Config with the header deadline and the connection cap."""
    import uvicorn

    protocol = type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,),
                    {"header_timeout_s": header_timeout_s, "max_connections": max_connections})
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol, timeout_keep_alive=5)
