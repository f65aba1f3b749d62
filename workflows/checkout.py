"""The checkout phase, shared by the journey and add-on workflows: open it, then wait for it to settle."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from ecomdream.contracts.payment import (
        CheckoutOpen,
        CheckoutOpened,
        CheckoutOutcome,
        PaymentEvent,
        PaymentEventKind,
        RefundRequest,
        RefundResult,
    )
    from ecomdream.contracts.refusals import Refusal, refuse

from workflows import metrics
from workflows.policies import (
    CHECKOUT_RETRY,
    CHECKOUT_TIMEOUT,
    LEDGER_RETRY,
    LEDGER_TIMEOUT,
    REFUND_PATIENCE,
    STRIPE_RETRY,
    STRIPE_TIMEOUT,
)

# Stripe can deliver `completed` a little after the session's own expiry; wait this much longer.
PAYMENT_GRACE = timedelta(minutes=15)
# Delayed payment methods (bank debits) settle within days; wait up to this long after `completed` + unpaid.
ASYNC_PAYMENT_LIMIT = timedelta(days=14)


def _never() -> bool:
    return False


class Checkout:
    """The payment part of a workflow's state: applies each Stripe event once, in any order.

    Money always wins: a payment that settles after the checkout was given up for expired (its webhook
    was late) turns the outcome back into PAID, so the workflow records it and goes on instead of
    dropping it.
    """

    def __init__(
        self,
        payment_id: uuid.UUID,
        pay_by: datetime,
        seen: tuple[str, ...] = (),
        opened: CheckoutOpened | None = None,
        cancelled: Callable[[], bool] = _never,
    ) -> None:
        self.payment_id = payment_id
        self.pay_by = pay_by
        self.seen = list(seen)
        self.opened = opened
        self.cancelled = cancelled
        self.outcome: CheckoutOutcome | None = None
        self.awaiting_async = False
        self.opening = False

    def apply(self, event: PaymentEvent) -> bool:
        """Apply a verified event; returns False for duplicates and for events that change nothing."""
        if event.event_id in self.seen:
            return False
        self.seen.append(event.event_id)
        if event.settles_payment and self.outcome in (None, CheckoutOutcome.EXPIRED):
            self.outcome = CheckoutOutcome.PAID
            return True
        if self.outcome is not None:
            return False
        if event.kind is PaymentEventKind.COMPLETED:
            self.awaiting_async = True
        elif event.kind is PaymentEventKind.ASYNC_FAILED:
            self.outcome = CheckoutOutcome.PAYMENT_FAILED
        elif event.kind is PaymentEventKind.EXPIRED and not self.awaiting_async:
            self.outcome = CheckoutOutcome.EXPIRED
        return True

    def refusal_to_open(self) -> None:
        """The `open_checkout` validator: a checkout is opened once (a repeat returns the first answer)."""
        if self.opening:
            raise refuse(Refusal.BUSY, "The checkout is being opened, please retry in a moment")
        if self.outcome is not None and self.opened is None:
            raise refuse(Refusal.CHECKOUT_UNAVAILABLE, "We could not open your checkout, please try again")

    async def open(self, request: CheckoutOpen) -> CheckoutOpened:
        """Record the payment and create the Stripe session; a failure ends the checkout (API: 503)."""
        if self.opened is not None:
            return self.opened
        self.opening = True
        try:
            self.opened = await workflow.execute_activity_method(
                PaymentActivities.open_checkout,
                request,
                start_to_close_timeout=CHECKOUT_TIMEOUT,
                retry_policy=CHECKOUT_RETRY,
                summary="open the Stripe checkout",
            )
        except ActivityError as err:
            workflow.logger.warning("checkout not opened: %s", err.cause or err)
            self.outcome = self.outcome or CheckoutOutcome.CHECKOUT_FAILED
            raise refuse(
                Refusal.CHECKOUT_UNAVAILABLE, "We could not reach the payment provider, please try again"
            ) from err
        finally:
            self.opening = False
        return self.opened

    async def wait(self) -> CheckoutOutcome:
        """Wait until the payment is settled, failed, expired or cancelled; delayed payments move the deadline."""
        while self.outcome is None:
            if self._cancel_due():
                self.outcome = await self._close() or CheckoutOutcome.CANCELLED
                break
            limit = self.pay_by + (ASYNC_PAYMENT_LIMIT if self.awaiting_async else PAYMENT_GRACE)
            remaining = limit - workflow.now()
            if remaining <= timedelta(0):
                self.outcome = CheckoutOutcome.EXPIRED
                break
            was_async = self.awaiting_async

            def changed(was_async: bool = was_async) -> bool:
                return self.outcome is not None or self.awaiting_async != was_async or self._cancel_due()

            try:
                await workflow.wait_condition(changed, timeout=remaining, timeout_summary="checkout deadline")
            except TimeoutError:
                self.outcome = self.outcome or CheckoutOutcome.EXPIRED
        return self.outcome

    def _cancel_due(self) -> bool:
        # An operator's cancel closes the checkout once it is open (or failed to open).
        return self.cancelled() and not self.opening

    async def _close(self) -> CheckoutOutcome | None:
        """Close the checkout so it can no longer take money; PAID if the customer paid just before."""
        closed = await workflow.execute_activity_method(
            PaymentActivities.expire_checkout,
            self.payment_id,
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary="close the checkout",
        )
        return None if closed else CheckoutOutcome.PAID


async def refund(payment_id: uuid.UUID, reason: str) -> RefundResult:
    """Refund a payment in full (idempotent at Stripe); a refusal, or an hour of outage, comes back as `error`."""
    metrics.refund()
    try:
        return await workflow.execute_activity_method(
            PaymentActivities.refund_payment,
            RefundRequest(payment_id=payment_id, reason=reason),
            start_to_close_timeout=STRIPE_TIMEOUT,
            schedule_to_close_timeout=REFUND_PATIENCE,
            retry_policy=STRIPE_RETRY,
            summary="refund the payment",
        )
    except ActivityError as err:
        workflow.logger.warning("refund not made: %s", err.cause or err)
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == "RefundRejected":
            return RefundResult(refund_id=None, amount=0, error=cause.message)
        return RefundResult(
            refund_id=None, amount=0, error="the refund did not go through (see the worker log)"
        )
