"""Notice contracts: what a NoticeWorkflow learns when it records an event, and how its callback went."""

from __future__ import annotations

from enum import StrEnum

from ecomdream.contracts.payment import Contract


def notice_workflow_id(event_id: str) -> str:
    """Workflow id of the notice that delivers one customer event (stable: a repeated start is a no-op)."""
    return f"notice-{event_id}"


class CallbackState(StrEnum):
    """`customer_events.callback_state`: where an event's callback is."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILING = "failing"
    GAVE_UP = "gave_up"


class NoticeChannels(Contract):
    """The channels an event still has to reach (from its outbox row: a rerun skips what was done)."""

    callback: bool = False
    email: bool = False


class CallbackDelivery(Contract):
    """How an event's callback ended: delivered, or given up (410 Gone, the URL removed, three days)."""

    state: CallbackState
    attempts: int = 0
    error: str | None = None


class NoticeResult(Contract):
    """What a NoticeWorkflow did (its result in the Web UI)."""

    event_id: str
    callback: CallbackDelivery | None = None
