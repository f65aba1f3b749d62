"""API-side Prometheus metrics: HTTP traffic by route template (never raw paths with ids), webhooks, readiness."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.responses import Response

HTTP_REQUESTS = Counter("ecomdream_http_requests", "HTTP requests served", ["route", "method", "status"])
HTTP_DURATION = Histogram(
    "ecomdream_http_request_duration_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WEBHOOKS = Counter("ecomdream_webhooks", "Webhook deliveries received, by outcome", ["provider", "outcome"])
# An alert watches these for an increase, which a series born at 1 never shows: they start at 0.
for _provider in ("stripe", "replicate"):
    WEBHOOKS.labels(_provider, "bad_signature")
DEPENDENCY_UP = Gauge(
    "ecomdream_dependency_up",
    "Whether the dependency answered the latest /ready check (1) or not (0)",
    ["dependency"],
)


def route_template(request: Request) -> str:
    """The matched route's path template (`/api/v1/versions/info/{version_id}`), or `unmatched`."""
    route = request.scope.get("route")
    return str(getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched")


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def observe_http(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Middleware: count and time every request under its route template."""
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = route_template(request)
        # The method comes from the client: anything outside HTTP's own set is one label, not a new series.
        method = request.method if request.method in HTTP_METHODS else "OTHER"
        HTTP_REQUESTS.labels(route, method, str(status)).inc()
        HTTP_DURATION.labels(route, method).observe(time.perf_counter() - started)
