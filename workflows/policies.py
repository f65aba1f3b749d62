"""Timeouts and retry policies shared by the workflows (changing them changes no history event)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

# Errors that retrying cannot fix: a bug or an inconsistent ledger. They stop the retries at once and put
# the workflow in front of an operator (`NeedsOperator`) instead of retrying for ever out of sight.
PROGRAMMING_ERRORS = (
    "AssertionError",
    "AttributeError",
    "KeyError",
    "LedgerInconsistent",
    "NameError",
    "TypeError",
    "ValidationError",
    "ValueError",
)

LEDGER_TIMEOUT = timedelta(seconds=30)
LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=list(PROGRAMMING_ERRORS),
)
# A ledger write still failing after this long flags the workflow for an operator (and keeps trying).
LEDGER_PATIENCE = timedelta(minutes=5)

REPLICATE_TIMEOUT = timedelta(seconds=60)
# Rate limits and outages are retried for a while; a request Replicate refuses outright is not.
VENDOR_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=20,
    non_retryable_error_types=["ReplicateRejected", *PROGRAMMING_ERRORS],
)

STRIPE_TIMEOUT = timedelta(seconds=60)
# A refund is retried through a Stripe outage for this long; a refusal ("RefundRejected") is not retried.
REFUND_PATIENCE = timedelta(hours=1)
STRIPE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=["RefundRejected", *PROGRAMMING_ERRORS],
)
# The customer waits for the checkout URL: a few quick attempts, then the API answers 503.
CHECKOUT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=list(PROGRAMMING_ERRORS),
)
CHECKOUT_TIMEOUT = timedelta(seconds=20)


def polling(first: timedelta, longest: timedelta, *, growth: float) -> RetryPolicy:
    """Retries as a polling loop: gaps from `first`, each `growth` times the last, up to `longest`.

    The retries of a poll that finds the job unfinished (a benign failure) are not written to history.
    """
    return RetryPolicy(
        initial_interval=first,
        backoff_coefficient=growth,
        maximum_interval=max(first, longest),
        non_retryable_error_types=["ReplicateRejected", *PROGRAMMING_ERRORS],
    )


def abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a pending activity or timer we no longer need, without awaiting it.

    Its cancellation still resolves later; retrieving that outcome in a callback keeps asyncio from
    logging "exception was never retrieved". A callback issues no command, so history is unchanged.
    """
    task.cancel()
    task.add_done_callback(lambda done: None if done.cancelled() else done.exception())


def failure_type(err: ActivityError) -> str | None:
    """The `ApplicationError` type an activity failed with (None for timeouts and cancellations)."""
    cause = err.cause
    return cause.type if isinstance(cause, ApplicationError) else None


def is_programming_error(err: ActivityError) -> bool:
    """Whether the activity failed with an error retrying cannot fix."""
    return failure_type(err) in PROGRAMMING_ERRORS


# Failures whose message was written for the customer; anything else is an internal error text.
CUSTOMER_FACING = frozenset({"ReplicateRejected", "OutputGone", "BadOutput"})
INTERNAL = "a temporary problem on our side"


def customer_reason(err: ActivityError) -> str:
    """What a customer may read about a failed activity (the full error stays in the worker's log)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in CUSTOMER_FACING:
        return cause.message
    return INTERNAL
