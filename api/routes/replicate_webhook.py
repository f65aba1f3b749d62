"""The Replicate webhook: verify the Standard Webhooks signature, then signal the workflow it belongs to
(a running training's progress is written to its model's row instead)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, ValidationError
from replicate.exceptions import ReplicateException
from replicate.webhook import WebhookValidationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import StateDep
from api.schemas.payments import WebhookAck
from ecomdream.clients.replicate import prediction_status, training_status, verify_webhook
from ecomdream.contracts.prompt import PredictionEvent
from ecomdream.contracts.training import TrainingEvent, TrainingStatus
from ecomdream.db.session import transaction
from ecomdream.errors import InvalidRequest, Unavailable
from ecomdream.metrics import WEBHOOKS
from ecomdream.repositories.versions import VersionRepository
from workflows.journey import JourneyWorkflow
from workflows.prompt import PromptWorkflow

log = logging.getLogger("ecomdream.api.replicate")
router = APIRouter(prefix="/api/v1/replicate", tags=["webhooks"])

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TARGET = re.compile(rf"^(journey|prompt)-{UUID}$")


class _ReplicateBody(BaseModel):
    """The members of a training or prediction we read; their types are checked, the rest ignored."""

    model_config = ConfigDict(strict=True)

    id: str
    status: str
    logs: str | None = None
    error: Any = None


class _TrainingBody(_ReplicateBody):
    output: dict[str, Any] | None = None


class _PredictionBody(_ReplicateBody):
    output: list[str] | str | None = None
    metrics: dict[str, Any] | None = None


async def webhook_secret(state: StateDep) -> str:
    """The signing secret from settings, else fetched once from Replicate and kept."""
    if state.replicate_webhook_secret is None:
        if state.settings.replicate_webhook_secret is not None:
            state.replicate_webhook_secret = state.settings.replicate_webhook_secret.get_secret_value()
        else:
            await _fetch_secret(state)
    assert state.replicate_webhook_secret is not None
    return state.replicate_webhook_secret


async def _fetch_secret(state: StateDep) -> None:
    try:
        secret = await state.replicate.webhooks.default.async_secret()
    except ReplicateException as exc:
        raise Unavailable("Cannot verify webhooks right now") from exc
    state.replicate_webhook_secret = secret.key
    state.replicate_secret_fetched_at = time.monotonic()


_refetch = asyncio.Lock()


async def _rotated(state: StateDep) -> bool:
    """After a bad signature: fetch the secret again if it came from Replicate (it may have been
    rotated); whether a different secret came back.

    One fetch at a time, at most once per interval whether it worked or not, so a flood of bad
    signatures cannot become a flood of requests to Replicate.
    """
    async with _refetch:
        fetched = state.replicate_secret_fetched_at
        if (
            fetched is None
            or time.monotonic() - fetched < state.settings.replicate_webhook_secret_refetch_seconds
        ):
            return False
        state.replicate_secret_fetched_at = time.monotonic()  # a failed fetch counts too
        before = state.replicate_webhook_secret
        try:
            await _fetch_secret(state)
        except Unavailable:
            log.warning("could not fetch the Replicate signing secret again")
            return False
        return state.replicate_webhook_secret != before


async def _record_progress(state: StateDep, training: TrainingStatus) -> None:
    """A running training's `logs` event: its progress goes straight to the model's row.

    The journey is not signalled: it waits for the training's end only, and a signal per progress line
    (up to two a second for the whole training) would fill its history.
    """
    if training.progress is not None:
        async with transaction(state.sessionmaker) as session:
            await VersionRepository(session).set_training_progress(training.training_id, training.progress)
    WEBHOOKS.labels("replicate", "progress").inc()


@router.post("/webhook", response_model=WebhookAck, responses={400: {"description": "Bad signature"}})
async def replicate_webhook(
    request: Request, state: StateDep, target: str = Query(default="", max_length=100)
) -> WebhookAck:
    """Receive a Replicate event; duplicates (same webhook-id) are ignored by the workflow."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        try:
            verify_webhook(headers, raw, await webhook_secret(state))
        except WebhookValidationError:
            if not await _rotated(state):
                raise
            verify_webhook(headers, raw, await webhook_secret(state))
    except (WebhookValidationError, ValueError) as exc:
        # ValueError: a timestamp header that is not an integer, which the SDK does not catch.
        log.warning("rejected Replicate webhook: %s", type(exc).__name__)
        WEBHOOKS.labels("replicate", "bad_signature").inc()
        raise InvalidRequest("Invalid Replicate signature") from exc
    if not TARGET.match(target):
        raise InvalidRequest("Unknown webhook target")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequest("The webhook body is not JSON") from exc
    is_training = target.startswith("journey-")
    try:
        (_TrainingBody if is_training else _PredictionBody).model_validate(body)
    except ValidationError as exc:
        WEBHOOKS.labels("replicate", "malformed").inc()
        kind = "training" if is_training else "prediction"
        raise InvalidRequest(f"The webhook body is not a Replicate {kind}") from exc
    if is_training and not (training := training_status(body)).finished:
        await _record_progress(state, training)
        return WebhookAck()
    handle = state.temporal.get_workflow_handle(target)
    try:
        if is_training:
            event = TrainingEvent(webhook_id=headers["webhook-id"], training=training)
            await handle.signal(JourneyWorkflow.training_event, event)
        else:
            prediction = PredictionEvent(webhook_id=headers["webhook-id"], prediction=prediction_status(body))
            await handle.signal(PromptWorkflow.prediction_event, prediction)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        log.info("Replicate webhook for %s arrived after the workflow ended", target)
        WEBHOOKS.labels("replicate", "late").inc()
        return WebhookAck()
    WEBHOOKS.labels("replicate", "accepted").inc()
    return WebhookAck()
