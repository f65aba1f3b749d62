"""Customer events: what happened to a payment, its model and its prompts, told to the customer.

One event is written once to the `customer_events` outbox (Postgres) and from there reaches every channel:
the signed callback of an API client, an e-mail for the few that matter, and the live `events` stream of the
model. An event's id is stable (derived from what happened, never random), so every retry of its delivery
carries the same `webhook-id` and a receiver deduplicates by it.

Events carry ids, stages and counts, never personal data: the e-mail address, callback URL and secret stay
in Postgres and are read by the activities that deliver.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from ecomdream.contracts.payment import Contract


class EventType(StrEnum):
    """The event types a customer (callback receiver, mailbox or browser) can be told about."""

    PAYMENT_PAID = "payment.paid"
    VERSION_VALIDATING = "version.validating"
    VERSION_TRAINING = "version.training"
    VERSION_READY = "version.ready"
    VERSION_FAILED = "version.failed"
    VERSION_CANCELLED = "version.cancelled"
    VERSION_DELETED = "version.deleted"
    PROMPT_SUCCEEDED = "prompt.succeeded"
    PROMPT_FAILED = "prompt.failed"
    ADDON_APPLIED = "addon.applied"


# After these a version changes no more: a live stream ends with them.
FINAL_TYPES = frozenset(
    {
        EventType.VERSION_READY,
        EventType.VERSION_FAILED,
        EventType.VERSION_CANCELLED,
        EventType.VERSION_DELETED,
    }
)
# The customer gets an e-mail for these (when Stripe collected an address).
MAILED_TYPES = frozenset({EventType.VERSION_READY, EventType.VERSION_FAILED, EventType.ADDON_APPLIED})


def event_id(payment_id: uuid.UUID, type_: EventType, occurrence: str = "") -> str:
    """The stable id of one occurrence of an event (`msg_` + 32 hex), the same on every retry.

    `occurrence` tells repeated events of one type apart (the prompt id, the add-on payment id, the attempt
    of a retried training); a one-off event of a payment leaves it empty.
    """
    digest = hashlib.sha256(f"{payment_id}:{type_.value}:{occurrence}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


class CustomerEvent(Contract):
    """One event: the `{type, timestamp, data}` a callback receiver gets, plus where it belongs."""

    event_id: str
    type: EventType
    # The journey's (initial) payment: who is told.
    payment_id: uuid.UUID
    version_id: uuid.UUID | None = None
    occurred_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON a callback receiver gets (and the live stream's `data`)."""
        return {"type": self.type.value, "timestamp": self.occurred_at.isoformat(), "data": self.data}
