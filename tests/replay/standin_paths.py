"""Paths whose faults the embedded stack cannot cause on demand, recorded on the time-skipping server.

The workflows are the real ones, started as the API starts them (`api.journeys.Journeys`); the activities
are stand-ins (`tests.replay.standins`), with the step that goes wrong replaced for the path.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from api.journeys import Journeys
from ecomdream.contracts import TASK_QUEUE, addon_id, journey_id, staging_prefix
from ecomdream.contracts.payment import (
    Attention,
    CancelRequest,
    CheckoutOpen,
    JourneyStage,
    JourneyState,
    PaymentEvent,
    PaymentEventKind,
    PlanTerms,
    ResumeRequest,
)
from ecomdream.contracts.refusals import Refusal
from ecomdream.contracts.training import StagedPhoto, TrainRequest
from tests.fixtures.stack import eventually
from tests.fixtures.time_skipping import until
from tests.replay.standins import (
    EndlessZip,
    JourneyEnded,
    LedgerBug,
    LedgerDown,
    PhotoCheckDown,
    PhotosLostOnce,
    ReplicateRefuses,
    SlowLedgerAtExpiry,
    SlowPhotoCheck,
    StandIns,
    serving,
)
from workflows.addon import AddonWorkflow
from workflows.checkout import PAYMENT_GRACE
from workflows.journey import JourneyWorkflow
from workflows.policies import LEDGER_PATIENCE
from workflows.training import PHOTO_GIVE_UP

PLAN = PlanTerms(plan_id=1, plan_name="basic_init", images=100)
ADDON = PlanTerms(plan_id=2, plan_name="basic_extra_creds", images=1000)
CHECKOUT_WINDOW = timedelta(minutes=60)
RETRY_WINDOW = timedelta(minutes=30)
PROMPTS_PER_RUN = 500  # production's default
# How long (real seconds) the recorder waits for a state; every step here takes well under a second.
DEADLINE = 30.0
PAID = PaymentEvent(event_id="evt_paid", kind=PaymentEventKind.COMPLETED, payment_status="paid")

Journey = WorkflowHandle[JourneyWorkflow, JourneyState]


async def _open(env: WorkflowEnvironment) -> Journey:
    """A journey whose checkout is open for an hour, started as the API starts it."""
    payment_id = uuid.uuid4()
    pay_by = await env.get_current_time() + CHECKOUT_WINDOW
    journeys = Journeys(env.client, TASK_QUEUE, PROMPTS_PER_RUN)
    await journeys.open_checkout(CheckoutOpen(payment_id=payment_id, plan_id=1, pay_by=pay_by), PLAN, None)
    return env.client.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))


async def _state(journey: Journey) -> JourneyState:
    return await journey.query(JourneyWorkflow.get_state)


async def _reaches(journey: Journey, done: Callable[[JourneyState], bool]) -> JourneyState:
    """Wait (real time) until the journey's state satisfies done."""
    return await eventually(lambda: _state(journey), done, within=DEADLINE)


async def _paid(env: WorkflowEnvironment) -> Journey:
    """A journey whose payment is in: it waits for photos."""
    journey = await _open(env)
    await journey.signal(JourneyWorkflow.payment_event, PAID)
    await _reaches(journey, lambda s: s.stage is JourneyStage.PAID)
    return journey


def _photos(journey: Journey) -> TrainRequest:
    """Five staged photos, as the API hands them over (with production's retry window).

    Stand-ins send no webhook: the training is polled once overdue, here after a second of real time (the
    recorder does not skip time while it waits for a state).
    """
    upload_id = uuid.uuid4()
    prefix = f"{staging_prefix(journey.id.removeprefix('journey-'))}{upload_id}/"
    photos = tuple(StagedPhoto(name=f"photo-{i}.jpg", key=f"{prefix}{i}.jpg") for i in range(1, 6))
    return TrainRequest(
        upload_id=upload_id,
        class_name="sneaker",
        photos=photos,
        retry_window_seconds=RETRY_WINDOW.total_seconds(),
        expected_seconds=1.0,
    )


async def _refusal(update: Awaitable[Any]) -> str | None:
    """The refusal an update ended with (None when it succeeded)."""
    try:
        await update
    except WorkflowUpdateFailedError as err:
        return err.cause.type if isinstance(err.cause, ApplicationError) else None
    return None


def _expect(what: str, got: object, wanted: object) -> None:
    if got != wanted:
        raise RuntimeError(f"{what}: expected {wanted!r}, got {got!r}")


async def expired_checkout(env: WorkflowEnvironment) -> str:
    """Nobody pays: the checkout's deadline passes."""
    async with serving(env.client, StandIns()):
        journey = await _open(env)
        await env.sleep(CHECKOUT_WINDOW + PAYMENT_GRACE)
        _expect("stage", (await journey.result()).stage, JourneyStage.EXPIRED)
    return journey.id


async def late_payment(env: WorkflowEnvironment) -> str:
    """The deadline passes; the payment's webhook arrives while "expired" is being recorded: paid wins."""
    ledger = SlowLedgerAtExpiry()
    async with serving(env.client, ledger):
        journey = await _open(env)
        await env.sleep(CHECKOUT_WINDOW + PAYMENT_GRACE)
        await asyncio.wait_for(ledger.expiring.wait(), DEADLINE)
        await journey.signal(JourneyWorkflow.payment_event, PAID)
        ledger.money_in.set()
        await _reaches(journey, lambda s: s.stage is JourneyStage.PAID)
    return journey.id


async def photos_unchecked(env: WorkflowEnvironment) -> str:
    """The photo check keeps failing for half an hour: the upload is handed back to the customer."""
    async with serving(env.client, PhotoCheckDown()):
        journey = await _paid(env)
        update = await journey.start_update(
            JourneyWorkflow.train, _photos(journey), wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        await env.sleep(PHOTO_GIVE_UP + timedelta(minutes=1))
        _expect("refusal", await _refusal(update.result()), Refusal.PHOTOS_UNCHECKED.value)
        await _reaches(journey, lambda s: s.stage is JourneyStage.PAID)
    return journey.id


async def photos_lost(env: WorkflowEnvironment) -> str:
    """Photos lost before the zip: back to paid; the second upload trains the same model to ready."""
    async with serving(env.client, PhotosLostOnce()):
        journey = await _paid(env)
        first = await journey.execute_update(JourneyWorkflow.train, _photos(journey))
        await _reaches(journey, lambda s: s.stage is JourneyStage.PAID and s.error is not None)
        second = await journey.execute_update(JourneyWorkflow.train, _photos(journey))
        _expect("version", second.version_id, first.version_id)
        await _reaches(journey, lambda s: s.stage is JourneyStage.READY and s.runs == 2)
    return journey.id


async def training_not_started(env: WorkflowEnvironment) -> str:
    """The training cannot be started; nobody retries it within the window: refunded, failed."""
    async with serving(env.client, ReplicateRefuses()):
        journey = await _paid(env)
        await journey.execute_update(JourneyWorkflow.train, _photos(journey))
        await _reaches(journey, lambda s: s.stage is JourneyStage.AWAITING_RETRY)
        await env.sleep(RETRY_WINDOW)
        _expect("stage", (await journey.result()).stage, JourneyStage.FAILED)
    return journey.id


async def cancel_validating(env: WorkflowEnvironment) -> str:
    """An operator cancels while the photos are checked: the upload is refused, the payment refunded."""
    check = SlowPhotoCheck()
    async with serving(env.client, check):
        journey = await _paid(env)
        train = await journey.start_update(
            JourneyWorkflow.train, _photos(journey), wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        await asyncio.wait_for(check.checking.wait(), DEADLINE)
        cancel = await journey.start_update(
            JourneyWorkflow.cancel,
            CancelRequest(reason="customer asked by email"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await _reaches(journey, lambda s: s.stage is JourneyStage.CANCELLING)
        check.finish.set()
        _expect("refusal", await _refusal(train.result()), Refusal.CANCELLED.value)
        _expect("stage", (await cancel.result()).stage, JourneyStage.CANCELLED)
    return journey.id


async def cancel_zip(env: WorkflowEnvironment) -> str:
    """An operator cancels while the training zip is built: the zip is stopped, the payment refunded."""
    zip_ = EndlessZip()
    async with serving(env.client, zip_):
        journey = await _paid(env)
        await journey.execute_update(JourneyWorkflow.train, _photos(journey))
        await asyncio.wait_for(zip_.zipping.wait(), DEADLINE)
        cancelled = await journey.execute_update(
            JourneyWorkflow.cancel, CancelRequest(reason="customer asked by email")
        )
        _expect("stage", cancelled.stage, JourneyStage.CANCELLED)
        await asyncio.wait_for(zip_.cancelled.wait(), DEADLINE)
    return journey.id


async def internal_error_resumed(env: WorkflowEnvironment) -> str:
    """A ledger write fails with a bug: `NeedsOperator=internal_error`; after the fix, `resume` goes on."""
    ledger = LedgerBug()
    async with serving(env.client, ledger):
        journey = await _open(env)
        await journey.signal(JourneyWorkflow.payment_event, PAID)
        await _reaches(journey, lambda s: s.attention is Attention.INTERNAL_ERROR)
        ledger.fixed = True
        await journey.execute_update(JourneyWorkflow.resume, ResumeRequest(reason="repaired the plan row"))
        await _reaches(journey, lambda s: s.stage is JourneyStage.PAID and s.attention is None)
    return journey.id


async def ledger_failing(env: WorkflowEnvironment) -> str:
    """Recording the payment fails for five minutes: `NeedsOperator=ledger_failing` until it succeeds."""
    ledger = LedgerDown()
    async with serving(env.client, ledger):
        journey = await _open(env)
        await journey.signal(JourneyWorkflow.payment_event, PAID)
        await env.sleep(LEDGER_PATIENCE)
        await until(env, journey, lambda s: s.attention is Attention.LEDGER_FAILING)
        ledger.down = False
        await until(env, journey, lambda s: s.stage is JourneyStage.PAID and s.attention is None)
    return journey.id


async def addon_refunded(env: WorkflowEnvironment) -> str:
    """An add-on is paid for a model that can no longer use it: the add-on is refunded."""
    async with serving(env.client, JourneyEnded()):
        payment_id, version_id = uuid.uuid4(), uuid.uuid4()
        pay_by = await env.get_current_time() + CHECKOUT_WINDOW
        request = CheckoutOpen(payment_id=payment_id, plan_id=2, pay_by=pay_by, version_id=version_id)
        journeys = Journeys(env.client, TASK_QUEUE, PROMPTS_PER_RUN)
        await journeys.open_checkout(request, ADDON, (version_id, uuid.uuid4()))
        addon = env.client.get_workflow_handle_for(AddonWorkflow.run, addon_id(payment_id))
        await addon.signal(AddonWorkflow.payment_event, PAID)
        _expect("stage", (await addon.result()).stage.value, "refunded")
    return addon.id


PATHS: dict[str, Callable[[WorkflowEnvironment], Awaitable[str]]] = {
    "expired_checkout": expired_checkout,
    "late_payment": late_payment,
    "photos_unchecked": photos_unchecked,
    "photos_lost": photos_lost,
    "training_not_started": training_not_started,
    "cancel_validating": cancel_validating,
    "cancel_zip": cancel_zip,
    "internal_error_resumed": internal_error_resumed,
    "ledger_failing": ledger_failing,
    "addon_refunded": addon_refunded,
}
