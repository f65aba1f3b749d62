"""Customer e-mail: the message for each mailed event (`MAILED_TYPES`), plain text with an HTML alternative.

A message is built from the event alone, so every retry of its delivery builds the same bytes: the same
`Message-ID` (from the event id) and the same `Date` (when the event happened). The HTML part is the plain
text's twin, escaped in one place (`render_html`); it loads nothing remote (no images, fonts or pixels) and
its links go straight to our API, never through a redirect that counts clicks.

Keys read from `CustomerEvent.data`; each is optional, and a missing or malformed one leaves its line out
or gets a neutral sentence instead:

- `version_id`: the model (`CustomerEvent.version_id` when absent); only a UUID is put into a link.
- `images_left`: images the model can still generate; else `images_quota` minus `images_generated`; else
  `images_quota` (nothing is generated before the model is ready).
- `images_added` (`addon.applied`): the images the add-on bought.
- `refund` (`version.failed`): `"refunded"`, `"refund_refused"` (our team settles it by hand) or
  `"not_charged"` (nothing was paid); anything else gets a sentence that promises no more than we know.
- `error` (`version.failed`): what went wrong, cut to `MAX_ERROR_CHARS`.
"""

from __future__ import annotations

import html
import textwrap
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

from ecomdream.contracts.events import CustomerEvent, EventType

MAX_ERROR_CHARS = 300
WIDTH = 72
EXAMPLE_PROMPT = '{"prompt": "on a beach at sunset", "amount_images": 4}'


@dataclass(frozen=True)
class Paragraph:
    """Running text."""

    text: str


@dataclass(frozen=True)
class Facts:
    """Label: value lines."""

    rows: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Code:
    """A command to copy, kept as it is."""

    text: str


@dataclass(frozen=True)
class Link:
    """A link to one of our pages."""

    label: str
    url: str


Block = Paragraph | Facts | Code | Link


@dataclass(frozen=True)
class Letter:
    """What a message says, before it is rendered as text and as HTML."""

    subject: str
    blocks: tuple[Block, ...]


def message_id(event_id: str, sender: str) -> str:
    """The event's `Message-ID`: the same on every attempt, so a duplicate is recognisable as one."""
    _, address = parseaddr(sender)
    domain = address.rpartition("@")[2] or "ecomdream.invalid"
    return f"<{event_id}@{domain}>"


def compose(event: CustomerEvent, *, to: str, sender: str, base_url: str) -> EmailMessage:
    """The message telling the customer at `to` about event; ValueError for a type that is not mailed."""
    write = LETTERS.get(event.type)
    if write is None:
        raise ValueError(f"customers are not mailed about {event.type.value}")
    letter = write(event, base_url.rstrip("/"))
    message = EmailMessage()
    message["Subject"] = letter.subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(event.occurred_at)
    message["Message-ID"] = message_id(event.event_id, sender)
    # RFC 3834: a machine wrote this; out-of-office replies and the like are not sent back.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(render_text(letter))
    message.add_alternative(render_html(letter), subtype="html")
    # A fixed boundary: every attempt sends the same bytes.
    message.set_boundary(f"ecomdream-{event.event_id}")
    return message


def render_text(letter: Letter) -> str:
    """The plain-text part."""
    parts = []
    for block in letter.blocks:
        if isinstance(block, Paragraph):
            # Words stay whole: ids and URLs are copied from here.
            parts.append(textwrap.fill(block.text, WIDTH, break_long_words=False, break_on_hyphens=False))
        elif isinstance(block, Facts):
            parts.append("\n".join(f"{label}: {value}" for label, value in block.rows))
        elif isinstance(block, Code):
            parts.append(textwrap.indent(block.text, "    "))
        else:
            parts.append(f"{block.label}: {block.url}")
    return "\n\n".join(parts) + "\n"


def render_html(letter: Letter) -> str:
    """The HTML part: every text escaped, no remote resource."""
    e = html.escape
    parts = []
    for block in letter.blocks:
        if isinstance(block, Paragraph):
            parts.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, Facts):
            rows = "".join(f"<tr><th>{e(label)}</th><td>{e(value)}</td></tr>" for label, value in block.rows)
            parts.append(f'<table role="presentation">{rows}</table>')
        elif isinstance(block, Code):
            parts.append(f"<pre>{e(block.text)}</pre>")
        else:
            parts.append(f'<p><a href="{e(block.url)}">{e(block.label)}</a></p>')
    body = "\n".join(parts)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(letter.subject)}</title>"
        "<style>body{font-family:sans-serif;line-height:1.5;max-width:40em}"
        "th{text-align:left;padding-right:1em}pre{background:#f4f4f4;padding:.75em;overflow-x:auto}</style>"
        f"</head><body>\n{body}\n</body></html>\n"
    )


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def images_left(data: Mapping[str, Any]) -> int | None:
    """The images the model can still generate, from whichever keys the event carries."""
    left, quota, generated = (
        _int(data, "images_left"),
        _int(data, "images_quota"),
        _int(data, "images_generated"),
    )
    if left is not None:
        return left
    if quota is not None:
        return max(quota - (generated or 0), 0)
    return None


def version_of(event: CustomerEvent) -> str | None:
    """The model's id as text, only when it is a UUID (it goes into links)."""
    raw = event.data.get("version_id", event.version_id)
    try:
        return str(uuid.UUID(str(raw))) if raw is not None else None
    except ValueError:
        return None


def _quota_rows(data: Mapping[str, Any], version: str | None) -> tuple[tuple[str, str], ...]:
    rows = [("Model (version id)", version)] if version else []
    left = images_left(data)
    if left is not None:
        rows.append(("Images left", str(left)))
    return tuple(rows)


def _ready(event: CustomerEvent, base: str) -> Letter:
    version = version_of(event)
    blocks: list[Block] = [
        Paragraph("Hello,"),
        Paragraph("Your model has finished training and is ready to generate images."),
    ]
    rows = _quota_rows(event.data, version)
    if rows:
        blocks.append(Facts(rows))
    if version:
        create = f"{base}/api/v1/prompts/create/{version}"
        blocks += [
            Paragraph(
                "To generate images, send a prompt to the API with the access token you received when you "
                "paid (each prompt makes 1 or 4 images):"
            ),
            Code(
                f"curl -X POST {create} \\\n"
                '  -H "Authorization: Bearer $ACCESS_TOKEN" \\\n'
                '  -H "content-type: application/json" \\\n'
                f"  -d '{EXAMPLE_PROMPT}'"
            ),
            Facts((("Status and images left", f"GET {base}/api/v1/versions/info/{version}"),)),
        ]
    else:
        blocks.append(Paragraph("Send prompts to the API with the access token you received when you paid."))
    blocks += [Link("API documentation", f"{base}/docs"), Paragraph("— ecomdream")]
    return Letter("Your model is ready", tuple(blocks))


REFUND_TEXT = {
    "refunded": (
        "Your payment has been refunded in full. Depending on your bank, it takes a few days to show on "
        "your statement."
    ),
    "refund_refused": (
        "Our payment provider could not refund your payment automatically, so our team is settling your "
        "refund by hand and will be in touch."
    ),
    "not_charged": "Nothing was charged for this model, so there is nothing to refund.",
}
REFUND_UNKNOWN = "If you were charged for this model, our team will make sure you get your money back."


def _failed(event: CustomerEvent, _base: str) -> Letter:
    version = version_of(event)
    blocks: list[Block] = [
        Paragraph("Hello,"),
        Paragraph("We are sorry: your model could not be trained."),
    ]
    if version:
        blocks.append(Facts((("Model (version id)", version),)))
    error = event.data.get("error")
    if isinstance(error, str) and error.strip():
        reason = error.strip()
        if len(reason) > MAX_ERROR_CHARS:
            reason = reason[: MAX_ERROR_CHARS - 1] + "…"
        blocks.append(Paragraph(f"What went wrong: {reason}"))
    refund = event.data.get("refund")
    blocks.append(
        Paragraph(REFUND_TEXT.get(refund, REFUND_UNKNOWN) if isinstance(refund, str) else REFUND_UNKNOWN)
    )
    blocks += [Paragraph("You are welcome to try again with a new payment."), Paragraph("— ecomdream")]
    return Letter("Your model could not be trained", tuple(blocks))


def _addon(event: CustomerEvent, base: str) -> Letter:
    version = version_of(event)
    added = _int(event.data, "images_added")
    news = (
        f"{added} more images were added to your model." if added else "More images were added to your model."
    )
    blocks: list[Block] = [Paragraph("Hello,"), Paragraph(f"Thank you for your purchase. {news}")]
    rows = _quota_rows(event.data, version)
    if rows:
        blocks.append(Facts(rows))
    if version:
        blocks.append(Facts((("Generate images", f"POST {base}/api/v1/prompts/create/{version}"),)))
    blocks += [Link("API documentation", f"{base}/docs"), Paragraph("— ecomdream")]
    return Letter("More images for your model", tuple(blocks))


LETTERS: dict[EventType, Callable[[CustomerEvent, str], Letter]] = {
    EventType.VERSION_READY: _ready,
    EventType.VERSION_FAILED: _failed,
    EventType.ADDON_APPLIED: _addon,
}
