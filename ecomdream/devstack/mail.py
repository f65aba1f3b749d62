"""The mail catcher of the embedded stack: an SMTP server on 127.0.0.1 that keeps every message it is given
as a `.eml` file (open it with any mail program) and delivers nothing.

It runs on a thread of the launcher (aiosmtpd's `Controller`), so it lives and dies with the launcher and
needs no pid file. Like a real server it refuses recipients at `.invalid` domains (RFC 2606: they cannot
exist) for good, with 550, which is how tests and developers see a bounce. Any login is accepted, so an SMTP
account configured in `.env` cannot stop the mail of `make dev`.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

log = logging.getLogger("ecomdream.devstack.mail")

REFUSED_DOMAIN_SUFFIX = ".invalid"


def _any_login(*_: Any) -> AuthResult:
    """aiosmtpd authenticator (server, session, envelope, mechanism, data): every login is good."""
    return AuthResult(success=True)


class SaveToFolder:
    """aiosmtpd handler: each message becomes `<UTC time>-<random>.eml` in folder, written whole or not at all."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        """Take every recipient but those at `.invalid` domains."""
        if address.rpartition("@")[2].lower().rstrip(".").endswith(REFUSED_DOMAIN_SUFFIX):
            return "550 5.1.2 No such domain (the mail catcher refuses .invalid addresses)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message as received, under the delivery headers a mailbox would add."""
        content = envelope.original_content or b""
        headers = f"Return-Path: <{envelope.mail_from or ''}>\r\n"
        headers += "".join(f"Delivered-To: {rcpt}\r\n" for rcpt in envelope.rcpt_tos)
        path = self.save(headers.encode() + content)
        log.info("mail for %s kept in %s", ", ".join(envelope.rcpt_tos), path)
        return "250 OK: kept by the mail catcher"

    def save(self, message: bytes) -> Path:
        """Write message under a new name; readers never see half a file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.folder / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        partial = path.with_name(f".{path.name}.part")
        partial.write_bytes(message)
        os.replace(partial, path)
        return path


class MailCatcher:
    """The catcher on 127.0.0.1:port, keeping messages in folder."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self._controller: Controller | None = None

    def start(self) -> None:
        """Listen; returns once the server answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # aiosmtpd logs every command at INFO: the launcher's terminal gets one line per message instead.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        controller = Controller(
            SaveToFolder(self.folder),
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="mail-catcher.localhost",
            authenticator=_any_login,
            auth_require_tls=False,
            ready_timeout=10,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening; safe to call twice."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
