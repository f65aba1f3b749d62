"""The Replicate webhook: verify the Standard Webhooks signature, then signal the journey it belongs to."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import APIRouter, Query, Request
from replicate.exceptions import ReplicateException
from replicate.webhook import WebhookValidationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import StateDep
from api.schemas.payments import WebhookAck
from ecomdream.clients.replicate import model_version_of, progress_from_logs, verify_webhook
from ecomdream.contracts.training import TrainingEvent, TrainingStatus
from ecomdream.errors import BadRequest, ServiceUnavailable
from workflows.journey import JourneyWorkflow

log = logging.getLogger("ecomdream.api.replicate")
router = APIRouter(prefix="/api/v1/replicate", tags=["webhooks"])

JOURNEY_ID = re.compile(r"^journey-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def webhook_secret(state: StateDep) -> str:
    """The signing secret from settings, else fetched once from Replicate and kept."""
    if state.replicate_webhook_secret is None:
        if state.settings.replicate_webhook_secret is not None:
            state.replicate_webhook_secret = state.settings.replicate_webhook_secret.get_secret_value()
        else:
            try:
                secret = await state.replicate.webhooks.default.async_secret()
            except ReplicateException as exc:
                raise ServiceUnavailable("Cannot verify webhooks right now") from exc
            state.replicate_webhook_secret = secret.key
    return state.replicate_webhook_secret


def training_status(body: dict[str, Any]) -> TrainingStatus:
    """The parts of a Replicate training object the journey needs."""
    return TrainingStatus(
        training_id=str(body.get("id", "")),
        status=str(body.get("status", "")),
        model_version=model_version_of(body.get("output")),
        error=str(body["error"]) if body.get("error") else None,
        progress=progress_from_logs(body.get("logs")),
    )


@router.post("/webhook", response_model=WebhookAck, responses={400: {"description": "Bad signature"}})
async def replicate_webhook(
    request: Request, state: StateDep, journey: str = Query(default="", max_length=100)
) -> WebhookAck:
    """Receive a Replicate event; duplicates (same webhook-id) are ignored by the journey."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        verify_webhook(headers, raw, await webhook_secret(state))
    except WebhookValidationError as exc:
        log.warning("rejected Replicate webhook: %s", type(exc).__name__)
        raise BadRequest("Invalid Replicate signature") from exc
    if not JOURNEY_ID.match(journey):
        raise BadRequest("Unknown webhook target")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest("The webhook body is not JSON") from exc
    event = TrainingEvent(webhook_id=headers["webhook-id"], training=training_status(body))
    try:
        await state.temporal.get_workflow_handle(journey).signal(JourneyWorkflow.training_event, event)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        log.info("Replicate webhook for %s arrived after the journey ended", journey)
    return WebhookAck()
