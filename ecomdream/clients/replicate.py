"""The official Replicate SDK, pointed at the real API or at the sandbox by one base-URL setting."""

from __future__ import annotations

import re
from typing import Any

from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.webhook import Webhooks, WebhookSigningSecret

from ecomdream.config import Settings

PROGRESS = re.compile(r"(\d{1,3})%\|")
TRANSIENT_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}


def create_replicate_client(settings: Settings) -> Client:
    """A client with the configured token and base URL."""
    return Client(api_token=settings.replicate_token(), base_url=settings.replicate_api_base)


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
