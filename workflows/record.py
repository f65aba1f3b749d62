"""The journey's record: its carried state, the stage operators search by, and what the Web UI says."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from ecomdream.contracts.payment import (
        ENDED_STAGES,
        Attention,
        JourneyStage,
        JourneyState,
        RefundResult,
    )
    from ecomdream.contracts.search import JOURNEY_STAGE, NEEDS_OPERATOR

from workflows import metrics

DETAILS = {
    JourneyStage.AWAITING_PAYMENT: "Waiting for the customer to pay at checkout",
    JourneyStage.CHECKOUT_FAILED: "The checkout could not be opened; the customer was asked to try again",
    JourneyStage.PAID: "Paid — waiting for the customer's photos",
    JourneyStage.VALIDATING: "Checking the customer's photos",
    JourneyStage.EXPIRED: "Checkout expired without payment",
    JourneyStage.PAYMENT_FAILED: "Payment failed at Stripe",
    JourneyStage.DELETED: "Deleted at the customer's request (see the deletion's receipt)",
}
DELETED_REASON = "the customer deleted the model"
ATTENTION = {
    Attention.REFUND_REFUSED: "an operator must settle the refund",
    Attention.LEDGER_FAILING: "a ledger write keeps failing (retrying); check the database",
    Attention.INTERNAL_ERROR: "a step failed with an internal error; fix it, then send `resume`",
}


def show(*updates: SearchAttributeUpdate[Any]) -> None:
    """Upsert the search attributes whose value changes, in one event (each upsert is a billed action).

    Those set at start (by the API) and carried over by continue-as-new are not written again.
    """
    current = workflow.info().typed_search_attributes
    changed = [update for update in updates if current.get(update.key) != update.value]
    if changed:
        workflow.upsert_search_attributes(changed)


class JourneyRecord:
    """Holds the journey's `JourneyState` (frozen; replaced as a whole) and keeps the UI in step with it."""

    def __init__(self, state: JourneyState) -> None:
        self.state = state
        # Operator's cancel: every phase checks it at each step (kept per run: only live stages cancel).
        self.cancel_reason: str | None = None
        # The customer's deletion: a cancel that ends in DELETED (a ready model stops without a refund).
        self.deleting = False

    def delete(self) -> None:
        """The customer deletes the model: every phase stops as for a cancel."""
        self.deleting = True
        self.cancel_reason = self.cancel_reason or DELETED_REASON

    def update(self, **changes: Any) -> None:
        """Change fields of the state (and refresh the details the UI shows)."""
        self.state = self.state.model_copy(update=changes)
        workflow.set_current_details(self.details())

    def enter(self, stage: JourneyStage, *also: SearchAttributeUpdate[Any]) -> None:
        """Move to stage (with other search attributes that change with it); once cancelling, only an
        ended stage follows; a deleted journey ends DELETED."""
        if self.state.stage is JourneyStage.CANCELLING and stage not in ENDED_STAGES:
            return
        if self.deleting and stage in ENDED_STAGES:
            stage = JourneyStage.DELETED
        if stage is not self.state.stage:
            metrics.journey_stage(stage.value)
        self.state = self.state.model_copy(update={"stage": stage})
        show(JOURNEY_STAGE.value_set(stage.value), *also)
        workflow.set_current_details(self.details())

    def flag(self, attention: Attention) -> None:
        """An operator must act (searchable as `NeedsOperator`)."""
        if self.state.attention is not attention:
            metrics.operator_attention(attention.value)
            show(NEEDS_OPERATOR.value_set(attention.value))
            self.update(attention=attention)

    def clear(self, attention: Attention) -> None:
        """The reason for `attention` is gone."""
        if self.state.attention is attention:
            show(NEEDS_OPERATOR.value_unset())
            self.update(attention=None)

    def refunded(self, result: RefundResult) -> RefundResult:
        """Remember a refund that did not go through (until one does): an operator must settle it."""
        if result.error != self.state.refund_error:
            self.update(refund_error=result.error)
        if result.error is None:
            self.clear(Attention.REFUND_REFUSED)
        else:
            self.flag(Attention.REFUND_REFUSED)
        return result

    @property
    def images_left(self) -> int:
        """Images the customer may still generate."""
        return self.state.images_quota - self.state.images_generated

    def details(self) -> str:
        """One line for the Web UI: where the journey is and what, if anything, an operator must do."""
        line = self._stage_details()
        if self.state.attention is not None:
            line += f" — {ATTENTION[self.state.attention]}"
        return line

    def _stage_details(self) -> str:
        state = self.state
        match state.stage:
            case JourneyStage.READY:
                return f"Ready — {self.images_left} of {state.images_quota} images left"
            case JourneyStage.TRAINING if state.training_started_at is None:
                return "Preparing the training set from the customer's photos"
            case JourneyStage.TRAINING:
                return f"Training on Replicate, started {state.training_started_at:%Y-%m-%d %H:%M} UTC"
            case JourneyStage.AWAITING_RETRY if state.refund_at is not None:
                return (
                    f"Failed: {state.error}; refund at {state.refund_at:%H:%M} UTC unless an operator retries"
                )
            case JourneyStage.CANCELLING:
                return f"Cancelling: {self.cancel_reason or state.error}"
            case JourneyStage.FAILED | JourneyStage.CANCELLED | JourneyStage.AWAITING_RETRY:
                # A cancelled journey's error says so already ("Cancelled by operator: …").
                what = state.error if state.stage is JourneyStage.CANCELLED else f"Failed: {state.error}"
                if state.refund_error is not None:
                    return f"{what}; NOT refunded — {state.refund_error}"
                return f"{what}; refunded"
        return DETAILS.get(state.stage, state.stage.value)
