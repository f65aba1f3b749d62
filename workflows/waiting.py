"""Waiting for a provider's job: the webhook, with polling behind it for lost webhooks (trainings, predictions)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from temporalio import workflow

from workflows.policies import abandon

T = TypeVar("T")


def _never() -> bool:
    return False


async def webhook_or_poll(
    delivered: Callable[[], T | None],
    poll: workflow.ActivityHandle[T],
    interrupted: Callable[[], bool] = _never,
) -> T | None:
    """The job's end from whichever comes first: its webhook or the polling activity.

    `poll` retries until the job finished, bounded by its schedule-to-close deadline; a poll that gave up
    raises its `ActivityError`. Returns None when `interrupted()` (an operator's cancel) comes first; the
    poll is then abandoned and the caller cancels the job at the provider.
    """
    event = asyncio.ensure_future(workflow.wait_condition(lambda: delivered() is not None or interrupted()))
    await workflow.wait([poll, event], return_when=asyncio.FIRST_COMPLETED)
    result = delivered()
    if result is not None or interrupted():
        abandon(poll)
        return result
    abandon(event)
    return poll.result()
