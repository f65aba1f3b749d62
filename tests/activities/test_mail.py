"""Customer e-mail through the stack's mail catcher and Postgres: one message per event whatever retries,
nothing for a payment without an address, a bounce is final, an unreachable server is retried."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import aiosmtplib
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.mail import MailActivities
from ecomdream.clients.smtp import SmtpServer
from ecomdream.contracts.events import CustomerEvent, EventType, event_id
from ecomdream.db.session import SessionMaker, create_sessionmaker, transaction
from ecomdream.devstack.processes import free_port
from ecomdream.devstack.stack import MAIL_FROM, Stack
from ecomdream.mail import message_id
from ecomdream.models import CustomerEventRow, Payment, PaymentStatus
from ecomdream.repositories.events import EventRepository
from ecomdream.repositories.payments import PaymentRepository
from tests.fixtures.mail import Mailbox


def address() -> str:
    """An address no other test mails."""
    return f"customer-{uuid.uuid4().hex[:12]}@example.com"


def activities(db: AsyncEngine, stack: Stack, port: int | None = None) -> MailActivities:
    """The worker's mail activities, sending to the stack's catcher (or to another port)."""
    smtp = SmtpServer("127.0.0.1", port or stack.ports.smtp, MAIL_FROM, starttls=False, timeout=5)
    return MailActivities(create_sessionmaker(db), smtp, stack.api_url)


async def recorded(
    sessions: SessionMaker, email: str | None, type_: EventType = EventType.VERSION_READY
) -> CustomerEvent:
    """A paid payment with email, and one event of it written to the outbox as the event pipeline does."""
    payment_id = uuid.uuid4()
    async with transaction(sessions) as session:
        await PaymentRepository(session).add(
            Payment(
                id=payment_id,
                plan_id=1,
                status=PaymentStatus.PAID.value,
                amount_total=1300,
                currency="usd",
                email=email,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    event = CustomerEvent(
        event_id=event_id(payment_id, type_),
        type=type_,
        payment_id=payment_id,
        version_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        data={"images_quota": 100, "images_generated": 0},
    )
    async with transaction(sessions) as session:
        await EventRepository(session).append(event, callback_state=None, email_state="pending")
    return event


async def row_of(sessions: SessionMaker, event: CustomerEvent) -> CustomerEventRow:
    """The event's outbox row as it is now."""
    async with transaction(sessions) as session:
        row = await EventRepository(session).get(event.event_id)
    assert row is not None
    return row


async def test_a_ready_model_is_mailed_once_in_text_and_html(
    db: AsyncEngine, stack: Stack, mailbox: Mailbox
) -> None:
    mail = activities(db, stack)
    to = address()
    event = await recorded(mail.sessionmaker, to)
    await ActivityEnvironment().run(mail.send_event_email, event)
    # The catcher keeps a message before it answers the server's 250: it is there once the activity is done.
    [message] = mailbox.messages(to)
    assert (message["To"], message["Message-ID"]) == (to, message_id(event.event_id, MAIL_FROM))
    text = message.get_body(("plain",))
    page = message.get_body(("html",))
    assert text is not None
    assert page is not None
    create = f"{stack.api_url}/api/v1/prompts/create/{event.version_id}"
    assert create in text.get_content()
    assert "Images left: 100" in text.get_content()
    html = page.get_content()
    assert create in html
    assert "<img" not in html.lower()
    assert "src=" not in html.lower()
    row = await row_of(mail.sessionmaker, event)
    assert row.email_state == "sent"
    assert row.email_sent_at is not None

    await ActivityEnvironment().run(mail.send_event_email, event)
    assert len(mailbox.messages(to)) == 1, "a retried activity sends nothing more"
    assert mailbox.folder == stack.data_dir / "mail"


async def test_a_payment_without_an_address_is_recorded_as_such(db: AsyncEngine, stack: Stack) -> None:
    mail = activities(db, stack)
    event = await recorded(mail.sessionmaker, None)
    await ActivityEnvironment().run(mail.send_event_email, event)
    assert (await row_of(mail.sessionmaker, event)).email_state == "no_address"


async def test_an_address_the_server_refuses_for_good_is_given_up(db: AsyncEngine, stack: Stack) -> None:
    mail = activities(db, stack)
    event = await recorded(mail.sessionmaker, "nobody@example.invalid", EventType.VERSION_FAILED)
    await ActivityEnvironment().run(mail.send_event_email, event)  # no error: retrying cannot help
    assert (await row_of(mail.sessionmaker, event)).email_state == "gave_up"


async def test_an_unreachable_server_fails_the_attempt_for_a_retry(
    db: AsyncEngine, stack: Stack, mailbox: Mailbox
) -> None:
    down = activities(db, stack, port=free_port())
    to = address()
    event = await recorded(down.sessionmaker, to, EventType.ADDON_APPLIED)
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await ActivityEnvironment().run(down.send_event_email, event)
    assert (await row_of(down.sessionmaker, event)).email_state == "failing"

    await ActivityEnvironment().run(activities(db, stack).send_event_email, event)
    [message] = await mailbox.wait_for(to, within=5)
    assert message["Subject"] == "More images for your model"
    assert (await row_of(down.sessionmaker, event)).email_state == "sent"


async def test_an_event_missing_from_the_outbox_fails_for_good(db: AsyncEngine, stack: Stack) -> None:
    mail = activities(db, stack)
    payment_id = uuid.uuid4()
    event = CustomerEvent(
        event_id=event_id(payment_id, EventType.VERSION_READY),
        type=EventType.VERSION_READY,
        payment_id=payment_id,
        occurred_at=datetime.now(UTC),
    )
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(mail.send_event_email, event)
    assert failed.value.non_retryable
    assert failed.value.type == "EventNotRecorded"


async def test_with_email_off_events_stay_pending(db: AsyncEngine, stack: Stack) -> None:
    sessions = create_sessionmaker(db)
    event = await recorded(sessions, address())
    await ActivityEnvironment().run(MailActivities(sessions, None, stack.api_url).send_event_email, event)
    assert (await row_of(sessions, event)).email_state == "pending"
