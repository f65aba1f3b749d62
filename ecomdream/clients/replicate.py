"""The official Replicate SDK, pointed at the real API or at the sandbox by one base-URL setting."""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx
from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.webhook import Webhooks, WebhookSigningSecret

from ecomdream.config import Settings
from ecomdream.contracts.prompt import PredictionStatus
from ecomdream.contracts.training import TrainingStatus

PROGRESS = re.compile(r"(\d{1,3})%\|")
TRANSIENT_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


class PacedTransport(httpx.AsyncBaseTransport):
    """Spaces requests evenly at `per_second`, so no one-second window sees more than that (+1 at the edge).

    It sits under the SDK's own retry transport, so the SDK's retries of 429s and 5xx are paced too.
    """

    def __init__(self, per_second: float, wrapped: httpx.AsyncBaseTransport | None = None) -> None:
        self.interval = 1.0 / per_second
        self.wrapped = wrapped or httpx.AsyncHTTPTransport()
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)
        return await self.wrapped.handle_async_request(request)

    async def aclose(self) -> None:
        await self.wrapped.aclose()


def create_replicate_client(
    settings: Settings, *, paced: bool = False, stack: AsyncExitStack | None = None
) -> Client:
    """A client with the configured token and base URL; `paced` holds it to the configured request rate.

    With `stack`, its connections are closed when the stack closes.
    """
    transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
    if paced:
        transport = PacedTransport(settings.replicate_requests_per_second, transport)
    if stack is not None:
        stack.push_async_callback(transport.aclose)
    return Client(
        api_token=settings.replicate_token(), base_url=settings.replicate_api_base, transport=transport
    )


def is_transient(error: ReplicateError) -> bool:
    """Whether retrying the same call later may succeed (rate limits, server errors)."""
    return error.status is None or error.status in TRANSIENT_STATUSES


def progress_from_logs(logs: str | None) -> float | None:
    """The trainer's latest progress ("  42%|████ | 420/1000") as 0.0-1.0, if it printed any."""
    if not logs:
        return None
    matches = PROGRESS.findall(logs[-4000:])
    return min(int(matches[-1]), 100) / 100 if matches else None


def verify_webhook(headers: dict[str, str], body: str, secret: str, tolerance: int = 300) -> None:
    """Raise unless the Standard Webhooks signature matches and the timestamp is recent."""
    Webhooks.validate(
        headers=headers, body=body, secret=WebhookSigningSecret(key=secret), tolerance=tolerance
    )


def model_version_of(output: Any) -> str | None:
    """The trained version from a training's output (`owner/name:version`)."""
    if isinstance(output, dict) and output.get("version"):
        return str(output["version"])
    return None


def as_dict(obj: Any) -> dict[str, Any]:
    """A Replicate SDK object (or a webhook body) as a plain dict."""
    if isinstance(obj, dict):
        return obj
    data: dict[str, Any] = obj.dict()
    return data


def training_status(obj: Any) -> TrainingStatus:
    """The parts of a Replicate training the journey needs."""
    body = as_dict(obj)
    status = str(body.get("status", ""))
    version = model_version_of(body.get("output"))
    error = str(body["error"]) if body.get("error") else None
    if status == "succeeded" and version is None:
        # Nothing to generate with: a failure for the customer (refunded), not a ready model.
        status, error = "failed", "Replicate finished the training but returned no model version"
    return TrainingStatus(
        training_id=str(body.get("id", "")),
        status=status,
        model_version=version,
        error=error,
        progress=progress_from_logs(body.get("logs")),
    )


def prediction_status(obj: Any) -> PredictionStatus:
    """The parts of a Replicate prediction a prompt needs."""
    body = as_dict(obj)
    output = body.get("output")
    urls = tuple(str(u) for u in output) if isinstance(output, list) else ((str(output),) if output else ())
    metrics = body.get("metrics") or {}
    return PredictionStatus(
        prediction_id=str(body.get("id", "")),
        status=str(body.get("status", "")),
        output=urls,
        error=str(body["error"]) if body.get("error") else None,
        predict_time=metrics.get("predict_time") if isinstance(metrics, dict) else None,
    )
