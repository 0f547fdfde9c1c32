"""Thread headers of outbound mail from Postfix's log: ``header_checks`` WARN lines.

Postfix logs nothing of a message's headers but its Message-ID; a ``header_checks`` rule
with the ``WARN`` action makes ``cleanup`` log the headers a thread is made of::

    # main.cf
    header_checks = regexp:/etc/postfix/thread_headers
    # /etc/postfix/thread_headers
    /^(Message-ID|In-Reply-To|References|Subject):/ WARN

    Dec  6 18:00:00 mta postfix/cleanup[812]: 4F1A2B3C: warning: header In-Reply-To:
        <a@app.example> from app[10.0.0.5]; from=<app@app.example> to=<dave@example.com>
        proto=ESMTP helo=<app>

Each such line is one :class:`MessageHeader` record (queue id, header name, value); the
thread view joins them to their Message-ID through the queue id.  ``[[logs]] kind =
"postfix-headers"`` (beside ``kind = "postfix"`` on the same file) or ``mailmon ingest
postfix-headers FILE`` reads them.

:func:`thread_records` makes the same records of the headers other sources carry (ESP
webhook payloads), keyed ``PROVIDER:MESSAGE-ID`` in place of a queue id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from monitor.collectors.source import Item, ParseStats, Source
from monitor.collectors.syslog import SyslogFramer
from monitor.records import Record
from monitor.store.records import register_record

__all__ = ["MAX_VALUE", "THREAD_HEADERS", "MessageHeader", "PostfixHeaderSource", "thread_records"]

from dataclasses import dataclass

#: The headers a thread is made of (RFC 5322 section 3.6.4, and the subject).
THREAD_HEADERS = frozenset({"message-id", "in-reply-to", "references", "subject"})
#: Characters of a header value kept (a References chain of ~50 ids; the rest is cut).
MAX_VALUE = 4000

_WARN = re.compile(
    r"^(?P<queue>[0-9A-Za-z]+): warning: header (?P<name>[A-Za-z0-9-]+):[ \t]?(?P<value>.*?)"
    r" from (?:\S+\[[^\]]*\]|local); from=<(?P<sender>[^>]*)>(?: to=<(?P<to>[^>]*)>)?"
)


@register_record
@dataclass(frozen=True, slots=True)
class MessageHeader(Record):
    """One thread header of an outbound message as the MTA saw it (``occurred_at``: logged)."""

    kind = "message_headers"
    identity_fields = ("queue_id", "name", "value")
    indexes = (("queue_id",),)

    queue_id: str
    name: str  # lower case: message-id, in-reply-to, references, subject
    value: str
    sender: str | None = None
    recipient: str | None = None


class PostfixHeaderSource(Source[str]):
    """Postfix ``cleanup`` WARN lines of thread headers -> :class:`MessageHeader` records."""

    kind = "postfix-headers"
    records = True

    def __init__(self, framer: SyslogFramer | None = None) -> None:
        self.framer = framer or SyslogFramer()
        self.stats = ParseStats()

    def feed(self, unit: str, ref: str | None = None) -> Sequence[Item]:
        self.stats.lines += 1
        frame = self.framer.split(unit)
        if frame is None or not frame.service.endswith("/cleanup"):
            self.stats.ignored += 1
            return []
        found = _WARN.match(frame.message)
        if found is None or found["name"].lower() not in THREAD_HEADERS:
            self.stats.ignored += 1
            return []
        source = f"postfix:{frame.host}"
        return [MessageHeader(source, frame.timestamp, queue_id=found["queue"],
                              name=found["name"].lower(), value=found["value"].strip()[:MAX_VALUE],
                              sender=found["sender"] or None,
                              recipient=found["to"] or None)]  # fmt: skip


def thread_records(source: str, when: datetime, key: str, message_id: str,
                   headers: Iterable[tuple[str, object]], *,
                   sender: str | None = None) -> list[MessageHeader]:  # fmt: skip
    """The :class:`MessageHeader` records of one message's thread headers as a payload
    carries them (``message_id`` without brackets; ``key`` stands for the queue id).

    None: nothing, unless a header besides the Message-ID is there (alone it joins nothing).
    Values that are not text are left out; long ones cut at :data:`MAX_VALUE`, as the
    Postfix lines are.  Malformed ids are kept as given: ``threads check`` names them.
    """
    found: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in THREAD_HEADERS and lower != "message-id" and lower not in found \
                and type(value) is str and value.strip():  # fmt: skip
            found[lower] = value.strip()[:MAX_VALUE]
    if not found:
        return []
    rows = {"message-id": f"<{message_id[: MAX_VALUE - 2]}>", **found}
    return [MessageHeader(source, when, queue_id=key, name=name, value=value, sender=sender)
            for name, value in rows.items()]  # fmt: skip
