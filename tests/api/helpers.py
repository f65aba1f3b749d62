"""Steps a customer takes, shared by the API tests."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import stripe
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from ecomdream.config import SANDBOX_STRIPE_WEBHOOK_SECRET
from ecomdream.contracts import journey_id
from ecomdream.contracts.payment import JourneyState
from tests.fixtures.stack import eventually
from workflows.journey import JourneyWorkflow

INITIAL_PLAN = 1
ADDON_PLAN = 2


async def create_payment(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """POST /payments/create and return the 201 body."""
    response = await api.post("/api/v1/payments/create", json={"plan_id": INITIAL_PLAN, **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def stranger(api: httpx.AsyncClient) -> dict[str, str]:
    """The headers of another customer: a real access token that opens nothing of the test's customer."""
    created = await create_payment(api)
    return {"Authorization": f"Bearer {created['access_token']}"}


async def pay(checkout_url: str, email: str = "buyer@example.com") -> httpx.Response:
    """Submit the hosted checkout page's form, as the customer's browser does."""
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(checkout_url)
        assert page.status_code == 200, page.text
        return await browser.post(checkout_url, data={"email": email})


async def journey_state(temporal: Client, payment_id: str) -> JourneyState:
    """The journey's own view of itself (query)."""
    handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
    return await handle.query(JourneyWorkflow.get_state)


async def wait_stage(temporal: Client, payment_id: str, stage: str, within: float = 30) -> JourneyState:
    """Wait until the journey reaches stage."""
    return await eventually(
        lambda: journey_state(temporal, payment_id), lambda s: s.stage.value == stage, within=within
    )


async def payment_row(db: AsyncEngine, payment_id: str) -> dict[str, Any]:
    """The payment's ledger row."""
    async with db.connect() as conn:
        row = (
            (await conn.execute(text("SELECT * FROM payments WHERE id = :id"), {"id": payment_id}))
            .mappings()
            .one()
        )
    return dict(row)


async def sandbox_events(stripe_url: str, session_id: str | None = None) -> list[dict[str, Any]]:
    """Events the Stripe sandbox has emitted (optionally for one checkout session)."""
    params = {"object_id": session_id} if session_id else {}
    async with httpx.AsyncClient() as client:
        events: list[dict[str, Any]] = (
            await client.get(f"{stripe_url}/_sandbox/events", params=params)
        ).json()["data"]
    return events


def signed_event(event: dict[str, Any], secret: str = SANDBOX_STRIPE_WEBHOOK_SECRET) -> tuple[bytes, str]:
    """A body and Stripe-Signature header made by the official library's own signing helper."""
    body = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, int(time.time()))
    return body.encode(), header


def checkout_event(kind: str, payment_id: str, **session: Any) -> dict[str, Any]:
    """A Stripe event about a checkout session, shaped like Stripe's."""
    obj = {
        "id": f"cs_test_{uuid.uuid4().hex}",
        "object": "checkout.session",
        "client_reference_id": payment_id,
        "metadata": {"payment_id": payment_id},
        "amount_total": 1300,
        "currency": "usd",
        "customer_details": {"email": "signed@example.com"},
        "payment_intent": f"pi_{uuid.uuid4().hex[:24]}",
        "payment_status": "paid",
        "status": "complete",
    } | session
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": stripe.api_version,
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
    }
