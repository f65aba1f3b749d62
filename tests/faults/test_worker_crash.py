"""The worker is SIGKILLed (no graceful shutdown) while each kind of activity runs; a fresh worker finishes.

Each kill point is reached deliberately, and the worker is killed only once Temporal's `describe()` shows
the target activity running; right after the kill the same attempt must still be open (so the kill landed
inside it), and once everything finished the activity's recorded attempt must be a retry.

* check_photos, build_training_zip: 20 photos of 2000x2000 make each step last long enough to catch.
* create_training, create_prediction: the Replicate sandbox holds the answers of both create endpoints
  (`/_sandbox/hold`: it performs the call, then keeps the answer until released). Once both creates are held
  the worker is killed: it dies after Replicate created the training and the prediction and before their ids
  were stored, so the retried activities have to find those jobs instead of creating second ones.
* poll_training, poll_prediction: a long training and a long prediction keep their workflows waiting.
* copy_images: the sandbox holds the outputs' downloads, so the copy waits inside its first download.
* record_prompt_finished: Postgres holds every COMMIT (it waits for a synchronous standby that does not
  exist); the ledger write becomes visible when the hold is released although the dead worker never
  reported it, so the retried activity must neither store the images again nor charge the quota twice.
  The copy before it is held in its downloads until the COMMITs are held.

Apart from check/zip, whose steps last seconds, no kill point races a clock: each waits, with a deadline, for
a state that lasts until the test ends it (a held create answer, for up to the SDK's 30 s read timeout).

A kill costs the killed activity its timeout before Temporal retries it (check/zip: 60 s heartbeat;
create_*: 60 s; copy_images: 120 s, it does not heartbeat; record_*: 30 s), so all kill points share one
test whose recoveries overlap: copy_images is killed first and the test lasts about as long as its timeout.

Two smaller tests follow: a prompt sent just after a crash (the journey's next task waits for the dead
worker's sticky queue), and the lookup create_prediction uses to find a prediction a crashed attempt made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client

from ecomdream.contracts import journey_id
from ecomdream.devstack.stack import Stack
from tests.api.helpers import payment_row
from tests.api.test_prompts import prompt, ready_model
from tests.api.test_training import as_files, info, paid_payment
from tests.faults.helpers import (
    DOWNLOAD,
    answers_held,
    assert_still_running,
    commits_held,
    commits_waiting,
    find,
    image_count,
    images_recorded_twice,
    pending_activities,
    pending_children,
    predictions_for,
    prompt_row,
    release_answers,
    restart_worker,
    start_worker,
    started_attempts,
    trainings_for,
    wait_activity,
    wait_held,
)
from tests.fixtures.photos import photo, valid_photos
from tests.fixtures.stack import eventually

log = logging.getLogger("tests.faults.worker_crash")
LONG_WAIT_S = 75
CREATE_TRAINING = "POST /v1/models/{owner}/{name}/versions/{version_id}/trainings"
CREATE_PREDICTION = "POST /v1/predictions"
QUOTA = 100
STICKY_TIMEOUT_S = 10


def big_photos(count: int = 20) -> list[tuple[str, bytes]]:
    """Photos large enough that checking and zipping them take a while (about 28 MB in all)."""
    return [(f"big-{i + 1}.jpg", photo(2000, 2000, seed=100 + i)) for i in range(count)]


async def upload(api: httpx.AsyncClient, payment_id: str, photos: list[tuple[str, bytes]]) -> httpx.Response:
    """POST photos for training; the answer waits for the retries after a kill, so allow for them."""
    return await api.post(
        f"/api/v1/versions/train/{payment_id}",
        params={"class": "sneaker"},
        files=as_files(photos),
        timeout=170,
    )


async def configure(knobs: httpx.AsyncClient, **values: Any) -> None:
    """Change Replicate sandbox knobs (the test's fixture restores them)."""
    response = await knobs.post("/_sandbox/config", json=values)
    assert response.status_code == 200, response.text


@dataclass
class Model:
    """A ready model."""

    payment_id: str
    version_id: str


@dataclass
class PromptRun:
    """A prompt sent in the background, and the workflow generating it."""

    label: str
    model: Model
    amount: int
    marker: str
    request: asyncio.Task[httpx.Response]
    workflow_id: str

    @property
    def prompt_id(self) -> str:
        """The prompt's id (its workflow id is `prompt-<id>`)."""
        return self.workflow_id.removeprefix("prompt-")


BACKGROUND: set[asyncio.Task[httpx.Response]] = set()


def background(request: Coroutine[Any, Any, httpx.Response]) -> asyncio.Task[httpx.Response]:
    """Run a customer's request in the background (cancelled when the test ends)."""
    task = asyncio.create_task(request)
    BACKGROUND.add(task)
    task.add_done_callback(BACKGROUND.discard)
    return task


@pytest.fixture(autouse=True)
def cancel_background() -> Iterator[None]:
    """A failed test leaves no request running into the next test."""
    yield
    for task in list(BACKGROUND):
        task.cancel()


async def start_prompt(
    api: httpx.AsyncClient, temporal: Client, model: Model, label: str, amount: int
) -> PromptRun:
    """Send a prompt in the background; return once its workflow exists."""
    marker = f"{label}-{uuid.uuid4().hex[:12]}"
    request = background(prompt(api, model.version_id, prompt=f"fault test {marker}", amount_images=amount))
    children = await eventually(
        lambda: pending_children(temporal, journey_id(model.payment_id)), bool, within=40
    )
    return PromptRun(label, model, amount, marker, request, children[0])


@dataclass
class TrainRun:
    """Photos uploaded in the background for a paid journey."""

    label: str
    payment_id: str
    request: asyncio.Task[httpx.Response]

    @property
    def workflow_id(self) -> str:
        """The journey's workflow id."""
        return journey_id(self.payment_id)


def start_training(
    api: httpx.AsyncClient, label: str, payment_id: str, photos: list[tuple[str, bytes]]
) -> TrainRun:
    """Upload the photos in the background."""
    return TrainRun(label, payment_id, background(upload(api, payment_id, photos)))


@dataclass
class Kill:
    """One activity the worker died in."""

    workflow_id: str
    info: PendingActivityInfo

    @property
    def activity(self) -> str:
        """The activity type."""
        return self.info.activity_type.name


async def kill_worker_inside(stack: Stack, temporal: Client, *caught: Kill) -> None:
    """SIGKILL the worker, then prove every caught attempt was still open (the kill landed inside it)."""
    stack.worker.kill()
    for kill in caught:
        await assert_still_running(temporal, kill.workflow_id, kill.info)


async def catch(temporal: Client, workflow_id: str, activity: str, within: float = 60) -> Kill:
    """Wait until the activity runs on the worker."""
    return Kill(workflow_id, await wait_activity(temporal, workflow_id, activity, within=within))


async def prompt_status(api: httpx.AsyncClient, prompt_id: str) -> dict[str, Any]:
    """GET /prompts/{id}."""
    response = await api.get(f"/api/v1/prompts/{prompt_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def settled_model(api: httpx.AsyncClient, version_id: str, within: float) -> dict[str, Any]:
    """The model's status once training ended (ready or failed)."""
    return await eventually(
        lambda: info(api, version_id), lambda b: b["status"] not in ("validating", "training"), within=within
    )


async def settled_prompt(api: httpx.AsyncClient, prompt_id: str, within: float) -> dict[str, Any]:
    """The prompt once it stopped running."""
    return await eventually(
        lambda: prompt_status(api, prompt_id), lambda b: b["status"] != "running", within=within
    )


async def test_every_journey_completes_once_when_the_worker_dies_in_each_step(
    api: httpx.AsyncClient,
    db: AsyncEngine,
    temporal: Client,
    stack: Stack,
    replicate_knobs: httpx.AsyncClient,
) -> None:
    photos_ready = asyncio.create_task(asyncio.to_thread(big_photos))
    kills: list[Kill] = []

    # Kill 0 — copy_images, first: Temporal retries it only after its 120 s timeout, and everything else
    # happens meanwhile. The outputs' downloads are held, so the copy waits inside its first download.
    m_copy = Model(*await ready_model(api, temporal))
    async with answers_held(stack, DOWNLOAD):
        p_copy = await start_prompt(api, temporal, m_copy, "copy", 4)
        await wait_held(stack, DOWNLOAD)
        kill = await catch(temporal, p_copy.workflow_id, "copy_images")
        await kill_worker_inside(stack, temporal, kill)
    kills.append(kill)
    log.info("kill 0: %s of %s", kill.activity, kill.workflow_id)
    await start_worker(stack)

    # Kill 1 — create_training and create_prediction after Replicate created their jobs, before the worker
    # read the answers (held), so the retried activities must find those jobs; both waits meanwhile.
    m_wait, m_create = [
        Model(p, v) for p, v in await asyncio.gather(*(ready_model(api, temporal) for _ in range(2)))
    ]
    poll_payment, create_payment = await asyncio.gather(
        paid_payment(api, temporal), paid_payment(api, temporal)
    )
    await configure(replicate_knobs, prediction_seconds=LONG_WAIT_S)
    p_wait = await start_prompt(api, temporal, m_wait, "wait", 1)
    await wait_activity(temporal, p_wait.workflow_id, "poll_prediction", started=False)
    await configure(replicate_knobs, training_seconds=LONG_WAIT_S)
    j_poll = start_training(api, "poll", poll_payment, valid_photos(5))
    await wait_activity(temporal, j_poll.workflow_id, "poll_training", started=False, within=30)
    await configure(replicate_knobs, training_seconds=1, prediction_seconds=2)
    async with answers_held(stack, CREATE_TRAINING, CREATE_PREDICTION):
        j_create = start_training(api, "create", create_payment, valid_photos(5))
        await wait_held(stack, CREATE_TRAINING)
        # The held training waits for the prompt's create (the shorter way there): the SDK gives up after 30 s.
        p_create = await start_prompt(api, temporal, m_create, "create", 1)
        await wait_held(stack, CREATE_TRAINING, CREATE_PREDICTION, within=25)
        caught = [
            await catch(temporal, j_create.workflow_id, "create_training"),
            await catch(temporal, p_create.workflow_id, "create_prediction"),
        ]
        create_version = await payment_version(db, create_payment)
        assert await trainings_for(stack, create_version), "the held training was not created"
        assert await predictions_for(stack, p_create.marker), "the held prediction was not created"
        await kill_worker_inside(stack, temporal, *caught)
    kills += caught
    log.info("kill 1: %s", [(k.activity, k.workflow_id) for k in caught])
    assert find(await pending_activities(temporal, j_poll.workflow_id), "poll_training") is not None
    assert find(await pending_activities(temporal, p_wait.workflow_id), "poll_prediction") is not None
    await start_worker(stack)

    # Kill 2 — check_photos. Each journey is paid after the previous kill, so its tasks go to the live worker.
    big = await photos_ready
    j_check = start_training(api, "check", await paid_payment(api, temporal), big)
    kill = await catch(temporal, j_check.workflow_id, "check_photos", within=30)
    await kill_worker_inside(stack, temporal, kill)
    kills.append(kill)
    log.info("kill: %s of %s", kill.activity, kill.workflow_id)
    await start_worker(stack)

    # Kill 3 — build_training_zip.
    j_zip = start_training(api, "zip", await paid_payment(api, temporal), big)
    kill = await catch(temporal, j_zip.workflow_id, "build_training_zip", within=30)
    await kill_worker_inside(stack, temporal, kill)
    kills.append(kill)
    log.info("kill: %s of %s", kill.activity, kill.workflow_id)
    await start_worker(stack)

    # Kill 4 — record_prompt_finished after its COMMIT, before Temporal hears of it. The model is trained now
    # so that its journey's tasks go to the live worker (a killed worker's sticky queue delays them 10 s).
    # The copy is held in its downloads until COMMITs are held, so the ledger write cannot slip through first.
    m_record = Model(*await ready_model(api, temporal))
    async with answers_held(stack, DOWNLOAD):
        p_record = await start_prompt(api, temporal, m_record, "record", 4)
        await wait_held(stack, DOWNLOAD)
        async with commits_held(db):
            await release_answers(stack, DOWNLOAD)
            kill = await catch(temporal, p_record.workflow_id, "record_prompt_finished", within=30)
            await eventually(lambda: commits_waiting(db, "images"), lambda n: n > 0, within=10)
            await kill_worker_inside(stack, temporal, kill)
            kills.append(kill)
            log.info("kill 4: %s of %s, its COMMIT held", kill.activity, kill.workflow_id)
    committed = await eventually(
        lambda: prompt_row(db, p_record.prompt_id),
        lambda row: row is not None and row["status"] == "succeeded",
        within=10,
    )
    assert committed is not None
    assert await image_count(db, p_record.prompt_id) == 4, "the dead worker's ledger write was committed"
    await assert_still_running(temporal, p_record.workflow_id, kill.info)
    await start_worker(stack)

    log.info("all kills done; waiting for every journey")
    # Every journey completes: models ready, prompts succeeded (copy_images comes back last, after 120 s).
    trainings = [j_poll, j_create, j_check, j_zip]
    answers = await asyncio.gather(*(job.request for job in trainings))
    for job, answer in zip(trainings, answers, strict=True):
        assert answer.status_code == 201, (job.label, answer.status_code, answer.text)
    versions = {
        job.label: str(answer.json()["version_id"]) for job, answer in zip(trainings, answers, strict=True)
    }
    for label, version_id in versions.items():
        ready = await settled_model(api, version_id, within=90)
        assert ready["status"] == "ready", (label, ready)
    prompts = [p_wait, p_copy, p_create, p_record]
    for run in prompts:
        done = await settled_prompt(api, run.prompt_id, within=150)
        assert done["status"] == "succeeded", (run.label, done)
        assert len(done["images"]) == run.amount, (run.label, done)

    log.info("every journey completed")
    # Exactly once: one training per payment, one prediction per prompt, no image twice, exact quotas.
    models = [m_copy, m_wait, m_create, m_record]
    for label, version_id in [
        *versions.items(),
        *((f"model-{i}", m.version_id) for i, m in enumerate(models)),
    ]:
        assert len(await trainings_for(stack, version_id)) == 1, f"{label}: trainings at Replicate"
    for run in prompts:
        assert len(await predictions_for(stack, run.marker)) == 1, f"{run.label}: predictions at Replicate"
        assert await image_count(db, run.prompt_id) == run.amount, f"{run.label}: images stored"
    assert await images_recorded_twice(db) == []
    for run in prompts:
        quota = (await info(api, run.model.version_id))["info"]
        assert quota["images_left"] == QUOTA - run.amount, (run.label, quota)
        assert quota["amount_images_generated"] == run.amount, (run.label, quota)

    # The caught attempts were retried: the work that finished is a later attempt than the one killed.
    for kill in kills:
        attempts = await started_attempts(temporal, kill.workflow_id, kill.activity)
        assert attempts, f"{kill.activity} of {kill.workflow_id} never finished"
        assert attempts[-1] > kill.info.attempt, (kill.activity, kill.workflow_id, attempts)


async def payment_version(db: AsyncEngine, payment_id: str) -> str:
    """The version a payment's journey recorded (create_version links it to the payment)."""
    version = (await payment_row(db, payment_id))["version_id"]
    assert version is not None
    return str(version)


async def test_a_prompt_right_after_a_worker_crash_is_not_refused_and_then_charged(
    api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
) -> None:
    payment_id, version_id = await ready_model(api, temporal)
    # The journey's last task ran on this worker: after the crash its next task waits for the dead worker's
    # sticky queue to time out (the SDK's default, 10 s) before another worker may take it.
    await restart_worker(stack)
    marker = f"after-crash-{uuid.uuid4().hex[:12]}"
    sent = time.monotonic()
    response = await prompt(api, version_id, prompt=f"fault test {marker}")

    # Let the journey settle: past the sticky timeout, with no workflow task left, the update has either been
    # dropped or accepted (and then its prompt runs as a child workflow).
    handle = temporal.get_workflow_handle(journey_id(payment_id))
    await eventually(
        handle.describe,
        lambda d: (
            time.monotonic() - sent > STICKY_TIMEOUT_S
            and not d.raw_description.HasField("pending_workflow_task")
        ),
        within=30,
    )
    for child in await pending_children(temporal, journey_id(payment_id)):
        await temporal.get_workflow_handle(child).result()
    left = (await info(api, version_id))["info"]["images_left"]
    generated = await predictions_for(stack, marker)
    assert response.status_code in (201, 202) or left == QUOTA, (
        f"the customer was answered {response.status_code} {response.json()['message']!r}, yet the prompt "
        f"was generated ({len(generated)} prediction) and charged: images_left {left} of {QUOTA}"
    )


async def test_the_retry_lookup_never_takes_another_prompts_prediction(
    api: httpx.AsyncClient, db: AsyncEngine, temporal: Client, stack: Stack
) -> None:
    # create_prediction looks for "its" prediction at Replicate in case a crashed attempt created it. A customer
    # who regenerates the same text with the same seed at another size must still get a new prediction.
    payment_id, version_id = await ready_model(api, temporal)
    text = f"fault test regenerate {uuid.uuid4().hex[:12]}"
    first = await prompt(api, version_id, prompt=text, seed=42, width=512, height=512)
    assert first.status_code == 201, first.text
    second = background(prompt(api, version_id, prompt=text, seed=42, width=1024, height=768))
    (workflow_id,) = await eventually(
        lambda: pending_children(temporal, journey_id(payment_id)), bool, within=20
    )
    prompt_id = workflow_id.removeprefix("prompt-")

    async def outcome() -> tuple[str, PendingActivityInfo | None]:
        row = await prompt_row(db, prompt_id)
        status = row["status"] if row else "missing"
        return status, find(await pending_activities(temporal, workflow_id), "create_prediction")

    def settled_or_retrying(value: tuple[str, PendingActivityInfo | None]) -> bool:
        status, creating = value
        # "missing": the prompt's workflow has not recorded it yet, which is not an outcome.
        return status not in ("running", "missing") or (creating is not None and creating.attempt > 1)

    try:
        status, creating = await eventually(outcome, settled_or_retrying, within=30)
        retrying = creating.attempt if creating is not None and creating.attempt > 1 else 0
        errors = [line for line in stack.worker.log_tail(400).splitlines() if "violates" in line][-1:]
        assert not retrying, (
            f"the second prompt's create_prediction fails and is retried (attempt {retrying}, Temporal "
            f"recorded {creating.last_failure.message if creating else ''!r}); predictions at Replicate: "
            f"{len(await predictions_for(stack, text))}; worker log: {errors}"
        )
        assert status == "succeeded", status
        assert (await second).status_code in (201, 202)
        done = await prompt_status(api, prompt_id)
        assert [(i["width"], i["height"]) for i in done["images"]] == [(1024, 768)]
        assert len(await predictions_for(stack, text)) == 2, "each prompt has its own prediction"
    finally:
        # A prompt stuck in retries would keep the model busy (409) for the rest of the session.
        with contextlib.suppress(Exception):
            await temporal.get_workflow_handle(workflow_id).terminate("fault test cleanup")
