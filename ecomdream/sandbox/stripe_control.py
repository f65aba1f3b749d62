"""Unauthenticated `/_sandbox` control endpoints for tests and scripts, and `/health`."""

from __future__ import annotations

import json
from typing import Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ecomdream.sandbox.stripe_core import JSON, SessionStateError
from ecomdream.sandbox.stripe_pages import DEFAULT_EMAIL
from ecomdream.sandbox.stripe_sessions import CheckoutSession
from ecomdream.sandbox.stripe_state import API_VERSION, SandboxState
from ecomdream.sandbox.stripe_webhooks import WebhookDispatcher


class PayRequest(BaseModel):
    """Body of `POST /_sandbox/sessions/{id}/pay`."""

    email: str = DEFAULT_EMAIL
    method: Literal["card", "async"] = "card"


class ConfigUpdate(BaseModel):
    """Body of `POST /_sandbox/config`; only the fields sent are changed."""

    webhook_url: str | None = None
    webhook_secret: str | None = None
    retry_base_delay: float | None = Field(default=None, ge=0)
    max_attempts: int | None = Field(default=None, ge=1, le=20)
    unavailable: bool | None = None


def _state_error(error: SessionStateError) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": "sandbox_error", "message": error.message}}, status_code=error.status
    )


def build_control_router(state: SandboxState, dispatcher: WebhookDispatcher) -> APIRouter:
    """Inspection and steering endpoints that real Stripe does not have."""
    router = APIRouter()

    @router.get("/health")
    async def health() -> JSON:
        """Liveness probe."""
        return {"status": "ok", "api_version": API_VERSION, "webhook_url": state.config.webhook_url}

    @router.get("/_sandbox/events")
    async def list_events(type: str | None = None, object_id: str | None = None) -> JSON:
        """All events, oldest first, with their delivery attempts."""
        with state.lock:
            data = [record.summary() for record in state.events.values()]
        data = [e for e in data if type in (None, e["type"]) and object_id in (None, e["object_id"])]
        return {"object": "list", "data": data}

    @router.get("/_sandbox/events/{event_id}")
    async def get_event(event_id: str) -> JSON:
        """One event with its delivery attempts."""
        return state.event(event_id).summary()

    @router.post("/_sandbox/events/{event_id}/resend", status_code=202)
    async def resend_event(event_id: str) -> JSON:
        """Deliver the same event again, freshly signed, like a duplicate delivery from Stripe."""
        record = state.event(event_id)
        dispatcher.enqueue(record.id)
        return {"id": record.id, "resent": True}

    @router.get("/_sandbox/refunds")
    async def list_refunds() -> JSON:
        """Every refund created, oldest first."""
        with state.lock:
            return {"object": "list", "data": list(state.refunds)}

    @router.get("/_sandbox/sessions")
    async def list_sessions() -> JSON:
        """Every session, oldest first."""
        with state.lock:
            return {"object": "list", "data": [state.session_json(s) for s in state.sessions.values()]}

    @router.get("/_sandbox/sessions/{session_id}")
    async def get_session(session_id: str) -> JSON:
        """A session plus sandbox-only details (line items, intent, promotion code)."""
        return _session_details(state, state.session(session_id))

    @router.post("/_sandbox/sessions/{session_id}/pay", response_model=None)
    async def pay_session(session_id: str, body: PayRequest | None = None) -> JSON | JSONResponse:
        """Same as submitting the hosted page."""
        request = body or PayRequest()
        try:
            session = state.complete_session(session_id, request.email, delayed=request.method == "async")
        except SessionStateError as error:
            return _state_error(error)
        return state.session_json(session)

    @router.post("/_sandbox/sessions/{session_id}/async_result", response_model=None)
    async def async_result(request: Request, session_id: str) -> JSON | JSONResponse:
        """Settle a delayed payment: `outcome=succeeded|failed` (form or JSON)."""
        try:
            session = state.settle_delayed_payment(session_id, await _outcome(request))
        except SessionStateError as error:
            return _state_error(error)
        return state.session_json(session)

    @router.post("/_sandbox/reset")
    async def reset() -> JSON:
        """Forget sessions, events, refunds and idempotency keys; seeds stay."""
        dispatcher.cancel_all()
        state.reset()
        return {"reset": True}

    @router.get("/_sandbox/config")
    async def get_config() -> JSON:
        """Current runtime configuration."""
        return _config_json(state)

    @router.post("/_sandbox/config")
    async def set_config(update: ConfigUpdate) -> JSON:
        """Change webhook settings at runtime (e.g. once the receiver knows its port)."""
        for name in update.model_fields_set:
            value = getattr(update, name)
            if value is not None or name == "webhook_url":
                setattr(state.config, name, value)
        return _config_json(state)

    return router


async def _outcome(request: Request) -> str:
    raw = (await request.body()).decode("utf-8", "replace")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            parsed = json.loads(raw or "{}")
        except json.JSONDecodeError:
            return ""
        return str(parsed.get("outcome", "")) if isinstance(parsed, dict) else ""
    return str(request.query_params.get("outcome") or dict(parse_qsl(raw)).get("outcome", ""))


def _session_details(state: SandboxState, session: CheckoutSession) -> JSON:
    body = state.session_json(session)
    intent = state.intents.get(session.payment_intent or "")
    body["sandbox"] = {
        "line_items": [vars(item) for item in session.items],
        "promotion_code": session.promotion.code if session.promotion else None,
        "payment_intent": intent.to_json() if intent else None,
        "amount_refunded": intent.amount_refunded if intent else 0,
    }
    return body


def _config_json(state: SandboxState) -> JSON:
    config = state.config
    return {
        "webhook_url": config.webhook_url,
        "webhook_secret": config.webhook_secret,
        "retry_base_delay": config.retry_base_delay,
        "max_attempts": config.max_attempts,
        "public_url": config.base_url,
        "unavailable": config.unavailable,
    }
