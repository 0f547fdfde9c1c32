"""The probe message: a real-looking email with a unique token, and its submission.

Each probe carries its token in the ``X-Mailmon-Probe`` header and, shortened, as a
subject marker (``[ab12cd34]``) so a person reading the seed mailbox can tell probes
apart; matching never uses the subject.  Its Message-ID is its own, at the sender's
domain.  Each seed gets its own SMTP transaction (:func:`submit`), so one refused
recipient says nothing of the others.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from monitor.collectors.seeds.headers import PROBE_HEADER
from monitor.collectors.seeds.settings import SmtpConfig, TemplateConfig

__all__ = ["Probe", "SendResult", "build_probe", "new_token", "submit"]


def new_token() -> str:
    """A probe's token: 24 random hex digits."""
    return secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe of a run to one seed, as built (not yet sent)."""

    run_id: str
    seed: str
    provider: str
    token: str
    message_id: str  # without angle brackets, as the store keeps Message-IDs
    message: EmailMessage


def build_probe(
    *,
    run_id: str,
    seed: str,
    provider: str,
    template: TemplateConfig,
    sender: str,
    sender_name: str | None,
    at: datetime,
    list_unsubscribe: Sequence[str] = (),
    token: str | None = None,
) -> Probe:
    """The probe message for one seed (``at``: its Date, the time it is built)."""
    token = token or new_token()
    domain = sender.rpartition("@")[2]
    message_id = f"probe.{token}@{domain}"
    msg = EmailMessage()
    msg["From"] = formataddr((sender_name, sender)) if sender_name else sender
    msg["To"] = seed
    msg["Subject"] = f"{template.subject} [{token[:8]}]"
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = f"<{message_id}>"
    msg[PROBE_HEADER] = token
    if list_unsubscribe:
        msg["List-Unsubscribe"] = ", ".join(f"<{target}>" for target in list_unsubscribe)
        if any(t.lower().startswith("https:") for t in list_unsubscribe):
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    msg.set_content(template.text)
    if template.html:
        msg.add_alternative(template.html, subtype="html")
    return Probe(run_id, seed, provider, token, message_id, msg)


@dataclass(frozen=True, slots=True)
class SendResult:
    """How the submission of one probe went (``error`` is None when it was accepted)."""

    probe: Probe
    sent_at: datetime
    error: str | None = None
    reply_code: int | None = None


def _context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


async def _send_one(
    smtp: SmtpConfig, password: str | None, sender: str, probe: Probe, clock: Callable[[], datetime]
) -> SendResult:
    import aiosmtplib

    sent_at = clock()
    try:
        await aiosmtplib.send(
            probe.message,
            sender=sender,
            recipients=[probe.seed],
            hostname=smtp.host,
            port=smtp.submission_port,
            use_tls=smtp.security == "tls",
            start_tls=smtp.security == "starttls",
            username=smtp.username,
            password=password,
            timeout=smtp.timeout_seconds,
            tls_context=_context(smtp.ca_file) if smtp.security != "none" else None,
        )
    except aiosmtplib.SMTPResponseException as exc:
        return SendResult(probe, sent_at, f"{exc.code} {' '.join(exc.message.split())}"[:300],
                          exc.code)  # fmt: skip
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0] if exc.recipients else None
        code = first.code if first is not None else None
        text = f"{code} {' '.join(first.message.split())}" if first is not None else str(exc)
        return SendResult(probe, sent_at, text[:300], code)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return SendResult(probe, sent_at, f"{type(exc).__name__}: {exc}"[:300])
    return SendResult(probe, sent_at)


def _now() -> datetime:
    return datetime.now(UTC)


def submit(
    smtp: SmtpConfig, sender: str, probes: Sequence[Probe], *, clock: Callable[[], datetime] = _now
) -> list[SendResult]:
    """Submit each probe in its own SMTP transaction, one after the other."""
    password = smtp.password()

    async def send_all() -> list[SendResult]:
        return [await _send_one(smtp, password, sender, p, clock) for p in probes]

    return asyncio.run(send_all())
