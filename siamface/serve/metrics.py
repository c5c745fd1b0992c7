"""Request counts and latency in the Prometheus text exposition format (version 0.0.4), without a client
library: a counter per (method, route, status) and a latency histogram per route.

Routes are the app's path templates (`/people/{name}`, not each name), anything unmatched counts as
`other`, and so does any method but the standard ones, so the number of series stays bounded whatever
clients send.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from typing import Any

from starlette.routing import Match

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Thread-safe request counters and latency histograms."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._hist: dict[str, list[int]] = {}
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[method, route, status] += 1
            counts = self._hist.setdefault(route, [0] * (len(self.buckets) + 1))
            counts[bisect.bisect_left(self.buckets, seconds)] += 1  # le semantics: a value on a bound counts there
            self._sum[route] += seconds
            self._count[route] += 1

    def render(self) -> str:
        """The exposition text: cumulative buckets, +Inf, _sum and _count per route."""
        with self._lock:
            lines = ["# HELP siamface_requests_total HTTP requests served, by method, route and status.",
                     "# TYPE siamface_requests_total counter"]
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(f'siamface_requests_total{{method="{method}",route="{_esc(route)}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP siamface_request_duration_seconds Time from request to response, by route.",
                      "# TYPE siamface_request_duration_seconds histogram"]
            for route in sorted(self._hist):
                cumulative, r = 0, _esc(route)
                for bound, n in zip((*self.buckets, float("inf")), self._hist[route]):
                    cumulative += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(f'siamface_request_duration_seconds_bucket{{route="{r}",le="{le}"}} {cumulative}')
                lines.append(f'siamface_request_duration_seconds_sum{{route="{r}"}} {self._sum[route]!r}')
                lines.append(f'siamface_request_duration_seconds_count{{route="{r}"}} {self._count[route]}')
        return "\n".join(lines) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def route_of(app: Any, scope: dict) -> str:
    """The path template of the route that serves this request, or 'other'."""
    for route in app.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "path", "other") or "other"
    return "other"


class MetricsMiddleware:
    """Times every HTTP request and records it in `metrics` under its route template."""

    def __init__(self, app: Any, metrics: Metrics, routes_of: Any) -> None:
        self.app, self.metrics, self.routes_of = app, metrics, routes_of

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.observe(method, route_of(self.routes_of(), scope), status,
                                 time.perf_counter() - t0)
