"""Steps that must happen (ledger writes): retried, and put in front of an operator when they cannot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from ecomdream.contracts.payment import Attention

from workflows.policies import (
    LEDGER_PATIENCE,
    LEDGER_RETRY,
    LEDGER_TIMEOUT,
    failure_type,
    is_programming_error,
)

R = TypeVar("R")


class Flags(Protocol):
    """Where a workflow shows that an operator must act (the `NeedsOperator` search attribute)."""

    def flag(self, attention: Attention) -> None:
        """Raise the flag."""

    def clear(self, attention: Attention) -> None:
        """Lower the flag if it is this one."""


class Escalation:
    """Runs ledger activities until they succeed; a long outage or a bug raises `NeedsOperator`.

    A write that keeps failing (the database is down) flags `ledger_failing` after `LEDGER_PATIENCE` and
    goes on retrying; the flag is lowered when it succeeds. A write that can never succeed as it is (a bug,
    an inconsistent row) flags `internal_error` and waits for an operator's `resume` (after a fix is
    deployed, or the row repaired) before it tries again.
    """

    def __init__(self, flags: Flags) -> None:
        self.flags = flags
        self.resume_requested = False
        self.waiting_for_operator = False

    async def ledger(
        self,
        activity: Callable[[Any, Any], Awaitable[R]],
        arg: Any,
        *,
        summary: str,
        answers: tuple[str, ...] = (),
    ) -> R:
        """Run a ledger activity to success, escalating as described above.

        Failures whose type is in `answers` are the step's legitimate answers: they reach the caller.
        """
        while True:
            try:
                result: R = await workflow.execute_activity_method(
                    activity,
                    arg,
                    start_to_close_timeout=LEDGER_TIMEOUT,
                    schedule_to_close_timeout=LEDGER_PATIENCE,
                    retry_policy=LEDGER_RETRY,
                    summary=summary,
                )
            except ActivityError as err:
                if failure_type(err) in answers:
                    raise
                if not is_programming_error(err):
                    workflow.logger.warning("%s keeps failing: %s", summary, err.cause or err)
                    self.flags.flag(Attention.LEDGER_FAILING)
                    continue
                workflow.logger.error("%s cannot succeed as it is: %s", summary, err.cause or err)
                self.flags.flag(Attention.INTERNAL_ERROR)
                await self._wait_for_operator()
                continue
            self.flags.clear(Attention.LEDGER_FAILING)
            self.flags.clear(Attention.INTERNAL_ERROR)
            return result

    def resume(self) -> None:
        """An operator fixed the cause: try the step again."""
        self.resume_requested = True

    async def _wait_for_operator(self) -> None:
        self.waiting_for_operator = True
        await workflow.wait_condition(lambda: self.resume_requested)
        self.resume_requested = False
        self.waiting_for_operator = False
