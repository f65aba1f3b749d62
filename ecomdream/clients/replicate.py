"""The official Replicate SDK, pointed at the real API or at the sandbox by one base-URL setting."""

from __future__ import annotations

import re
from contextlib import AsyncExitStack
from typing import Any

import httpx
from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.version import Versions
from replicate.webhook import Webhooks, WebhookSigningSecret

from ecomdream.config import Settings
from ecomdream.contracts.prompt import PredictionStatus
from ecomdream.contracts.training import TrainingStatus

PROGRESS = re.compile(r"(\d{1,3})%\|")
TRANSIENT_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
# The answers the SDK's own transport retries by itself.
BUSY_STATUSES = frozenset({429, 503, 504})


# Replicate's documented limits per account: "create prediction" 600 requests a minute, every other
# endpoint 3,000 a minute. The workers' task queues are held under them (worker.py).
CREATES_PER_SECOND = 600 / 60
OTHERS_PER_SECOND = 3000 / 60
# An activity on the other queue makes at most this many calls (creating a training: its model, the training).
CALLS_PER_OTHER_ACTIVITY = 2


class ProviderBusy(ReplicateError):
    """Replicate answered 429, 503 or 504: the call may be made again, after `retry_after` seconds if said."""

    def __init__(self, status: int, detail: str | None, retry_after: float | None) -> None:
        super().__init__(status=status, detail=detail, title="Replicate is busy")
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None  # an HTTP date: rare, and the activity's own backoff is fine then


class OneCallTransport(httpx.AsyncBaseTransport):
    """One HTTP request per SDK call: an answer the SDK would retry by itself is raised as `ProviderBusy`.

    The SDK wraps every transport in its own retry loop (429, 503 and 504 on GETs, up to 10 times), which
    would call Replicate behind the task queues' rate limits. Raised here, the activity fails instead and
    Temporal retries it — through the rate-limited queue, after Replicate's `Retry-After`.
    """

    def __init__(self, wrapped: httpx.AsyncBaseTransport | None = None) -> None:
        self.wrapped = wrapped or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.wrapped.handle_async_request(request)
        if response.status_code not in BUSY_STATUSES:
            return response
        await response.aread()
        await response.aclose()
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = str(body["detail"]) if isinstance(body, dict) and body.get("detail") else None
        raise ProviderBusy(response.status_code, detail, _retry_after(response))

    async def aclose(self) -> None:
        await self.wrapped.aclose()


def create_replicate_client(settings: Settings, *, stack: AsyncExitStack | None = None) -> Client:
    """A client with the configured token and base URL that makes one HTTP request per call.

    With `stack`, its connections are closed when the stack closes.
    """
    transport = OneCallTransport()
    if stack is not None:
        stack.push_async_callback(transport.aclose)
    return Client(
        api_token=settings.replicate_token(), base_url=settings.replicate_api_base, transport=transport
    )


def split_model_version(model_version: str) -> tuple[str, str, str]:
    """(owner, name, version id) of `owner/name:version`."""
    key, _, version = model_version.rpartition(":")
    owner, _, name = key.partition("/")
    if not owner or not name or not version:
        raise ValueError(f"not a model version: {model_version!r}")
    return owner, name, version


async def delete_model_version(client: Client, model_version: str) -> bool:
    """`DELETE /v1/models/{owner}/{name}/versions/{id}` (the version, its predictions and their files).

    True when it was deleted now, False when it was already gone (404).
    """
    owner, name, version = split_model_version(model_version)
    try:
        await Versions(client=client, model=(owner, name)).async_delete(version)
    except ReplicateError as error:
        if error.status == 404:
            return False
        raise
    return True


async def delete_model(client: Client, owner: str, name: str) -> bool:
    """`DELETE /v1/models/{owner}/{name}` (a private model without versions); False when already gone."""
    try:
        await client.models.async_delete(owner, name)
    except ReplicateError as error:
        if error.status == 404:
            return False
        raise
    return True


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
