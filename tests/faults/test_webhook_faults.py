"""Hostile and unlucky webhook deliveries: duplicated, reordered, late, replayed, forged, tampered.

Replicate webhooks are signed here exactly as Replicate signs them (Standard Webhooks, with the secret the
sandbox account hands out); Stripe events with the official library's helper. Duplicates and the Stripe
signature basics are already covered in tests/api/test_payments.py and tests/api/test_training.py; this file
adds real journeys and prompts as targets, reordering, lateness and timestamp replays.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import stripe
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from ecomdream.config import SANDBOX_STRIPE_WEBHOOK_SECRET
from ecomdream.devstack.stack import Stack
from tests.api.helpers import (
    checkout_event,
    create_payment,
    journey_state,
    payment_row,
    signed_event,
    wait_stage,
)
from tests.api.test_prompts import prompt, ready_model
from tests.api.test_training import as_files, info, paid_payment, train
from tests.faults.helpers import (
    answers_held,
    pending_children,
    predictions_for,
    replicate_webhook_secret,
    standard_webhook_headers,
    trainings_for,
    version_row,
    webhooks_about,
)
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import eventually

REPLICATE_WEBHOOK = "/api/v1/replicate/webhook"
STRIPE_WEBHOOK = "/api/v1/payments/webhook"
POLL_PREDICTION = "GET /v1/predictions/{prediction_id}"
OLD = 600  # seconds: older than the 5 minutes both providers' receivers tolerate


def unsigned(response: httpx.Response) -> dict[str, Any]:
    """A prompt as GET /prompts/{id} shows it, without the presigned query of its image URLs (which carry
    the second they were signed in)."""
    body: dict[str, Any] = response.json()
    for image in body["images"]:
        for key in ("url", "cdn_url"):
            image[key] = image[key].split("?", 1)[0]
    return body


def path_of(url: str) -> str:
    """The path and query of the webhook URL a job was created with (`...?target=<workflow id>`)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def completion(stack: Stack, object_id: str) -> dict[str, Any]:
    """The `completed` webhook message the sandbox produced for a job (delivered or dropped)."""
    messages = await eventually(
        lambda: webhooks_about(stack, object_id),
        lambda ms: any(m["event"] == "completed" and m["state"] != "pending" for m in ms),
        within=30,
    )
    return next(m for m in messages if m["event"] == "completed")


async def deliver(
    api: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """POST a Replicate webhook to the API."""
    response = await api.post(path, content=body, headers=headers)
    answer: dict[str, Any] = response.json()
    return response.status_code, answer


async def test_duplicated_and_reordered_training_webhooks_have_one_effect(
    api: httpx.AsyncClient,
    db: AsyncEngine,
    temporal: Client,
    stack: Stack,
    replicate_knobs: httpx.AsyncClient,
) -> None:
    await replicate_knobs.post("/_sandbox/config", json={"training_seconds": 2})
    payment_id = await paid_payment(api, temporal)
    started = await train(api, payment_id, as_files(valid_photos(5)))
    assert started.status_code == 201, started.text
    version_id = str(started.json()["version_id"])
    await eventually(lambda: info(api, version_id), lambda b: b["status"] == "ready", within=60)
    before = await wait_stage(temporal, payment_id, "ready")
    row_before = await version_row(db, version_id)
    assert before.training_id is not None
    message = await completion(stack, before.training_id)
    assert message["state"] == "delivered", message
    secret = await replicate_webhook_secret(stack)
    path = path_of(message["url"])

    # The same message again (same webhook-id, as Replicate retries it), byte for byte twice.
    body = json.dumps(message["body"]).encode()
    duplicate = standard_webhook_headers(secret, message["id"], int(time.time()), body)
    for _ in range(2):
        assert (await deliver(api, path, body, duplicate))[0] == 200
    # An older `processing` update arriving after `succeeded`.
    stale = dict(message["body"], status="processing", output=None, completed_at=None, error=None)
    stale_body = json.dumps(stale).encode()
    stale_id = f"msg_{secrets.token_hex(12)}"
    headers = standard_webhook_headers(secret, stale_id, int(time.time()), stale_body)
    assert (await deliver(api, path, stale_body, headers))[0] == 200

    # A query sees the state after every signal the server accepted; the stale update is no signal at all:
    # a training that is not finished only updates its model's progress, which a ready model keeps.
    after = await journey_state(temporal, payment_id)
    assert after.seen_webhooks.count(message["id"]) == 1
    assert stale_id not in after.seen_webhooks
    assert (after.stage.value, after.model_version, after.training_id) == (
        "ready",
        before.model_version,
        before.training_id,
    )
    row_after = await version_row(db, version_id)
    for column in ("status", "progress", "model_version", "ready_at", "images_quota", "error"):
        assert row_after[column] == row_before[column], column
    assert len(await trainings_for(stack, version_id)) == 1
    assert (await prompt(api, version_id)).status_code == 201, "the model still serves prompts"


async def test_completions_that_arrive_after_polling_finished_the_work_change_nothing(
    api: httpx.AsyncClient,
    db: AsyncEngine,
    temporal: Client,
    stack: Stack,
    replicate_knobs: httpx.AsyncClient,
) -> None:
    await replicate_knobs.post(
        "/_sandbox/config", json={"drop_webhooks": True, "training_seconds": 2, "prediction_seconds": 1}
    )
    payment_id, version_id = await ready_model(api, temporal)
    marker = f"late-{uuid.uuid4().hex[:12]}"
    generated = await prompt(api, version_id, prompt=f"fault test {marker}", amount_images=4)
    assert generated.status_code == 201, generated.text
    prompt_id = generated.json()["prompt_id"]
    state = await journey_state(temporal, payment_id)
    row = await version_row(db, version_id)
    listed = unsigned(await api.get(f"/api/v1/prompts/{prompt_id}"))
    assert state.training_id is not None
    (prediction,) = await predictions_for(stack, marker)
    secret = await replicate_webhook_secret(stack)

    # Polling found both ends; the completion webhooks were lost and now arrive, validly signed.
    for object_id in (state.training_id, prediction["id"]):
        message = await completion(stack, object_id)
        assert message["state"] == "dropped", message
        body = json.dumps(message["body"]).encode()
        headers = standard_webhook_headers(secret, message["id"], int(time.time()), body)
        assert (await deliver(api, path_of(message["url"]), body, headers))[0] == 200

    late = await eventually(
        lambda: journey_state(temporal, payment_id),
        lambda s: len(s.seen_webhooks) > len(state.seen_webhooks),
        within=10,
    )
    assert late.model_copy(update={"seen_webhooks": state.seen_webhooks}) == state
    assert await version_row(db, version_id) == row
    assert unsigned(await api.get(f"/api/v1/prompts/{prompt_id}")) == listed
    assert (await info(api, version_id))["info"]["images_left"] == 96
    assert len(await predictions_for(stack, marker)) == 1


async def test_replayed_forged_and_tampered_webhooks_are_refused_and_cannot_end_a_prompt(
    api: httpx.AsyncClient,
    db: AsyncEngine,
    temporal: Client,
    stack: Stack,
    replicate_knobs: httpx.AsyncClient,
) -> None:
    payment_id, version_id = await ready_model(api, temporal)
    await replicate_knobs.post("/_sandbox/config", json={"drop_webhooks": True})
    marker = f"forged-{uuid.uuid4().hex[:12]}"
    # Without webhooks only a poll can end the prompt, and the polls' answers are held until every forgery
    # was sent: the prompt is still waiting for its prediction when they arrive, however slowly they come.
    async with answers_held(stack, POLL_PREDICTION):
        request = asyncio.create_task(prompt(api, version_id, prompt=f"fault test {marker}"))
        (workflow_id,) = await eventually(
            lambda: pending_children(temporal, f"journey-{payment_id}"), bool, within=20
        )
        (prediction,) = await eventually(lambda: predictions_for(stack, marker), bool, within=20)
        path = f"{REPLICATE_WEBHOOK}?target={workflow_id}"
        secret = await replicate_webhook_secret(stack)
        failed = dict(prediction["object"], status="failed", error="forged failure", output=None)
        forged = json.dumps(failed).encode()
        now = int(time.time())
        wrong_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        innocent = json.dumps(dict(prediction["object"], status="processing")).encode()
        attempts = {
            "replayed with an old timestamp": (
                forged,
                standard_webhook_headers(secret, "msg_old", now - OLD, forged),
            ),
            "signed with another secret": (
                forged,
                standard_webhook_headers(wrong_secret, "msg_wrong", now, forged),
            ),
            "altered after signing": (forged, standard_webhook_headers(secret, "msg_altered", now, innocent)),
        }
        for case, (body, headers) in attempts.items():
            code, answer = await deliver(api, path, body, headers)
            assert (code, answer["message"]) == (400, "Invalid Replicate signature"), case

    response = await request
    assert response.status_code in (201, 202), response.text
    prompt_id = response.json()["prompt_id"]
    done = await eventually(
        lambda: api.get(f"/api/v1/prompts/{prompt_id}"), lambda r: r.json()["status"] != "running", within=30
    )
    assert done.json()["status"] == "succeeded", done.json()
    assert len(done.json()["images"]) == 1
    assert (await info(api, version_id))["info"]["images_left"] == 99


async def stripe_post(api: httpx.AsyncClient, event: dict[str, Any], timestamp: int | None = None) -> int:
    """Deliver a Stripe event signed by the official helper (optionally with another timestamp)."""
    if timestamp is None:
        body, header = signed_event(event)
    else:
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            payload, SANDBOX_STRIPE_WEBHOOK_SECRET, timestamp
        )
        body = payload.encode()
    return (await api.post(STRIPE_WEBHOOK, content=body, headers={"stripe-signature": header})).status_code


async def test_a_stripe_event_replayed_with_an_old_timestamp_is_refused(
    api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
) -> None:
    payment_id = (await create_payment(api))["payment_id"]
    event = checkout_event("checkout.session.completed", payment_id)
    assert await stripe_post(api, event, timestamp=int(time.time()) - OLD) == 400
    assert (await journey_state(temporal, payment_id)).stage.value == "awaiting_payment"
    row = await payment_row(db, payment_id)
    assert (row["status"], row["email"], row["amount_paid"]) == ("pending", None, None)
    # The very same event, freshly signed, is accepted: only the replay was refused.
    assert await stripe_post(api, event) == 200
    await wait_stage(temporal, payment_id, "paid")


async def test_stripe_events_out_of_order_settle_the_payment_once(
    api: httpx.AsyncClient, db: AsyncEngine, temporal: Client
) -> None:
    payment_id = (await create_payment(api))["payment_id"]
    session = {"id": f"cs_test_{uuid.uuid4().hex}", "payment_intent": f"pi_{uuid.uuid4().hex[:24]}"}
    succeeded = checkout_event("checkout.session.async_payment_succeeded", payment_id, **session)
    # A delayed payment method: `completed` (unpaid) is sent first but arrives after the money did.
    completed = checkout_event("checkout.session.completed", payment_id, payment_status="unpaid", **session)
    failed = checkout_event(
        "checkout.session.async_payment_failed", payment_id, payment_status="unpaid", **session
    )
    for event in (succeeded, completed, failed):
        assert await stripe_post(api, event) == 200

    # Every event was taken in, and the settled payment was recorded (the stage moves on after the ledger).
    state = await eventually(
        lambda: journey_state(temporal, payment_id),
        lambda s: failed["id"] in s.seen_events and s.stage.value != "awaiting_payment",
        within=15,
    )
    assert state.stage.value == "paid"
    assert state.images_quota == 100
    row = await eventually(lambda: payment_row(db, payment_id), lambda r: r["status"] == "paid")
    assert (row["amount_paid"], row["payment_intent_id"]) == (1300, session["payment_intent"])
    # Photos can be uploaded: the journey is really paid, not failed by the late `async_payment_failed`.
    started = await train(api, payment_id, as_files(valid_photos(5)))
    assert started.status_code == 201, started.text


async def test_a_signing_secret_rotated_at_replicate_is_fetched_again_and_webhooks_keep_arriving(
    api: httpx.AsyncClient, temporal: Client, stack: Stack
) -> None:
    _, version_id = await ready_model(api, temporal)  # the API has fetched the current secret
    async with httpx.AsyncClient(base_url=stack.replicate_url) as sandbox:
        assert (await sandbox.post("/_sandbox/webhook_secret/rotate")).status_code == 200
    marker = f"rotated-{uuid.uuid4().hex[:12]}"
    generated = await prompt(api, version_id, prompt=f"fault test {marker}")
    assert generated.status_code == 201, generated.text
    (prediction,) = await predictions_for(stack, marker)

    (message,) = await eventually(
        lambda: webhooks_about(stack, prediction["id"]),
        lambda ws: bool(ws) and ws[-1]["state"] != "pending",
        within=20,
    )
    assert [a["status_code"] for a in message["attempts"]] == [200], message
