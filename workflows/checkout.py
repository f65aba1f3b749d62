"""Waiting for a Stripe checkout to settle: shared by the journey and add-on workflows."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ecomdream.contracts.payment import JourneyStage, PaymentEvent, PaymentEventKind

# Stripe can deliver `completed` a little after the session's own expiry; wait this much longer.
PAYMENT_GRACE = timedelta(minutes=15)
# Delayed payment methods (bank debits) settle within days; wait up to this long after `completed` + unpaid.
ASYNC_PAYMENT_LIMIT = timedelta(days=14)


class Checkout:
    """The payment part of a workflow's state: applies each Stripe event once, in any order."""

    def __init__(self, pay_by: datetime, seen: tuple[str, ...] = ()) -> None:
        self.pay_by = pay_by
        self.seen = list(seen)
        self.outcome: JourneyStage | None = None
        self.awaiting_async = False

    def apply(self, event: PaymentEvent) -> bool:
        """Apply a verified event; returns False for duplicates and for events after the outcome is known."""
        if event.event_id in self.seen:
            return False
        self.seen.append(event.event_id)
        if self.outcome is not None:
            return False
        if event.settles_payment:
            self.outcome = JourneyStage.PAID
        elif event.kind is PaymentEventKind.COMPLETED:
            self.awaiting_async = True
        elif event.kind is PaymentEventKind.ASYNC_FAILED:
            self.outcome = JourneyStage.PAYMENT_FAILED
        elif event.kind is PaymentEventKind.EXPIRED and not self.awaiting_async:
            self.outcome = JourneyStage.EXPIRED
        return True

    async def wait(self) -> JourneyStage:
        """Wait until the payment is settled, failed or expired; the deadline moves if payment is delayed."""
        while self.outcome is None:
            limit = self.pay_by + (ASYNC_PAYMENT_LIMIT if self.awaiting_async else PAYMENT_GRACE)
            remaining = limit - workflow.now()
            if remaining <= timedelta(0):
                self.outcome = JourneyStage.EXPIRED
                break
            was_async = self.awaiting_async

            def changed(was_async: bool = was_async) -> bool:
                return self.outcome is not None or self.awaiting_async != was_async

            try:
                await workflow.wait_condition(
                    changed,
                    timeout=remaining,
                    timeout_summary="checkout deadline",
                )
            except TimeoutError:
                self.outcome = JourneyStage.EXPIRED
        return self.outcome
