"""The alert rules watch what the running service exports.

The test makes each event an alert is about happen on the real stack: a sale, a training given up at its
deadline whose refund Stripe refuses, a prediction given up at its deadline, Replicate throttling a call,
forged webhooks, a readiness check, a workflow type no worker knows. Then every metric and every
`label="value"` the rules select must be on the API's or the worker's /metrics, and the counters the worker
creates at zero must be the very series the events counted (a series born at 1 shows Prometheus no increase).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowUpdateStage

from ecomdream.clients.storage import Storage
from ecomdream.config import Settings
from ecomdream.contracts import journey_id, staging_prefix
from ecomdream.contracts.payment import Attention
from ecomdream.contracts.prompt import PromptRequest, PromptSpec
from ecomdream.contracts.training import StagedPhoto, TrainRequest
from ecomdream.devstack.stack import Stack
from tests.api.helpers import payment_row, wait_stage
from tests.api.test_prompts import ready_model
from tests.api.test_training import paid_payment
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import eventually
from tests.promql import PROMETHEUS_SERIES, alert_rules, exact_selectors, promql_metric_names
from workflows.journey import JourneyWorkflow
from workflows.metrics import WATCHED

Series = dict[str, list[dict[str, str]]]
Values = dict[tuple[str, frozenset[tuple[str, str]]], float]

# The events this test makes happen, as (metric, labels): each must be counted at least once more afterwards.
EVENTS = [
    ("ecomdream_payments_total", {"kind": "plan", "outcome": "paid"}),
    ("ecomdream_operator_attention_total", {"reason": "refund_refused", "workflow_type": "JourneyWorkflow"}),
    ("ecomdream_deadlines_missed_total", {"work": "training", "workflow_type": "JourneyWorkflow"}),
    ("ecomdream_deadlines_missed_total", {"work": "prediction", "workflow_type": "PromptWorkflow"}),
    ("ecomdream_replicate_errors_total", {"status": "429"}),
    ("ecomdream_webhooks_total", {"provider": "stripe", "outcome": "bad_signature"}),
    ("ecomdream_webhooks_total", {"provider": "replicate", "outcome": "bad_signature"}),
    ("temporal_workflow_task_execution_failed_total", {"workflow_type": "NoSuchWorkflow"}),
]


async def scrape(stack: Stack) -> tuple[Series, Values]:
    """Every sample of the API's and the worker's /metrics: label sets by name, and values."""
    series: Series = {}
    values: Values = {}
    async with httpx.AsyncClient() as client:
        for port in (stack.ports.metrics, stack.ports.worker_metrics):
            body = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            for family in text_string_to_metric_families(body):
                for sample in family.samples:
                    series.setdefault(sample.name, []).append(dict(sample.labels))
                    values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series, values


def total(values: Values, name: str, labels: dict[str, str]) -> float:
    """The sum of the samples of name that carry labels."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in values.items() if sample == name and wanted <= have)


@asynccontextmanager
async def knobs(replicate_knobs: httpx.AsyncClient, **changes: Any) -> AsyncIterator[None]:
    """The Replicate sandbox with changed knobs, put back afterwards."""
    before = (await replicate_knobs.get("/_sandbox/config")).json()
    await replicate_knobs.post("/_sandbox/config", json=changes)
    try:
        yield
    finally:
        await replicate_knobs.post("/_sandbox/config", json={key: before[key] for key in changes})


async def forge_webhooks(api: httpx.AsyncClient) -> None:
    """One delivery with a bad signature to each provider's webhook."""
    stripe = await api.post(
        "/api/v1/payments/webhook", content=b"{}", headers={"stripe-signature": "t=1,v1=00"}
    )
    replicate = await api.post(
        f"/api/v1/replicate/webhook?target=journey-{uuid.uuid4()}",
        content=b"{}",
        headers={
            "webhook-id": "msg_forged",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,Zm9yZ2Vk",
        },
    )
    assert (stripe.status_code, replicate.status_code) == (400, 400)


async def stage(storage: Storage, payment_id: str) -> TrainRequest:
    """Five photos staged as the upload route stages them, in a train request with a 2-second deadline."""
    upload_id = uuid.uuid4()
    photos = []
    for index, (name, data) in enumerate(valid_photos(5)):
        key = f"{staging_prefix(payment_id)}{upload_id}/{index:02d}"
        await storage.put(key, data, "image/jpeg")
        photos.append(StagedPhoto(name=name, key=key))
    return TrainRequest(
        upload_id=upload_id, class_name="teapot", photos=tuple(photos), poll_seconds=0.5, deadline_seconds=2
    )


async def training_given_up_and_refund_refused(
    api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, storage: Storage, replicate: httpx.AsyncClient
) -> None:
    """A sale whose training outlives its deadline, and whose refund Stripe then refuses."""
    payment_id = await paid_payment(api, temporal)
    await eventually(lambda: payment_row(db, payment_id), lambda r: r["payment_intent_id"] is not None)
    async with db.begin() as conn:  # the charge is gone at Stripe: the refund will be refused
        await conn.execute(
            text("UPDATE payments SET payment_intent_id = 'pi_gone' WHERE id = :id"), {"id": payment_id}
        )
    handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
    async with knobs(replicate, training_seconds=120):
        await handle.execute_update(JourneyWorkflow.train, await stage(storage, payment_id))
        state = await wait_stage(temporal, payment_id, "failed", within=60)
    assert state.error == "Training did not finish in time"
    assert state.attention is Attention.REFUND_REFUSED


async def prediction_given_up(temporal: Client, payment_id: str, replicate: httpx.AsyncClient) -> None:
    """A prompt whose prediction outlives its 2-second deadline."""
    handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
    request = PromptRequest(
        prompt_id=uuid.uuid4(),
        spec=PromptSpec(prompt="TOK teapot on a beach", num_outputs=1),
        poll_seconds=0.5,
        deadline_seconds=2,
    )
    async with knobs(replicate, prediction_seconds=60):
        outcome = await handle.execute_update(JourneyWorkflow.create_prompt, request)
    assert (outcome.status, outcome.error) == ("failed", "Generation did not finish in time")


async def prediction_throttled(
    temporal: Client, stack: Stack, payment_id: str, replicate: httpx.AsyncClient
) -> None:
    """A prompt whose first call to Replicate is answered 429; it succeeds on the activity's retry."""
    handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
    request = PromptRequest(
        prompt_id=uuid.uuid4(), spec=PromptSpec(prompt="TOK teapot in snow", num_outputs=1), poll_seconds=0.5
    )
    before = total((await scrape(stack))[1], *EVENTS[4])
    async with knobs(replicate, error_rate=1.0, error_status=[429]):
        update = await handle.start_update(
            JourneyWorkflow.create_prompt, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        await eventually(lambda: scrape(stack), lambda s: total(s[1], *EVENTS[4]) > before)
    assert (await update.result()).status == "succeeded"


async def workflow_type_no_worker_knows(temporal: Client, stack: Stack) -> None:
    """A workflow whose tasks fail on the main task queue, until it is terminated."""
    queue = Settings.model_fields["temporal_task_queue"].default
    handle = await temporal.start_workflow("NoSuchWorkflow", id=f"no-such-{uuid.uuid4()}", task_queue=queue)
    try:
        await eventually(lambda: scrape(stack), lambda s: total(s[1], *EVENTS[-1]) > 0)
    finally:
        await handle.terminate("a probe for the workflow-task-failure metric")


async def test_every_rule_selects_series_the_service_exports_after_the_events_it_is_about(
    api: httpx.AsyncClient,
    db: AsyncEngine,
    temporal: Client,
    stack: Stack,
    storage: Storage,
    replicate_knobs: httpx.AsyncClient,
) -> None:
    _, before = await scrape(stack)
    await forge_webhooks(api)
    assert (await api.get("/ready")).status_code == 200
    await training_given_up_and_refund_refused(api, db, temporal, storage, replicate_knobs)
    payment_id, _ = await ready_model(api, temporal)
    await prediction_given_up(temporal, payment_id, replicate_knobs)
    await prediction_throttled(temporal, stack, payment_id, replicate_knobs)
    await workflow_type_no_worker_knows(temporal, stack)

    series, after = await scrape(stack)
    counted = [
        (name, labels) for name, labels in EVENTS if total(after, name, labels) <= total(before, name, labels)
    ]
    assert counted == [], "events not counted"
    assert {labels["dependency"] for labels in series["ecomdream_dependency_up"]} == {
        "postgres",
        "temporal",
        "s3",
    }
    for rule in alert_rules():
        for name in promql_metric_names(rule["expr"]) - PROMETHEUS_SERIES:
            assert name in series, f"{rule['alert']}: {name} is not exported"
        for name, labels in exact_selectors(rule["expr"]):
            if name not in PROMETHEUS_SERIES:
                wanted = set(labels.items())
                assert any(wanted <= set(have.items()) for have in series[name]), f"{rule['alert']}: {labels}"
    for counter, workflow_type, labels in WATCHED:
        name = f"{counter.name}_total"
        assert any(
            {**labels, "workflow_type": workflow_type}.items() <= have.items() for have in series[name]
        ), f"{name} {labels} was not created at zero"
        # One set of label names: the series created at zero are the ones the workflows count on.
        assert len({frozenset(have) for have in series[name]}) == 1, name
