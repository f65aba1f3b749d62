"""Waiting for a Replicate job, in the time-skipping test server: the webhook first, polls only once overdue.

A prompt's wait is the same code as a training's (`workflows/waiting.py`); these tests drive it mostly
through PromptWorkflow with stand-in activities and look at when Replicate would have been polled.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE, REPLICATE_PREDICT_TASK_QUEUE
from ecomdream.contracts.payment import JourneyStage
from ecomdream.contracts.prompt import (
    CopiedImage,
    ImageCopy,
    PredictionCreate,
    PredictionEvent,
    PredictionPoll,
    PredictionStatus,
    PromptFinished,
    PromptInput,
    PromptOutcome,
    PromptSpec,
    PromptStarted,
)
from ecomdream.contracts.training import TrainingCreate, TrainingEvent, TrainingPoll, TrainingStatus
from tests.fixtures.time_skipping import time_skipping_server
from tests.replay.standin_paths import _paid as paid_journey
from tests.replay.standin_paths import _photos as staged_photos
from tests.replay.standin_paths import _reaches as reaches
from tests.replay.standins import StandIns
from tests.replay.standins import serving as standins_serving
from workflows.journey import JourneyWorkflow
from workflows.prompt import PromptWorkflow

QUEUE = "waiting-test"
PREDICTION = "p_waiting"
DONE = PredictionStatus(prediction_id=PREDICTION, status="succeeded", output=("https://x/0.png",))


class Replicate:
    """Stand-ins for the prompt's activities; the prediction ends at the `finished_after`-th poll."""

    def __init__(self, finished_after: int | None) -> None:
        self.finished_after = finished_after
        self.created = asyncio.Event()
        self.created_at: datetime | None = None
        self.polls: list[datetime] = []
        self.cancelled: list[str] = []

    @activity.defn(name="record_prompt_started")
    async def record_prompt_started(self, started: PromptStarted) -> None:
        """The prompt's row."""

    @activity.defn(name="create_prediction")
    async def create_prediction(self, request: PredictionCreate) -> PredictionStatus:
        """Replicate starts the prediction."""
        self.created_at = activity.info().current_attempt_scheduled_time
        self.created.set()
        return PredictionStatus(prediction_id=PREDICTION, status="starting")

    @activity.defn(name="poll_prediction")
    async def poll_prediction(self, poll: PredictionPoll) -> PredictionStatus:
        """Still running until the chosen poll."""
        self.polls.append(activity.info().current_attempt_scheduled_time)
        if self.finished_after is None or len(self.polls) < self.finished_after:
            raise ApplicationError(
                "running", type="PredictionNotFinished", category=ApplicationErrorCategory.BENIGN
            )
        return DONE

    @activity.defn(name="cancel_prediction")
    async def cancel_prediction(self, prediction_id: str) -> None:
        """Replicate cancels it."""
        self.cancelled.append(prediction_id)

    @activity.defn(name="copy_images")
    async def copy_images(self, copy: ImageCopy) -> list[CopiedImage]:
        """The images are in our bucket."""
        return [CopiedImage(position=i, key=key, width=8, height=8) for i, key in enumerate(copy.keys)]

    @activity.defn(name="record_prompt_finished")
    async def record_prompt_finished(self, finished: PromptFinished) -> bool:
        """The prompt's outcome."""
        return True


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping test server."""
    async with time_skipping_server() as env:
        yield env


@asynccontextmanager
async def serving(env: WorkflowEnvironment, replicate: Replicate) -> AsyncIterator[None]:
    """The prompt workflow and the stand-ins on the production Replicate queues."""
    main: list[Callable[..., Any]] = [
        replicate.record_prompt_started,
        replicate.copy_images,
        replicate.record_prompt_finished,
    ]
    queues: list[tuple[str, list[Callable[..., Any]]]] = [
        (QUEUE, main),
        (REPLICATE_PREDICT_TASK_QUEUE, [replicate.create_prediction]),
        (REPLICATE_OTHER_TASK_QUEUE, [replicate.poll_prediction, replicate.cancel_prediction]),
    ]
    async with AsyncExitStack() as workers:
        for queue, activities in queues:
            worker = Worker(env.client, task_queue=queue, workflows=[PromptWorkflow], activities=activities)
            await workers.enter_async_context(worker)
        yield


def _prompt(expected: float, deadline: float, longest_gap: float) -> PromptInput:
    return PromptInput(
        prompt_id=uuid.uuid4(),
        version_id=uuid.uuid4(),
        model_version="ecomdream/model:v1",
        spec=PromptSpec(prompt="a teapot", num_outputs=1),
        expected_seconds=expected,
        deadline_seconds=deadline,
        poll_seconds=longest_gap,
    )


async def _generate(
    env: WorkflowEnvironment, replicate: Replicate, prompt: PromptInput, *, webhook: bool
) -> PromptOutcome:
    async with serving(env, replicate):
        handle = await env.client.start_workflow(
            PromptWorkflow.run, prompt, id=f"prompt-{prompt.prompt_id}", task_queue=QUEUE
        )
        if webhook:
            await asyncio.wait_for(replicate.created.wait(), 30)
            await handle.signal(
                PromptWorkflow.prediction_event, PredictionEvent(webhook_id="w1", prediction=DONE)
            )
        return await handle.result()


def _gaps(replicate: Replicate) -> list[float]:
    return [(b - a).total_seconds() for a, b in itertools.pairwise(replicate.polls)]


async def test_a_delivered_webhook_means_no_poll(env: WorkflowEnvironment) -> None:
    replicate = Replicate(finished_after=1)
    outcome = await _generate(env, replicate, _prompt(600, 3600, 60), webhook=True)
    assert outcome.status == "succeeded"
    assert replicate.polls == []


async def test_an_overdue_prediction_is_polled_with_growing_gaps(env: WorkflowEnvironment) -> None:
    replicate = Replicate(finished_after=5)
    outcome = await _generate(env, replicate, _prompt(100, 3600, 60), webhook=False)
    assert outcome.status == "succeeded"
    assert replicate.created_at is not None
    waited_alone = (replicate.polls[0] - replicate.created_at).total_seconds()
    assert 100 <= waited_alone < 105, "polling starts once the prediction is overdue"
    # A tenth of the expected 100 s first, then 10 % more each time: about a tenth of the time waited.
    # (The time-skipping server retries a first failed attempt at once; a real server waits the first gap.)
    growing = [gap for gap in _gaps(replicate) if gap >= 1]
    assert len(growing) >= 3
    assert growing == pytest.approx([10 * 1.1**i for i in range(len(growing))], abs=0.5)


async def test_a_prediction_past_its_deadline_is_cancelled(env: WorkflowEnvironment) -> None:
    replicate = Replicate(finished_after=None)
    outcome = await _generate(env, replicate, _prompt(100, 600, 20), webhook=False)
    assert outcome.status == "failed"
    assert outcome.error == "Generation did not finish in time"
    assert replicate.cancelled == [PREDICTION]
    assert max(_gaps(replicate)) == pytest.approx(20, abs=0.5), "the gaps stop growing at the longest allowed"


class WebhookBeforeAnswer(StandIns):
    """Replicate's webhook reaches the journey before the answer to the create does (a very quick job)."""

    def __init__(self, env: WorkflowEnvironment) -> None:
        self.env = env
        self.polls = 0

    @activity.defn(name="create_training")
    async def create_training(self, request: TrainingCreate) -> TrainingStatus:
        """Started, and already finished by the time this answer arrives."""
        started = await super().create_training(request)
        done = TrainingStatus(
            training_id=started.training_id, status="succeeded", model_version="ecomdream/m:v1"
        )
        journey = self.env.client.get_workflow_handle(str(activity.info().workflow_id))
        await journey.signal(JourneyWorkflow.training_event, TrainingEvent(webhook_id="w1", training=done))
        return started

    @activity.defn(name="poll_training")
    async def poll_training(self, poll: TrainingPoll) -> TrainingStatus:
        """Counted: the webhook already told."""
        self.polls += 1
        return await super().poll_training(poll)


async def test_a_webhook_ahead_of_the_creates_answer_still_ends_the_training(
    env: WorkflowEnvironment,
) -> None:
    replicate = WebhookBeforeAnswer(env)
    async with standins_serving(env.client, replicate):
        journey = await paid_journey(env)
        await journey.execute_update(JourneyWorkflow.train, staged_photos(journey))
        state = await reaches(journey, lambda s: s.stage is JourneyStage.READY)
    assert state.model_version == "ecomdream/m:v1"
    assert replicate.polls == 0
