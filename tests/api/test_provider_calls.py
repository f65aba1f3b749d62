"""What one training and one prediction cost at Replicate when webhooks arrive: the creates, and no poll."""

from __future__ import annotations

import time

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from ecomdream.devstack.stack import Stack
from tests.api.helpers import wait_stage
from tests.api.test_prompts import prompt
from tests.api.test_training import as_files, info, paid_payment, train
from tests.fixtures.photos import valid_photos
from tests.fixtures.replicate_calls import about, replicate_calls
from tests.fixtures.stack import eventually

POLLS = ("GET /v1/trainings/{training_id}", "GET /v1/predictions/{prediction_id}")


async def test_a_training_and_a_prediction_cost_their_creates_and_no_poll(
    api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
) -> None:
    payment_id = await paid_payment(api, temporal)
    since = time.time()
    response = await train(api, payment_id, as_files(valid_photos(5)))
    assert response.status_code == 201, response.text
    version_id = response.json()["version_id"]
    await eventually(lambda: info(api, version_id), lambda b: b["status"] == "ready", within=60)
    await wait_stage(temporal, payment_id, "ready")
    training = await replicate_calls(stack.replicate_url, since)

    since = time.time()
    generated = await prompt(api, version_id)
    assert generated.status_code == 201, generated.text
    prediction = await replicate_calls(stack.replicate_url, since)

    # The model it trains into and the training itself; the prediction itself. Nothing else.
    assert about(training, "training") == 2, training
    assert about(prediction, "prediction") == 1, prediction
    for calls in (training, prediction):
        assert not any(calls.get(poll) for poll in POLLS), f"polled although the webhook came: {calls}"
