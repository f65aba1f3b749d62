"""What customers read: the refund state in words, text from events escaped in HTML, missing keys left out,
and SMTP settings that cannot work refused at start."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from ecomdream.config import Settings
from ecomdream.contracts.events import CustomerEvent, EventType, event_id
from ecomdream.mail import compose

SENDER = "ecomdream <models@example.com>"


def mail(type_: EventType, data: dict[str, Any]) -> tuple[str, str]:
    """The plain text (lines joined: it is wrapped) and the HTML of the event's message."""
    payment_id = uuid.uuid4()
    event = CustomerEvent(
        event_id=event_id(payment_id, type_),
        type=type_,
        payment_id=payment_id,
        version_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        data=data,
    )
    message = compose(event, to="a@example.com", sender=SENDER, base_url="https://api.example.com/")
    text, page = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert page is not None
    return " ".join(text.get_content().split()), page.get_content()


def test_a_failed_training_says_how_the_refund_stands_and_escapes_the_error() -> None:
    text, page = mail(
        EventType.VERSION_FAILED, {"refund": "refund_refused", "error": "<script>x</script> & co"}
    )
    assert "our team is settling your refund" in text
    assert "What went wrong: <script>x</script> & co" in text
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in page
    assert "<script>" not in page
    refunded, _ = mail(EventType.VERSION_FAILED, {"refund": "refunded"})
    assert "refunded in full" in refunded


def test_missing_or_odd_keys_leave_their_lines_out() -> None:
    text, page = mail(EventType.ADDON_APPLIED, {"images_added": "many", "images_quota": None, "refund": 3})
    assert "More images were added to your model." in text
    assert "Images left" not in text
    assert "Images left" not in page
    text, _ = mail(EventType.ADDON_APPLIED, {"images_added": 50, "images_quota": 150, "images_generated": 20})
    assert "50 more images" in text
    assert "Images left: 130" in text


def test_events_customers_are_not_mailed_about_have_no_message() -> None:
    with pytest.raises(ValueError, match="not mailed"):
        mail(EventType.PROMPT_SUCCEEDED, {})


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"smtp_host": "smtp.example.com"}, "ECOMDREAM_SMTP_FROM"),
        ({"smtp_host": "smtp.example.com", "smtp_from": SENDER, "smtp_tls": True}, "not both"),
        (
            {
                "smtp_host": "smtp.example.com",
                "smtp_from": SENDER,
                "smtp_starttls": False,
                "smtp_password": "pw",
            },
            "in clear",
        ),
    ],
)
def test_smtp_settings_that_cannot_work_are_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Settings(**settings)


def test_without_an_smtp_host_mail_is_off_and_nothing_else_is_needed() -> None:
    assert Settings(smtp_host=None).smtp_host is None
