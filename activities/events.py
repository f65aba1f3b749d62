"""The customer-event outbox: each event written once, with the channels it must still reach."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from ecomdream.contracts.events import MAILED_TYPES, CustomerEvent
from ecomdream.contracts.notices import CallbackState, NoticeChannels
from ecomdream.db.session import SessionMaker, transaction
from ecomdream.models import EmailState
from ecomdream.repositories.callbacks import CallbackRepository
from ecomdream.repositories.events import EventRepository
from ecomdream.repositories.payments import PaymentRepository

# States in which a channel still has work (a rerun of the notice picks up where the first stopped).
OPEN_STATES = frozenset({CallbackState.PENDING.value, CallbackState.FAILING.value})
OPEN_EMAIL = frozenset({EmailState.PENDING.value, EmailState.FAILING.value})


class EventActivities:
    """Activities on the outbox that need only the database."""

    def __init__(self, sessionmaker: SessionMaker) -> None:
        self.sessionmaker = sessionmaker

    @activity.defn
    async def record_event(self, event: CustomerEvent) -> NoticeChannels:
        """Write the event once (callback pending when the payment has a URL, e-mail when the type is mailed)."""
        async with transaction(self.sessionmaker) as session:
            if await PaymentRepository(session).get(event.payment_id) is None:
                # Nothing to tell anyone about (the ledger row is written before any journey starts).
                raise ApplicationError(
                    f"event {event.event_id} is of an unknown payment {event.payment_id}",
                    type="UnknownPayment",
                    non_retryable=True,
                )
            callback = await CallbackRepository(session).of_payment(event.payment_id)
            wants_callback = callback is not None and callback.url is not None
            row = await EventRepository(session).append(
                event,
                callback_state=CallbackState.PENDING.value if wants_callback else None,
                email_state=EmailState.PENDING.value if event.type in MAILED_TYPES else None,
            )
            return NoticeChannels(
                callback=row.callback_state in OPEN_STATES, email=row.email_state in OPEN_EMAIL
            )
