"""The report as one MIME message, and sending it through the ``[report]`` SMTP relay.

The message is ``multipart/mixed``: a ``multipart/alternative`` (plain text, then
``multipart/related`` HTML with its charts as inline PNGs named by Content-ID), then the
recipients to suppress as a CSV attachment.  Gmail and Outlook both show that shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from monitor.config import ReportConfig
from monitor.errors import ConfigError, MailmonError

__all__ = ["ReportSendError", "build_message", "send"]

log = logging.getLogger(__name__)


class ReportSendError(MailmonError):
    """The relay refused the report, or could not be reached."""


def build_message(
    *, subject: str, sender: str, to: Sequence[str], text: str, html: str,
    images: Mapping[str, bytes], attachment: tuple[str, str] | None,
) -> EmailMessage:  # fmt: skip
    """The message; ``images`` by Content-ID (the HTML's ``cid:NAME``), ``attachment``
    ``(file name, CSV text)``."""
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    html_part = msg.get_body(("html",))
    assert isinstance(html_part, EmailMessage), "add_alternative made it"
    for name, png in images.items():
        html_part.add_related(png, maintype="image", subtype="png", cid=f"<{name}>",
                              filename=f"{name}.png")  # fmt: skip
    if attachment is not None:
        filename, csv_text = attachment
        msg.add_attachment(csv_text.encode(), maintype="text", subtype="csv", filename=filename)
    return msg


def check(settings: ReportConfig) -> None:
    """ConfigError unless ``[report]`` names a relay, a sender and recipients."""
    missing = [k for k in ("relay_host", "from_address") if not getattr(settings, k)]
    if not settings.to:
        missing.append("to")
    if missing:
        raise ConfigError(f"sending the report needs [report] {', '.join(missing)}")


def send(message: EmailMessage, settings: ReportConfig) -> None:
    """Mail ``message`` through the relay of ``settings``; ReportSendError when refused."""
    check(settings)
    password = settings.password()  # read now, never logged
    try:
        asyncio.run(aiosmtplib.send(
            message, sender=settings.from_address, recipients=list(settings.to),
            hostname=settings.relay_host, port=settings.relay_port,
            username=settings.username, password=password if settings.username else None,
            use_tls=settings.tls, start_tls=settings.starttls and not settings.tls,
            timeout=settings.timeout_seconds,
        ))  # fmt: skip
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise ReportSendError(f"the relay {settings.relay_host}:{settings.relay_port} did not "
                              f"take the report: {exc}") from exc  # fmt: skip
    log.info("weekly report mailed to %d recipients through %s:%d", len(settings.to),
             settings.relay_host, settings.relay_port)  # fmt: skip
