"""Temporal and Postgres go away in the middle of a journey and come back: the work resumes, and while they
are away the API says 503 (retry later), never 500."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from ecomdream.contracts import journey_id
from ecomdream.devstack.stack import Stack
from tests.api.helpers import journey_state
from tests.api.test_prompts import prompt, ready_model
from tests.api.test_training import as_files, info, paid_payment, train
from tests.faults.helpers import (
    DOWNLOAD,
    answers_held,
    find,
    image_count,
    images_recorded_twice,
    pending_activities,
    predictions_for,
    trainings_for,
    wait_activity,
    wait_ready,
    webhooks_about,
)
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import eventually

UNAVAILABLE = {"code": 503, "message": "The service is temporarily unavailable, please retry in a moment"}


async def readiness(api: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    """GET /ready: status code and body."""
    response = await api.get("/ready")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def training_object(stack: Stack, version_id: str) -> dict[str, Any]:
    """The Replicate sandbox's current view of the version's (only) training."""
    (training,) = await trainings_for(stack, version_id)
    obj: dict[str, Any] = training["object"]
    return obj


async def test_a_journey_resumes_after_temporal_restarts_and_the_api_answers_503_meanwhile(
    api: httpx.AsyncClient,
    db: AsyncEngine,
    temporal: Client,
    stack: Stack,
    replicate_knobs: httpx.AsyncClient,
) -> None:
    model_payment, model_version = await ready_model(api, temporal)
    waiting_payment = await paid_payment(api, temporal)
    await replicate_knobs.post("/_sandbox/config", json={"training_seconds": 8})
    payment_id = await paid_payment(api, temporal)
    started = await train(api, payment_id, as_files(valid_photos(5)))
    assert started.status_code == 201, started.text
    version_id = str(started.json()["version_id"])
    await wait_activity(temporal, journey_id(payment_id), "poll_training", started=False)

    stack.temporal.stop()
    try:
        code, body = await readiness(api)
        assert (code, body["checks"]["temporal"]) == (503, "down"), body
        # Every request that needs a workflow is refused with 503 while Temporal is away.
        checkout, generation, upload = await asyncio.gather(
            api.post("/api/v1/payments/create", json={"plan_id": 1}),
            prompt(api, model_version, prompt="while temporal is down"),
            train(api, waiting_payment, as_files(valid_photos(5))),
        )
        for name, refused in (("checkout", checkout), ("prompt", generation), ("train", upload)):
            assert refused.status_code == 503, (name, refused.status_code, refused.text)
            assert refused.json()["code"] == 503, name
        # Reads served from Postgres keep working.
        assert (await info(api, version_id))["status"] == "training"
        # The training ends at Replicate meanwhile; its webhook cannot reach the journey.
        finished = await eventually(
            lambda: training_object(stack, version_id), lambda t: t["status"] == "succeeded", within=30
        )
        deliveries = await eventually(
            lambda: webhooks_about(stack, finished["id"]),
            lambda ws: bool(ws and ws[0]["attempts"]),
            within=10,
        )
        statuses = {a["status_code"] for w in deliveries for a in w["attempts"]}
        assert 500 not in statuses, deliveries
    finally:
        stack.temporal.start()

    ready = await eventually(lambda: info(api, version_id), lambda b: b["status"] != "training", within=90)
    assert ready["status"] == "ready", ready
    assert ready["info"]["images_left"] == 100
    state = await eventually(
        lambda: journey_state(temporal, payment_id), lambda s: s.stage.value == "ready", within=30
    )
    assert str(state.version_id) == version_id
    assert len(await trainings_for(stack, version_id)) == 1
    await wait_ready(stack)

    # The refused checkout left nothing behind: its workflow records the payment and opens the checkout, and
    # it never started, so there is no payment row and no Stripe session that could take money unwatched.
    async with db.connect() as conn:
        orphans = (
            (
                await conn.execute(
                    text("SELECT status, checkout_url FROM payments WHERE id NOT IN (:a, :b, :c)"),
                    {"a": payment_id, "b": waiting_payment, "c": model_payment},
                )
            )
            .mappings()
            .all()
        )
    assert orphans == [], orphans
    # Nothing refused was done behind the customer's back, and every refused request now succeeds.
    assert (await api.get(f"/api/v1/prompts/list/{model_version}")).json()["prompts"] == []
    assert (await api.post("/api/v1/payments/create", json={"plan_id": 1})).status_code == 201
    # Right after the outage the worker's pollers are still backing off: 202 (still generating) is fine.
    again_prompt = await prompt(api, model_version, prompt="after temporal is back")
    assert again_prompt.status_code in (201, 202), again_prompt.text
    generated = await eventually(
        lambda: api.get(f"/api/v1/prompts/{again_prompt.json()['prompt_id']}"),
        lambda r: r.json()["status"] != "running",
        within=30,
    )
    assert generated.json()["status"] == "succeeded", generated.json()
    listed = (await api.get(f"/api/v1/prompts/list/{model_version}")).json()["prompts"]
    assert [p["prompt"] for p in listed] == [generated.json()["prompt"]], "the refused prompt ran after all"
    assert (await info(api, model_version))["info"]["images_left"] == 99
    assert (await train(api, waiting_payment, as_files(valid_photos(5)))).status_code == 201


async def test_a_prompt_completes_after_postgres_comes_back_and_reads_answer_503_meanwhile(
    api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
) -> None:
    payment_id, version_id = await ready_model(api, temporal)
    marker = f"pg-outage-{uuid.uuid4().hex[:12]}"
    # The outputs' downloads are held until Postgres is down: the prompt cannot be recorded before.
    async with answers_held(stack, DOWNLOAD):
        accepted = await prompt(api, version_id, prompt=f"fault test {marker}", amount_images=4)
        assert accepted.status_code == 202, accepted.text
        stack.postgres.stop()
    prompt_id = str(accepted.json()["prompt_id"])
    prompt_workflow = f"prompt-{prompt_id}"
    reads = [
        f"/api/v1/versions/info/{version_id}",
        f"/api/v1/prompts/list/{version_id}",
        f"/api/v1/prompts/{prompt_id}",
        f"/api/v1/payments/{payment_id}",
        "/api/v1/payments/plans/list",
    ]

    try:
        answers = {path: (await api.get(path)) for path in reads}
        assert {path: r.status_code for path, r in answers.items()} == dict.fromkeys(reads, 503), {
            path: r.text for path, r in answers.items()
        }
        assert all(r.json() == UNAVAILABLE for r in answers.values())
        writes = {
            "checkout": await api.post("/api/v1/payments/create", json={"plan_id": 1}),
            "prompt": await prompt(api, version_id, prompt="while postgres is down"),
        }
        assert {name: r.status_code for name, r in writes.items()} == dict.fromkeys(writes, 503), {
            name: r.text for name, r in writes.items()
        }
        code, body = await readiness(api)
        assert (code, body["checks"]["postgres"]) == (503, "down"), body
        # The prediction finishes; recording it fails and is retried while Postgres is away.
        await eventually(
            lambda: predictions_for(stack, marker),
            lambda ps: bool(ps) and ps[0]["object"]["status"] == "succeeded",
            within=30,
        )

        async def record_attempt() -> int:
            found = find(await pending_activities(temporal, prompt_workflow), "record_prompt_finished")
            return found.attempt if found else 0

        await eventually(record_attempt, lambda n: n >= 3, within=30)
        still = await api.get(reads[0])
        assert still.status_code == 503, still.text
    finally:
        stack.postgres.start()

    async def status() -> dict[str, Any]:
        response = await api.get(f"/api/v1/prompts/{prompt_id}")
        return {"code": response.status_code, **response.json()}

    done = await eventually(status, lambda b: b["code"] == 200 and b["status"] != "running", within=60)
    assert done["status"] == "succeeded", done
    assert len(done["images"]) == 4
    assert await image_count(db, prompt_id) == 4
    assert await images_recorded_twice(db) == []
    assert (await info(api, version_id))["info"]["images_left"] == 96
    assert len(await predictions_for(stack, marker)) == 1
    await wait_ready(stack)
