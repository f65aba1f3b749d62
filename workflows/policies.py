"""Timeouts and retry policies shared by the workflows (changing them changes no history event)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

LEDGER_TIMEOUT = timedelta(seconds=30)
LEDGER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))

REPLICATE_TIMEOUT = timedelta(seconds=60)
# Rate limits and outages are retried for a while; a request Replicate refuses outright is not.
VENDOR_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=20,
    non_retryable_error_types=["ReplicateRejected"],
)


def polling(every: timedelta) -> RetryPolicy:
    """Retries as a polling loop: a constant interval, and retries are not written to history."""
    return RetryPolicy(
        initial_interval=every,
        backoff_coefficient=1.0,
        maximum_interval=every,
        non_retryable_error_types=["ReplicateRejected"],
    )


def abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a pending activity or timer we no longer need, without awaiting it.

    Its cancellation still resolves later; retrieving that outcome in a callback keeps asyncio from
    logging "exception was never retrieved". A callback issues no command, so history is unchanged.
    """
    task.cancel()
    task.add_done_callback(lambda done: None if done.cancelled() else done.exception())


# Failures whose message was written for the customer; anything else is an internal error text.
CUSTOMER_FACING = frozenset({"ReplicateRejected", "OutputGone", "BadOutput"})
INTERNAL = "a temporary problem on our side"


def customer_reason(err: ActivityError) -> str:
    """What a customer may read about a failed activity (the full error stays in the worker's log)."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type in CUSTOMER_FACING:
        return cause.message
    return INTERNAL
