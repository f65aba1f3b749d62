"""Customer e-mail: one message per mailed event, to the address Stripe collected at checkout.

Once per event: the event's row in `customer_events` says whether its message was sent, and a run that finds
it sent does nothing. One window is left: if the worker dies after the SMTP server accepted the message but
before `sent` is recorded, the retry sends it again. That copy is the same bytes, with the same `Message-ID`
(from the event id) and `Date`, so mailbox providers that deduplicate by `Message-ID` (Gmail among them) keep
one, and other clients show the copy as the same message. Closing the window would take a transaction held
open across the SMTP conversation, which is worse for every message than a rare duplicate is for one.

Temporal runs one attempt at a time; give the activity a start-to-close timeout well above
`ECOMDREAM_SMTP_TIMEOUT_SECONDS`, so an attempt is never retried while it still talks to the server.
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiosmtplib
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.payments import inconsistent
from ecomdream.clients.smtp import SmtpServer, refused_for_good
from ecomdream.contracts.events import MAILED_TYPES, CustomerEvent
from ecomdream.db.session import SessionMaker, transaction
from ecomdream.mail import compose
from ecomdream.models import EmailState
from ecomdream.repositories.events import EventRepository
from ecomdream.repositories.payments import PaymentRepository

# States after which nothing is sent any more.
SETTLED = frozenset({EmailState.SENT.value, EmailState.GAVE_UP.value, EmailState.NO_ADDRESS.value})


class MailActivities:
    """Activities that need the database and the SMTP server (None: e-mail is off)."""

    def __init__(self, sessionmaker: SessionMaker, smtp: SmtpServer | None, base_url: str) -> None:
        self.sessionmaker = sessionmaker
        self.smtp = smtp
        self.base_url = base_url

    @activity.defn
    async def send_event_email(self, event: CustomerEvent) -> None:
        """Mail the customer about event once; SMTP trouble raises (retried), a refused address gives up."""
        if event.type not in MAILED_TYPES:
            raise ApplicationError(
                f"customers are not mailed about {event.type.value}", type="NotMailed", non_retryable=True
            )
        if self.smtp is None:
            activity.logger.info(
                "e-mail is off (ECOMDREAM_SMTP_HOST is unset): %s not mailed", event.event_id
            )
            return
        to = await self._recipient(event)
        if to is None:
            return
        message = compose(event, to=to, sender=self.smtp.sender, base_url=self.base_url)
        try:
            await self.smtp.send(message)
        except (aiosmtplib.SMTPException, OSError) as error:
            if not refused_for_good(error):
                await self._record(event, EmailState.FAILING)
                raise
            await self._record(event, EmailState.GAVE_UP)
            activity.logger.warning(
                "the mail server refused the address for good, %s not mailed: %s", event.event_id, error
            )
            return
        await self._record(event, EmailState.SENT, sent_at=datetime.now(UTC))

    @activity.defn
    async def give_up_email(self, event: CustomerEvent) -> None:
        """Record that no attempt could mail the event in the time it was given (a message sent stays sent)."""
        await self._record(event, EmailState.GAVE_UP)

    async def _recipient(self, event: CustomerEvent) -> str | None:
        """The address to mail, or None when there is nothing (more) to send."""
        async with transaction(self.sessionmaker) as session:
            events = EventRepository(session)
            row = await events.get(event.event_id)
            if row is None:
                raise ApplicationError(
                    f"event {event.event_id} is not in customer_events: the event pipeline writes it "
                    "before it is mailed",
                    type="EventNotRecorded",
                    non_retryable=True,
                )
            if row.email_state in SETTLED:
                return None
            payment = await PaymentRepository(session).get(event.payment_id)
            if payment is None:
                raise inconsistent(f"unknown payment {event.payment_id} for event {event.event_id}")
            if not payment.email:
                await events.set_email_state(event.event_id, EmailState.NO_ADDRESS)
                activity.logger.info(
                    "no e-mail address for payment %s: %s not mailed", event.payment_id, event.event_id
                )
                return None
            return payment.email

    async def _record(self, event: CustomerEvent, state: EmailState, sent_at: datetime | None = None) -> None:
        async with transaction(self.sessionmaker) as session:
            await EventRepository(session).set_email_state(event.event_id, state, sent_at)
