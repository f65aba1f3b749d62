"""Why a workflow refuses a request: one enum shared by the update validators and the API's error mapping.

A refusal is an `ApplicationError` whose `type` is a `Refusal` value and whose message is written for the
customer (or, for operator actions, for the operator). The API maps each value to its answer in one place.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from temporalio.exceptions import ApplicationError

from ecomdream.contracts.payment import UNPAID_STAGES, JourneyStage


class Refusal(StrEnum):
    """Every reason a journey or add-on turns a request away (stored in histories: never rename)."""

    NOT_PAID = "NotPaid"
    BUSY = "Busy"
    ALREADY_TRAINED = "AlreadyTraining"
    JOURNEY_ENDED = "Ended"
    INVALID_PHOTOS = "InvalidPhotos"
    PHOTOS_UNCHECKED = "PhotosUnchecked"
    CANCELLED = "Cancelled"
    NOT_READY = "NotReady"
    MODEL_FAILED = "ModelFailed"
    QUOTA_EXHAUSTED = "QuotaExhausted"
    QUOTA_EXCEEDED = "QuotaExceeded"
    CHECKOUT_UNAVAILABLE = "CheckoutUnavailable"
    MODEL_READY = "Ready"
    NOT_RETRYABLE = "NotRetryable"
    NOT_ACTIVE = "NotActive"
    NOTHING_TO_RESUME = "NothingToResume"
    DELETED = "Deleted"


def refuse(refusal: Refusal, message: str, *details: Any) -> ApplicationError:
    """The error a validator or handler raises to turn a request away (never retried)."""
    return ApplicationError(message, *details, type=refusal.value, non_retryable=True)


def refusal_of(error: BaseException | None) -> Refusal | None:
    """The refusal an error carries, if it is one of ours."""
    if not isinstance(error, ApplicationError) or error.type is None:
        return None
    return Refusal(error.type) if error.type in set(Refusal) else None


def training_refusal(stage: JourneyStage, busy: bool) -> ApplicationError | None:
    """Whether a journey in `stage` takes photos now; the API asks this before reading a large upload."""
    if stage in UNPAID_STAGES:
        return refuse(Refusal.NOT_PAID, "You must pay to train model")
    if busy or stage is JourneyStage.VALIDATING:
        return refuse(Refusal.BUSY, "Your photos are already being processed, please wait")
    if stage is JourneyStage.DELETED:
        return refuse(Refusal.DELETED, "This model has been deleted")
    if stage in (JourneyStage.CANCELLED, JourneyStage.CANCELLING):
        return refuse(Refusal.JOURNEY_ENDED, "This payment was cancelled and refunded")
    if stage in (JourneyStage.FAILED, JourneyStage.AWAITING_RETRY):
        return refuse(
            Refusal.JOURNEY_ENDED,
            "The training paid with this payment failed, so it cannot train another model; "
            "our team retries the training or refunds the payment",
        )
    if stage is not JourneyStage.PAID:
        return refuse(Refusal.ALREADY_TRAINED, "You already have a model for this payment")
    return None
