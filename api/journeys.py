"""The one door from HTTP to the workflows: starts, signals, updates and queries, and their refusals.

Routes parse and authorize, call one function here and render its answer. Every refusal a workflow can
give (`ecomdream.contracts.refusals.Refusal`) is mapped to the customer's answer in `REFUSALS`, once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from ecomdream.contracts import addon_id, deletion_workflow_id, journey_id
from ecomdream.contracts.deletion import DeletionInput, DeletionReceipt
from ecomdream.contracts.payment import (
    AddonInput,
    CheckoutOpen,
    CheckoutOpened,
    JourneyInput,
    JourneyStage,
    JourneyState,
    PaymentEvent,
    PlanTerms,
)
from ecomdream.contracts.prompt import PromptOutcome, PromptRequest
from ecomdream.contracts.refusals import Refusal, refusal_of, training_refusal
from ecomdream.contracts.search import JOURNEY_STAGE, PAYMENT_ID, PLAN_NAME, VERSION_ID
from ecomdream.contracts.training import TrainAccepted, TrainRequest
from ecomdream.errors import (
    EcomdreamError,
    NoLongerAvailable,
    NotNow,
    PhotosRejected,
    Unavailable,
    Unpaid,
)
from workflows.addon import AddonWorkflow
from workflows.deletion import DeletionWorkflow
from workflows.journey import JourneyWorkflow

log = logging.getLogger("ecomdream.api.journeys")

REFUSALS: dict[Refusal, type[EcomdreamError]] = {
    Refusal.NOT_PAID: Unpaid,
    Refusal.BUSY: NotNow,
    Refusal.ALREADY_TRAINED: NotNow,
    Refusal.JOURNEY_ENDED: NotNow,
    Refusal.INVALID_PHOTOS: PhotosRejected,
    Refusal.PHOTOS_UNCHECKED: Unavailable,
    Refusal.CANCELLED: NotNow,
    Refusal.NOT_READY: NotNow,
    Refusal.MODEL_FAILED: NoLongerAvailable,
    Refusal.QUOTA_EXHAUSTED: Unpaid,
    Refusal.QUOTA_EXCEEDED: Unpaid,
    Refusal.CHECKOUT_UNAVAILABLE: Unavailable,
    Refusal.MODEL_READY: NotNow,
    Refusal.NOT_RETRYABLE: NotNow,
    Refusal.NOT_ACTIVE: NotNow,
    Refusal.NOTHING_TO_RESUME: NotNow,
    Refusal.DELETED: NoLongerAvailable,
}
# How long a train request waits for the photo check (the customer's upload is already staged).
TRAIN_TIMEOUT_S = 600
# Checking a payment's journey before reading its upload should not keep the customer long.
LOOKUP_TIMEOUT_S = 15
# A deletion answers once its receipt is written (the first step of its workflow).
RECEIPT_TIMEOUT_S = 30


class PromptQueued(Exception):
    """Temporal holds the prompt until a worker takes it: it will run (and be charged) later."""


def refused(error: WorkflowUpdateFailedError, fallback: str) -> EcomdreamError:
    """The customer's answer to a workflow's refusal (a failure that is not a refusal: 503 with fallback)."""
    refusal = refusal_of(error.cause)
    if refusal is None or error.cause is None:
        log.warning("update failed without a refusal: %s", error.cause)
        return Unavailable(fallback)
    message = getattr(error.cause, "message", fallback)
    if refusal is Refusal.INVALID_PHOTOS:
        details = getattr(error.cause, "details", ()) or ((),)
        return PhotosRejected(message, extra={"errors": list(details[0])})
    return REFUSALS[refusal](message)


def _attributes(
    payment_id: uuid.UUID, terms: PlanTerms, version_id: uuid.UUID | None
) -> TypedSearchAttributes:
    """Set at start, so a journey is findable before its first task runs."""
    pairs = [
        SearchAttributePair(PAYMENT_ID, str(payment_id)),
        SearchAttributePair(PLAN_NAME, terms.plan_name),
        SearchAttributePair(JOURNEY_STAGE, JourneyStage.AWAITING_PAYMENT.value),
    ]
    if version_id is not None:
        pairs.append(SearchAttributePair(VERSION_ID, str(version_id)))
    return TypedSearchAttributes(pairs)


class Journeys:
    """Starts, signals, updates and queries journeys and add-ons for the routes."""

    def __init__(self, client: Client, task_queue: str, prompts_per_run: int) -> None:
        self.client = client
        self.task_queue = task_queue
        self.prompts_per_run = prompts_per_run

    def _workflow(
        self,
        payment_id: uuid.UUID,
        terms: PlanTerms,
        pay_by: datetime,
        target: tuple[uuid.UUID, uuid.UUID] | None,
    ) -> tuple[Any, Any, str, TypedSearchAttributes]:
        """(run method, input, id, search attributes) of the workflow a payment belongs to."""
        if target is None:
            journey = JourneyInput(
                payment_id=payment_id, plan=terms, pay_by=pay_by, prompts_per_run=self.prompts_per_run
            )
            return JourneyWorkflow.run, journey, journey_id(payment_id), _attributes(payment_id, terms, None)
        addon = AddonInput(
            payment_id=payment_id,
            plan=terms,
            version_id=target[0],
            journey_workflow_id=journey_id(target[1]),
            pay_by=pay_by,
        )
        return AddonWorkflow.run, addon, addon_id(payment_id), _attributes(payment_id, terms, target[0])

    async def open_checkout(
        self, request: CheckoutOpen, terms: PlanTerms, target: tuple[uuid.UUID, uuid.UUID] | None
    ) -> CheckoutOpened:
        """Start the payment's workflow and have it open the checkout (update-with-start, one round trip)."""
        run, arg, workflow_id, attributes = self._workflow(request.payment_id, terms, request.pay_by, target)
        start = WithStartWorkflowOperation(
            run,
            arg,
            id=workflow_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"{terms.plan_name} — payment {request.payment_id}",
            search_attributes=attributes,
        )
        update = AddonWorkflow.open_checkout if target else JourneyWorkflow.open_checkout
        try:
            opened: CheckoutOpened = await self.client.execute_update_with_start_workflow(
                update, request, start_workflow_operation=start, id=f"checkout-{request.payment_id}"
            )
        except WorkflowUpdateFailedError as exc:
            raise refused(exc, "We could not open your checkout, please try again") from exc
        return opened

    async def deliver_payment_event(
        self,
        payment_id: uuid.UUID,
        terms: PlanTerms,
        pay_by: datetime,
        target: tuple[uuid.UUID, uuid.UUID] | None,
        event: PaymentEvent,
        *,
        money_may_be_lost: bool,
    ) -> None:
        """Signal the payment's workflow. Money for a workflow that already ended starts it again
        (signal-with-start), so a late payment is recorded as paid instead of being dropped."""
        run, arg, workflow_id, attributes = self._workflow(payment_id, terms, pay_by, target)
        if money_may_be_lost:
            await self.client.start_workflow(
                run,
                arg,
                id=workflow_id,
                task_queue=self.task_queue,
                start_signal="payment_event",
                start_signal_args=[event],
                static_summary=f"{terms.plan_name} — payment {payment_id}",
                search_attributes=attributes,
            )
            return
        try:
            await self.client.get_workflow_handle(workflow_id).signal("payment_event", event)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            log.info(
                "Stripe event %s for payment %s arrived after its workflow ended", event.event_id, payment_id
            )

    async def state(self, payment_id: uuid.UUID) -> JourneyState | None:
        """The journey's own view of itself, None once it ended and is gone."""
        handle = self.client.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                return await handle.query(JourneyWorkflow.get_state)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def check_can_train(self, payment_id: uuid.UUID) -> None:
        """Refuse before reading a large upload when the journey cannot take photos now (same rule as the
        `train` validator, which checks again atomically)."""
        state = await self.state(payment_id)
        if state is None:
            raise NoLongerAvailable("This payment can no longer be used to train a model")
        refusal = training_refusal(state.stage, busy=False)
        kind = refusal_of(refusal)
        if refusal is not None and kind is not None:
            raise REFUSALS[kind](refusal.message)

    async def train(self, payment_id: uuid.UUID, request: TrainRequest) -> TrainAccepted:
        """Hand the staged photos to the journey; answers once they are checked and the model recorded."""
        handle = self.client.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        try:
            async with asyncio.timeout(TRAIN_TIMEOUT_S):
                return await handle.execute_update(JourneyWorkflow.train, request, id=str(request.upload_id))
        except WorkflowUpdateFailedError as exc:
            raise refused(exc, "Training could not be started, please try again") from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise NoLongerAvailable("This payment can no longer be used to train a model") from exc
            raise

    async def start_prompt(
        self, payment_id: uuid.UUID, request: PromptRequest, accept_seconds: float
    ) -> WorkflowUpdateHandle[PromptOutcome]:
        """Hand a prompt to the journey; raises `PromptQueued` when no worker took it in time."""
        handle = self.client.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
        try:
            async with asyncio.timeout(accept_seconds):
                return await handle.start_update(
                    JourneyWorkflow.create_prompt,
                    request,
                    id=str(request.prompt_id),
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                )
        except WorkflowUpdateFailedError as exc:
            raise refused(exc, "Image generation is unavailable right now, please retry") from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                # Only journeys that failed or were cancelled end; a ready one serves for months.
                raise NoLongerAvailable("This model failed to train and cannot generate images") from exc
            raise
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
            raise PromptQueued from exc

    async def delete_version(self, version_id: uuid.UUID, payment_id: uuid.UUID) -> DeletionReceipt:
        """Start the model's deletion (or find it running) and answer its receipt once it is written."""
        start = WithStartWorkflowOperation(
            DeletionWorkflow.run,
            DeletionInput(version_id=version_id, payment_id=payment_id, requested_at=datetime.now(UTC)),
            id=deletion_workflow_id(version_id),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Deletion of version {version_id}",
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(PAYMENT_ID, str(payment_id)),
                    SearchAttributePair(VERSION_ID, str(version_id)),
                ]
            ),
        )
        try:
            async with asyncio.timeout(RECEIPT_TIMEOUT_S):
                return await self.client.execute_update_with_start_workflow(
                    DeletionWorkflow.get_receipt, start_workflow_operation=start
                )
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
            raise Unavailable(
                "Your deletion is queued and will start shortly; repeat the request to get its receipt"
            ) from exc
