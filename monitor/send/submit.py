"""Submit a composed message through the relay with aiosmtplib, and record what happened.

Each recipient's copy is one SMTP transaction (its own VERP envelope sender).  What the
relay answered becomes an event: ``submitted`` (accepted; the queue id of "queued as ..."
kept, so the MTA log's delivery joins it) or ``rejected`` (refused, with the reply).  The
token of each copy is stored as a ``tracked_messages`` record, its thread headers as
``message_headers`` records, in the same write.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiosmtplib

from monitor.collectors.mailbox.records import TrackedMessage
from monitor.config import SendConfig
from monitor.model import Event, EventType
from monitor.pipeline import Pipeline
from monitor.send.compose import Composed, Draft, compose
from monitor.threads.headers import MessageHeader

__all__ = ["SOURCE", "Sent", "parent_of", "send"]

SOURCE = "send"
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")


@dataclass
class Sent:
    """What the relay said of each recipient."""

    message_id: str
    subject: str
    recipients: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.recipients if r["status"] == "submitted")


def parent_of(pipeline: Pipeline, message_id: str | None) -> dict[str, Any] | None:
    """The thread message ``message_id`` names, as :func:`compose` takes it."""
    if not message_id:
        return None
    from monitor.threads.build import thread_of

    mid = message_id.strip().strip("<>")
    with pipeline.store.engine.connect() as conn:
        thread = thread_of(conn, mid)
    found = [m for m in (thread or {}).get("messages", []) if m["message_id"] == mid]
    return found[0] if found else None


def send(draft: Draft, settings: SendConfig, pipeline: Pipeline) -> Sent:
    """Compose, submit and record ``draft``; a reply's headers come from its thread."""
    composed = compose(draft, settings, parent_of(pipeline, draft.in_reply_to))
    answers = asyncio.run(_submit(composed, settings))
    now = datetime.now(UTC)
    sent = Sent(composed.message_id, composed.subject)
    for copy, (code, reply) in zip(composed.copies, answers, strict=True):
        ok = 200 <= code < 300
        queued = _QUEUED.search(reply)
        queue_id = queued.group(1) if ok and queued else None
        sender = draft.from_address or settings.from_address
        pipeline.put(Event(
            type=EventType.SUBMITTED if ok else EventType.REJECTED, occurred_at=now,
            source=SOURCE, message_id=composed.message_id, queue_id=queue_id, sender=sender,
            recipient=copy.recipient, reply_code=None if ok else code,
            diagnostic=None if ok else reply[:1000], tags=draft.tags,
        ))  # fmt: skip
        pipeline.put_record(TrackedMessage(SOURCE, now, token=copy.token,
                                           message_id=composed.message_id,
                                           recipient=copy.recipient, subject=composed.subject))
        where = queue_id or f"send:{composed.message_id}"
        for name, value in [*composed.headers.items(), ("Subject", composed.subject)]:
            pipeline.put_record(MessageHeader(SOURCE, now, queue_id=where, name=name.lower(),
                                              value=value, sender=copy.sender,
                                              recipient=copy.recipient))  # fmt: skip
        sent.recipients.append({"recipient": copy.recipient, "token": copy.token,
                                "status": "submitted" if ok else "rejected", "code": code,
                                "reply": reply, "queue_id": queue_id})  # fmt: skip
    pipeline.flush()
    return sent


async def _submit(composed: Composed, settings: SendConfig) -> list[tuple[int, str]]:
    """(reply code, text) per copy; a refused copy does not stop the others."""
    context = ssl.create_default_context()
    client = aiosmtplib.SMTP(hostname=settings.relay_host, port=settings.relay_port,
                             use_tls=settings.security == "tls",
                             start_tls=settings.security == "starttls",
                             tls_context=context, timeout=settings.timeout_seconds)  # fmt: skip
    out: list[tuple[int, str]] = []
    async with client:
        password = settings.password()
        if settings.username and password:
            await client.login(settings.username, password)
        for copy in composed.copies:
            try:
                refused, reply = await client.sendmail(copy.sender, [copy.recipient], copy.data)
                if refused:
                    code, text = next(iter(refused.values()))
                    out.append((code, text))
                else:
                    out.append((250, reply))
            except aiosmtplib.SMTPRecipientsRefused as exc:  # the only recipient refused
                first = exc.recipients[0]
                out.append((first.code, first.message))
                await client.rset()
            except aiosmtplib.SMTPResponseException as exc:
                out.append((exc.code, exc.message))
                await client.rset()
    return out
