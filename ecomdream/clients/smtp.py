"""The SMTP server customer e-mail goes through (aiosmtplib): one connection per message."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib

from ecomdream.config import Settings


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to hand over messages; `sender` is the From of every message."""

    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    starttls: bool = True
    timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpServer | None:
        """The configured server, or None when e-mail is off (`ECOMDREAM_SMTP_HOST` unset)."""
        if not settings.smtp_host:
            return None
        assert settings.smtp_from, "Settings refuses an SMTP host without a sender"
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            tls=settings.smtp_tls,
            starttls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        )

    async def send(self, message: EmailMessage) -> None:
        """Hand message over (to its To); raises aiosmtplib's errors, see `refused_for_good`."""
        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.tls,
            # Required when asked for (a server without it fails the attempt); never tried otherwise.
            start_tls=self.starttls and not self.tls,
            timeout=self.timeout,
        )


def refused_for_good(error: BaseException) -> bool:
    """Whether the server refused the recipient permanently (5xx to RCPT TO): no retry can deliver it.

    Everything else (no connection, a timeout, 4xx, a refused login or sender) may pass with time or with a
    corrected setting, so it is retried.
    """
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        return bool(error.recipients) and all(refused_for_good(each) for each in error.recipients)
    return isinstance(error, aiosmtplib.SMTPRecipientRefused) and 500 <= error.code < 600
