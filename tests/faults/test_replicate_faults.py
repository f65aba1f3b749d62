"""Replicate answers half of all API calls with 429 (Retry-After: 1), 500 or 503 while journeys train and
generate: every journey still completes exactly once, failures are reported as what they are, and the workers
never call Replicate faster than their budgets (ECOMDREAM_REPLICATE_RATE_SHARE of Replicate's limits).

One faulty run (three trainings and five prompts) is shared by the tests of this module, each checking one
property of it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from ecomdream.clients.replicate import CALLS_PER_OTHER_ACTIVITY
from ecomdream.config import Settings
from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE, REPLICATE_PREDICT_TASK_QUEUE, journey_id
from ecomdream.devstack.stack import Stack
from tests.api.helpers import journey_state, wait_stage
from tests.api.test_prompts import prompt, ready_model
from tests.api.test_training import as_files, info, paid_payment
from tests.faults.helpers import (
    image_count,
    images_recorded_twice,
    predictions_for,
    run_histories,
    sandbox_get,
    trainings_for,
)
from tests.fixtures.photos import valid_photos
from tests.fixtures.replicate_calls import PREDICTION_CREATES, busiest_second, replicate_calls
from tests.fixtures.stack import eventually
from tests.fixtures.wallet import WALLET
from worker import replicate_budgets

TRAININGS = 3
# The faults last until every training has been submitted and the first prompt generated, at most this long:
# past it the activities' exponential backoff (2 s doubling to 60 s) would stretch the test by minutes.
FAULT_WINDOW_S = 30
REPLICATE_ACTIVITIES = {"create_training", "poll_training", "create_prediction", "poll_prediction"}


def configured_budgets(stack: Stack) -> dict[str, float]:
    """Activities per second on each Replicate queue, from the worker's settings (as the worker sets them)."""
    share = (stack.worker.env or {}).get("ECOMDREAM_REPLICATE_RATE_SHARE")
    settings = Settings() if share is None else Settings(replicate_rate_share=float(share))
    return replicate_budgets(settings)


async def generate(api: httpx.AsyncClient, version_id: str, amount: int) -> dict[str, Any]:
    """One prompt, followed until it ends; returns its id, marker and final state."""
    marker = f"flaky-{amount}-{uuid.uuid4().hex[:10]}"
    # A prompt followed to its end by polling (a 202) shows "succeeded" a moment before its journey takes the
    # next one: like any client, retry the 409 "still running" until the desk is free.
    response = await eventually(
        lambda: prompt(api, version_id, prompt=f"fault test {marker}", amount_images=amount),
        lambda r: r.status_code != 409,
        within=30,
    )
    assert response.status_code in (201, 202), response.text
    prompt_id = str(response.json()["prompt_id"])

    async def status() -> dict[str, Any]:
        body: dict[str, Any] = (await api.get(f"/api/v1/prompts/{prompt_id}")).json()
        return body

    done = await eventually(status, lambda b: b["status"] != "running", within=120)
    return {"id": prompt_id, "marker": marker, "amount": amount, "version_id": version_id, "final": done}


async def start_training(api: httpx.AsyncClient, temporal: Client, payment_id: str) -> str:
    """Upload photos, then wait until the journey has submitted the training to Replicate (retries included:
    the upload is answered once the photos are accepted, before the zip and the submission)."""
    started = await api.post(
        f"/api/v1/versions/train/{payment_id}",
        params={"class": "sneaker"},
        files=as_files(valid_photos(5)),
        timeout=170,
    )
    assert started.status_code == 201, started.text
    await eventually(
        lambda: journey_state(temporal, payment_id), lambda s: s.training_id is not None, within=170
    )
    return str(started.json()["version_id"])


async def settled(api: httpx.AsyncClient, version_id: str) -> dict[str, Any]:
    """The model once its training ended."""
    return await eventually(lambda: info(api, version_id), lambda b: b["status"] != "training", within=90)


async def failures_reported(temporal: Client, workflow_id: str) -> list[str]:
    """The last failure Temporal recorded before each retried attempt of a Replicate activity (every run)."""
    messages = []
    for history in await run_histories(temporal, workflow_id):
        names: dict[int, str] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                names[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attrs = event.activity_task_started_event_attributes
                if names.get(attrs.scheduled_event_id) in REPLICATE_ACTIVITIES and attrs.HasField(
                    "last_failure"
                ):
                    messages.append(f"{names[attrs.scheduled_event_id]}: {attrs.last_failure.message}")
    return messages


@dataclass
class FaultRun:
    """What happened during the faulty run."""

    since: float
    faults_until: float
    until: float
    model_version: str
    payments: list[str]
    versions: list[str | BaseException]
    prompts: list[dict[str, Any] | BaseException]


@pytest.fixture(scope="module")
async def fault_run(stack: Stack, temporal: Client, db_engine: AsyncEngine) -> AsyncIterator[FaultRun]:
    """Three journeys train and five prompts generate while Replicate fails half of all calls."""
    async with (
        httpx.AsyncClient(base_url=stack.api_url, timeout=30, auth=WALLET) as api,
        httpx.AsyncClient(base_url=stack.replicate_url, timeout=10) as knobs,
    ):
        original = (await knobs.get("/_sandbox/config")).json()
        try:
            yield await run_with_faults(api, temporal, knobs)
        finally:
            await knobs.post("/_sandbox/config", json=original)


async def run_with_faults(api: httpx.AsyncClient, temporal: Client, knobs: httpx.AsyncClient) -> FaultRun:
    """The scenario; outcomes are recorded (exceptions included) for the tests to judge."""
    _, model_version = await ready_model(api, temporal)
    payments = list(await asyncio.gather(*(paid_payment(api, temporal) for _ in range(TRAININGS))))
    faulty = {"error_rate": 0.5, "error_status": [429, 500, 503]}
    assert (await knobs.post("/_sandbox/config", json=faulty)).status_code == 200
    since = time.time()
    trainings = [asyncio.create_task(start_training(api, temporal, payment_id)) for payment_id in payments]
    first_prompt = asyncio.create_task(generate(api, model_version, 1))
    await asyncio.wait([*trainings, first_prompt], timeout=FAULT_WINDOW_S)
    faults_until = time.time()
    assert (await knobs.post("/_sandbox/config", json={"error_rate": 0.0})).status_code == 200

    versions = list(await asyncio.gather(*trainings, return_exceptions=True))
    prompts: list[dict[str, Any] | BaseException] = list(
        await asyncio.gather(first_prompt, return_exceptions=True)
    )

    async def ready_then_generate(payment_id: str, version: str | BaseException) -> dict[str, Any]:
        assert isinstance(version, str), version
        model = await settled(api, version)
        assert model["status"] == "ready", model
        await wait_stage(temporal, payment_id, "ready")
        return await generate(api, version, 4)

    prompts += await asyncio.gather(
        generate(api, model_version, 4),
        *(ready_then_generate(p, v) for p, v in zip(payments, versions, strict=True)),
        return_exceptions=True,
    )
    return FaultRun(since, faults_until, time.time(), model_version, payments, versions, prompts)


def finished(run: FaultRun) -> tuple[list[str], list[dict[str, Any]]]:
    """The versions and prompts, failing the test if any of them did not get that far."""
    versions = [v for v in run.versions if isinstance(v, str)]
    prompts = [p for p in run.prompts if isinstance(p, dict)]
    problems = [repr(x) for x in [*run.versions, *run.prompts] if isinstance(x, BaseException)]
    assert not problems, problems
    return versions, prompts


async def test_every_journey_completes_exactly_once_through_replicate_errors(
    fault_run: FaultRun, api: httpx.AsyncClient, stack: Stack, db_engine: AsyncEngine
) -> None:
    versions, prompts = finished(fault_run)
    for version_id in [fault_run.model_version, *versions]:
        assert len(await trainings_for(stack, version_id)) == 1
    for p in prompts:
        assert p["final"]["status"] == "succeeded", p
        assert len(p["final"]["images"]) == p["amount"], p
        assert len(await predictions_for(stack, p["marker"])) == 1, p
        assert await image_count(db_engine, p["id"]) == p["amount"], p
    assert await images_recorded_twice(db_engine) == []
    assert (await info(api, fault_run.model_version))["info"]["images_left"] == 100 - 5
    for version_id in versions:
        assert (await info(api, version_id))["info"]["images_left"] == 100 - 4
    requests = await sandbox_get(stack.replicate_url, "/_sandbox/requests")
    assert sum(e["faults"] for e in requests["endpoints"].values()) > 0, "the sandbox injected no faults"


async def test_replicate_errors_are_recorded_with_their_cause(fault_run: FaultRun, temporal: Client) -> None:
    _, prompts = finished(fault_run)
    workflows = [journey_id(p) for p in fault_run.payments] + [f"prompt-{p['id']}" for p in prompts]
    reported = [m for w in workflows for m in await failures_reported(temporal, w)]
    assert reported, "no Replicate activity was retried"
    lost = [m for m in reported if "Failed building exception result" in m]
    assert not lost, (
        f"{len(lost)} of {len(reported)} failures Temporal recorded for retried Replicate activities lost "
        f"Replicate's error, e.g. {lost[:2]}"
    )


def _over(calls: dict[str, list[float]], limit: float, what: str, run: FaultRun) -> str | None:
    """Why the busiest second of these calls broke the limit (None when it did not)."""
    stamps = [t for times in calls.values() for t in times]
    busiest, at = busiest_second(stamps)
    # Temporal's queue limiter hands tasks out in small bursts (at 2/s: three at once every two seconds),
    # so one sliding second may show limit + 1, nothing more, at the test stack's small budgets. (At larger
    # budgets a burst is about a second's worth: the bench shows the 10-second rate.)
    if busiest <= limit + 1:
        return None
    that_second = {e: n for e, times in calls.items() if (n := sum(at <= t < at + 1 for t in times))}
    return (
        f"{busiest} {what} within one second (limit {limit:g}/s; {len(stamps)} in "
        f"{run.until - run.since:.0f}s, faults during the first {run.faults_until - run.since:.0f}s): "
        f"{that_second}"
    )


async def test_replicate_is_never_called_faster_than_the_budgets(fault_run: FaultRun, stack: Stack) -> None:
    budgets = configured_budgets(stack)
    calls = await replicate_calls(stack.replicate_url, fault_run.since, fault_run.until)
    creates = {e: times for e, times in calls.items() if e in PREDICTION_CREATES}
    others = {e: times for e, times in calls.items() if e not in PREDICTION_CREATES}
    assert sum(map(len, creates.values())) > budgets[REPLICATE_PREDICT_TASK_QUEUE], (
        "too few to test the limit"
    )
    # An activity on the other queue makes at most two calls; a prediction create retried after a failure
    # looks for what its previous attempt made (one page of Replicate's list, an other call).
    other_limit = (
        budgets[REPLICATE_OTHER_TASK_QUEUE] * CALLS_PER_OTHER_ACTIVITY + budgets[REPLICATE_PREDICT_TASK_QUEUE]
    )
    problems = [
        _over(creates, budgets[REPLICATE_PREDICT_TASK_QUEUE], "prediction creates", fault_run),
        _over(others, other_limit, "other Replicate calls", fault_run),
    ]
    assert not any(problems), problems
