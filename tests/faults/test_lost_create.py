"""A create whose answer was lost is found again at Replicate, however many jobs were created since."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
from replicate.client import Client as ReplicateClient
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.replicate import PredictionActivities, created_since, prediction_input
from ecomdream.clients.replicate import create_replicate_client
from ecomdream.config import Settings
from ecomdream.contracts.prompt import PredictionCreate, PromptSpec
from ecomdream.db.session import create_sessionmaker, transaction
from ecomdream.devstack.stack import Stack
from ecomdream.repositories.prompts import PromptRepository
from tests.api.test_prompts import ready_model
from tests.faults.helpers import prompt_row, request_count, version_row

CREATE = "POST /v1/predictions"


async def test_a_retried_create_finds_its_prediction_beyond_the_first_page(
    stack: Stack, api: httpx.AsyncClient, temporal: Client, db: AsyncEngine
) -> None:
    _, version_id = await ready_model(api, temporal)
    exits = AsyncExitStack()
    client = create_replicate_client(Settings(replicate_api_base=stack.replicate_url), stack=exits)
    async with exits:
        await _retried_create_finds_its_prediction(stack, db, client, version_id)


async def _retried_create_finds_its_prediction(
    stack: Stack, db: AsyncEngine, client: ReplicateClient, version_id: str
) -> None:
    model_version = (await version_row(db, version_id))["model_version"]
    prompt_id = uuid.uuid4()
    spec = PromptSpec(prompt=f"lost answer {prompt_id}", num_outputs=1, seed=7)
    async with transaction(create_sessionmaker(db)) as session:
        await PromptRepository(session).start_spec(prompt_id, uuid.UUID(version_id), spec)
    first_scheduled = datetime.now(UTC)

    # Attempt 1 created the prediction and died before storing its id; then the service kept busy.
    lost = await client.predictions.async_create(
        version=model_version.split(":")[-1], input=prediction_input(spec)
    )
    busy = PromptSpec(prompt="someone else's picnic", num_outputs=1, seed=1)
    for batch in range(2):  # one page holds 100
        await asyncio.gather(
            *(
                client.predictions.async_create(
                    version=model_version.split(":")[-1],
                    input=prediction_input(busy.model_copy(update={"seed": batch * 51 + n})),
                )
                for n in range(51)
            )
        )
    first_page = await client.predictions.async_list()
    assert lost.id not in {p.id for p in first_page.results}, "the lost prediction should be on a later page"
    creates_before = await request_count(stack, CREATE)

    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, attempt=2, scheduled_time=first_scheduled, workflow_id=f"prompt-{prompt_id}"
    )
    activities = PredictionActivities(client, create_sessionmaker(db), webhook_base=stack.api_url)
    request = PredictionCreate(prompt_id=prompt_id, model_version=model_version, spec=spec)
    status = await env.run(activities.create_prediction, request)

    assert status.prediction_id == lost.id
    assert await request_count(stack, CREATE) == creates_before, "a second prediction was created"
    row = await prompt_row(db, str(prompt_id))
    assert row is not None
    assert row["prediction_id"] == lost.id


async def test_the_lookup_stops_at_jobs_older_than_the_first_attempt() -> None:
    now = datetime.now(UTC)

    def job(minutes_ago: int) -> SimpleNamespace:
        created = (now - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")
        return SimpleNamespace(id=f"job-{minutes_ago}", created_at=created)

    pages = {
        None: SimpleNamespace(results=[job(0), job(1)], next="page-2"),
        "page-2": SimpleNamespace(results=[job(2), job(30)], next="page-3"),
        "page-3": SimpleNamespace(results=[job(31), job(32)], next=None),
    }
    asked: list[Any] = []

    async def list_page(cursor: Any) -> SimpleNamespace:
        key = None if cursor is ... else cursor
        asked.append(key)
        return pages[key]

    seen = [item.id async for item in created_since(list_page, now - timedelta(minutes=5))]

    assert seen == ["job-0", "job-1", "job-2", "job-30"]
    assert asked == [None, "page-2"], "pages older than the first attempt were read"
