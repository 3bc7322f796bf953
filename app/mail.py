"""Sending mail: over SMTP when SMTP_URL is set, else as .eml files in DATA_DIR/outbox.

SMTP_URL forms:

- `smtp://user:password@host:587`: plain SMTP upgraded with STARTTLS. Credentials are sent
  only over TLS, so a server without STARTTLS is an error when the URL carries a user.
  Without a user, STARTTLS is used when the server offers it.
- `smtps://user:password@host:465`: TLS from the first byte.

The standard library's smtplib blocks, so every send runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from app.errors import MailError

logger = logging.getLogger(__name__)

SMTP_TIMEOUT_S = 15.0
DEFAULT_PORTS = {"smtp": 587, "smtps": 465}


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Deliver `message`, or raise MailError."""
        ...


def parse_smtp_url(url: str) -> tuple[str, str, int, str | None, str | None]:
    """Split an SMTP_URL into scheme, host, port, user and password; ValueError when invalid."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(
            "VISIONCRAFT_SMTP_URL must look like smtp://user:password@host:587 (STARTTLS) or "
            "smtps://user:password@host:465 (TLS)"
        )
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.scheme, parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme], user, password


class SmtpMailer:
    """Sends each message over a new SMTP connection."""

    def __init__(self, url: str, *, timeout_s: float = SMTP_TIMEOUT_S) -> None:
        self.scheme, self.host, self.port, self._user, self._password = parse_smtp_url(url)
        self.timeout_s = timeout_s

    async def send(self, message: EmailMessage) -> None:
        try:
            await asyncio.to_thread(self._send_blocking, message)
        except (OSError, smtplib.SMTPException) as error:
            # The error names the server and the failure, never the credentials.
            raise MailError(
                f"The mail server {self.host}:{self.port} did not accept the message "
                f"({type(error).__name__}: {error}). Check VISIONCRAFT_SMTP_URL.",
            ) from None

    def _send_blocking(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if self.scheme == "smtps":
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        with client:
            client.ehlo()
            if self.scheme == "smtp":
                self._start_tls(client, context)
            if self._user is not None:
                client.login(self._user, self._password or "")
            client.send_message(message)

    def _start_tls(self, client: smtplib.SMTP, context: ssl.SSLContext) -> None:
        if client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        elif self._user is not None:
            raise smtplib.SMTPNotSupportedError(
                "the server does not offer STARTTLS, so the credentials would travel in clear; "
                "use smtps:// or a server with STARTTLS"
            )


class OutboxMailer:
    """Writes each message as an .eml file into a folder, for development without a server."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, message: EmailMessage) -> None:
        try:
            path = await asyncio.to_thread(self._write, message)
        except OSError as error:
            raise MailError(
                f"The mail could not be written to {self.folder} ({error}). Check DATA_DIR."
            ) from None
        logger.info("mail to %s written to %s", message["To"], path)

    def _write(self, message: EmailMessage) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{time.time_ns()}-{make_msgid().strip('<>').split('@')[0]}.eml"
        path.write_bytes(bytes(readable_copy(message)))
        return path


def readable_copy(message: EmailMessage) -> EmailMessage:
    """Return the message with its text as plain UTF-8 lines (8bit, unwrapped).

    A developer opens outbox files in an editor and copies links out of them, which quoted-
    printable encoding breaks with `=3D` and soft line breaks.
    """
    body = message.get_body(preferencelist=("plain",))
    if body is None or message.is_multipart():
        return message
    copy = EmailMessage()
    for name, value in message.items():
        if name.lower() not in {"content-type", "content-transfer-encoding", "mime-version"}:
            copy[name] = value
    copy.set_content(body.get_content(), cte="8bit")
    return copy
