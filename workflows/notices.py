"""Customer events: the journey `announce`s what happened; a NoticeWorkflow per event tells the customer.

The journey only starts the notice (and awaits the start, not the delivery): a receiver that is down for
days never holds a journey up. Event ids are stable (`ecomdream.contracts.events.event_id`), and so is
the notice's workflow id: announcing an event twice (a replayed or retried start) starts nothing new.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.callbacks import CallbackActivities
    from activities.events import EventActivities
    from activities.mail import MailActivities
    from ecomdream.contracts.events import CustomerEvent, EventType, event_id
    from ecomdream.contracts.notices import (
        CallbackDelivery,
        CallbackState,
        NoticeResult,
        notice_workflow_id,
    )
    from ecomdream.contracts.search import PAYMENT_ID

from workflows.policies import LEDGER_RETRY, LEDGER_TIMEOUT, PROGRAMMING_ERRORS

# Journeys that ran before events existed announce nothing until their next run (replays stay exact).
EVENTS_PATCH = "customer-events"
# A receiver gets three days to come back; attempts 2 s apart at first, then doubling up to an hour apart
# (about 80 attempts), each with a fresh timestamp and signature and the same `webhook-id`.
CALLBACK_PATIENCE = timedelta(days=3)
CALLBACK_TIMEOUT = timedelta(seconds=30)
CALLBACK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(hours=1),
    non_retryable_error_types=list(PROGRAMMING_ERRORS),
)
# E-mail: the relay gets three days too (a refused login or sender needs a person to fix a setting).
EMAIL_PATIENCE = timedelta(days=3)
EMAIL_TIMEOUT = timedelta(minutes=3)
EMAIL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(hours=1),
    non_retryable_error_types=["NotMailed", "EventNotRecorded", *PROGRAMMING_ERRORS],
)
SHOWN = {
    CallbackState.PENDING: "callback being delivered (retried with backoff for up to 3 days)",
    CallbackState.DELIVERED: "callback delivered",
    CallbackState.FAILING: "callback failing",
    CallbackState.GAVE_UP: "callback given up",
}


async def announce(
    payment_id: uuid.UUID,
    version_id: uuid.UUID | None,
    type_: EventType,
    data: dict[str, Any] | None = None,
    *,
    occurrence: str = "",
) -> None:
    """Tell the customer about an event of the journey bought with payment_id: start its NoticeWorkflow.

    `data` holds ids, counts and states, never personal data; the payment and version ids are added.
    `occurrence` tells repeated events of one type apart (a prompt id, an add-on payment id, a training id).
    """
    if not workflow.patched(EVENTS_PATCH):
        return
    ids = {"payment_id": str(payment_id)} | ({"version_id": str(version_id)} if version_id else {})
    event = CustomerEvent(
        event_id=event_id(payment_id, type_, occurrence),
        type=type_,
        payment_id=payment_id,
        version_id=version_id,
        occurred_at=workflow.now(),
        data=ids | (data or {}),
    )
    # PaymentId only: `VersionId = ...` keeps listing a model's journey and prompts, as operators expect.
    attributes = TypedSearchAttributes([SearchAttributePair(PAYMENT_ID, str(payment_id))])
    try:
        await workflow.start_child_workflow(
            NoticeWorkflow.run,
            event,
            id=notice_workflow_id(event.event_id),
            # The journey continues as new and ends; the notice goes on delivering.
            parent_close_policy=ParentClosePolicy.ABANDON,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"{type_.value} of payment {payment_id}",
            search_attributes=attributes,
        )
    except WorkflowAlreadyStartedError:
        workflow.logger.info("event %s was announced already", event.event_id)


@workflow.defn
class NoticeWorkflow:
    """Tells the customer about one event: recorded once in the outbox, then delivered on every channel."""

    def __init__(self) -> None:
        self.callback: CallbackDelivery | None = None
        self.emailed: str | None = None

    @workflow.run
    async def run(self, event: CustomerEvent) -> NoticeResult:
        """Record the event, then deliver it on each channel it needs (each on its own, none waits for another)."""
        workflow.set_current_details(f"{event.type.value}: recording the event")
        channels = await workflow.execute_activity_method(
            EventActivities.record_event,
            event,
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary=f"record {event.type.value}",
        )
        deliveries: list[Awaitable[None]] = []
        if channels.callback:
            self.callback = CallbackDelivery(state=CallbackState.PENDING)
            deliveries.append(self._callback(event))
        if channels.email:
            # Beside the callback, so a slow receiver never delays the message (nor the message the callback).
            deliveries.append(self._email(event))
        self._show(event)
        await asyncio.gather(*deliveries)
        self._show(event)
        return NoticeResult(event_id=event.event_id, callback=self.callback)

    async def _callback(self, event: CustomerEvent) -> None:
        """POST the signed event until a 2xx, a 410 Gone, or three days of failed attempts."""
        try:
            self.callback = await workflow.execute_activity_method(
                CallbackActivities.deliver_callback,
                event,
                start_to_close_timeout=CALLBACK_TIMEOUT,
                schedule_to_close_timeout=CALLBACK_PATIENCE,
                retry_policy=CALLBACK_RETRY,
                summary="deliver the signed callback",
            )
        except ActivityError as err:
            workflow.logger.warning("callback of %s given up: %s", event.event_id, err.cause or err)
            await workflow.execute_activity_method(
                CallbackActivities.give_up_callback,
                event,
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=LEDGER_RETRY,
                summary="record that the callback was given up",
            )
            self.callback = CallbackDelivery(
                state=CallbackState.GAVE_UP, error="no attempt succeeded in 3 days"
            )

    async def _email(self, event: CustomerEvent) -> None:
        """Mail the customer once; a relay that cannot be reached (or refuses our login) is retried for days."""
        try:
            await workflow.execute_activity_method(
                MailActivities.send_event_email,
                event,
                # Well above one SMTP exchange (ECOMDREAM_SMTP_TIMEOUT_SECONDS per command), so an attempt is
                # never retried while it may still be sending.
                start_to_close_timeout=EMAIL_TIMEOUT,
                schedule_to_close_timeout=EMAIL_PATIENCE,
                retry_policy=EMAIL_RETRY,
                summary="e-mail the customer",
            )
            self.emailed = "e-mail settled"
        except ActivityError as err:
            workflow.logger.warning("e-mail of %s given up: %s", event.event_id, err.cause or err)
            await workflow.execute_activity_method(
                MailActivities.give_up_email,
                event,
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=LEDGER_RETRY,
                summary="record that the e-mail was given up",
            )
            self.emailed = "e-mail given up"

    def _show(self, event: CustomerEvent) -> None:
        """The Web UI's line: the event and each channel's state (no URL, no address)."""
        parts = [event.type.value]
        if self.callback is not None:
            parts.append(SHOWN[self.callback.state])
        if self.callback is not None and self.callback.attempts:
            parts.append(f"after {self.callback.attempts} attempt(s)")
        if self.emailed is not None:
            parts.append(self.emailed)
        if len(parts) == 1:
            parts.append("recorded; no callback URL")
        workflow.set_current_details(" — ".join(parts))
