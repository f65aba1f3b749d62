"""Waiting for a provider's job: its webhook first, then polling with backoff for a lost webhook.

Trainings and predictions both wait here. While the job should still be running, only the webhook is
awaited (one timer, no call to the provider). Once the job is overdue, a polling activity starts next to
the webhook: its retries are the polls (not written to history), each gap 10 % longer than the one
before, so a gap stays about a tenth of the time already waited, between `SHORTEST_GAP` and the longest
gap the caller allows. A delivered webhook therefore costs no poll at all, and a lost one is noticed
about 10 % late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, Self, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE

from workflows.policies import REPLICATE_TIMEOUT, abandon, polling

T = TypeVar("T")
A = TypeVar("A")

# The first poll gap is this share of the expected duration (and the gaps grow by it, see `polling`).
POLL_SHARE = 0.1
SHORTEST_GAP = timedelta(seconds=1)
# A poll started at the deadline still gets one look at the job.
LAST_LOOK = timedelta(seconds=1)


class Waits(Protocol):
    """The request's figures for the wait (the API takes them from settings), in seconds."""

    @property
    def expected_seconds(self) -> float: ...
    @property
    def deadline_seconds(self) -> float: ...
    @property
    def poll_seconds(self) -> float: ...


@dataclass(frozen=True)
class Patience:
    """How long a job usually takes, how long it may take at all, and the longest gap between polls."""

    expected: timedelta
    deadline: timedelta
    longest_gap: timedelta

    @classmethod
    def of(cls, waits: Waits) -> Self:
        """The patience a request asks for."""
        return cls(
            expected=timedelta(seconds=waits.expected_seconds),
            deadline=timedelta(seconds=waits.deadline_seconds),
            longest_gap=timedelta(seconds=waits.poll_seconds),
        )

    @property
    def webhook_alone(self) -> timedelta:
        """How long only the webhook is awaited."""
        return min(self.expected, self.deadline)

    @property
    def polling_for(self) -> timedelta:
        """What is left of the deadline once polling starts."""
        return max(self.deadline - self.webhook_alone, LAST_LOOK)

    def poll_retries(self) -> RetryPolicy:
        """The polls: the first gap a tenth of the expected duration, bounded by the shortest and longest."""
        first = min(max(self.expected * POLL_SHARE, SHORTEST_GAP), self.longest_gap)
        return polling(first, self.longest_gap, growth=1 + POLL_SHARE)


def _never() -> bool:
    return False


async def webhook_or_poll(
    delivered: Callable[[], T | None],
    poll: Callable[[Any, A], Awaitable[T]],
    poll_input: A,
    waits: Waits,
    *,
    what: str,
    interrupted: Callable[[], bool] = _never,
) -> T | None:
    """The job's end from its webhook, or from polling once the job is overdue; whichever comes first.

    `poll` (an activity on the Replicate "other" queue) looks once and fails benignly while the job runs;
    its retries are the polls, until the deadline: a poll that gave up raises its `ActivityError`.
    Returns None when `interrupted()` (an operator's cancel) comes first; a poll is then abandoned and
    the caller cancels the job at the provider.
    """
    patience = Patience.of(waits)

    def ended() -> bool:
        return delivered() is not None or interrupted()

    try:
        await workflow.wait_condition(
            ended, timeout=patience.webhook_alone, timeout_summary=f"the {what} is overdue: poll it"
        )
        return delivered()
    except TimeoutError:
        pass
    polls = workflow.start_activity_method(
        poll,
        poll_input,
        task_queue=REPLICATE_OTHER_TASK_QUEUE,
        start_to_close_timeout=REPLICATE_TIMEOUT,
        schedule_to_close_timeout=patience.polling_for,
        retry_policy=patience.poll_retries(),
        summary=f"poll the overdue {what} (its webhook did not come)",
    )
    event = asyncio.ensure_future(workflow.wait_condition(ended))
    await workflow.wait([polls, event], return_when=asyncio.FIRST_COMPLETED)
    result = delivered()
    if result is not None or interrupted():
        abandon(polls)
        return result
    abandon(event)
    return polls.result()
