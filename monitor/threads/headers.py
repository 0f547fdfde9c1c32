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
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from monitor.collectors.source import Item, ParseStats, Source
from monitor.collectors.syslog import SyslogFramer
from monitor.records import Record
from monitor.store.records import register_record

__all__ = ["THREAD_HEADERS", "MessageHeader", "PostfixHeaderSource"]

from dataclasses import dataclass

#: The headers a thread is made of (RFC 5322 section 3.6.4, and the subject).
THREAD_HEADERS = frozenset({"message-id", "in-reply-to", "references", "subject"})

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
                              name=found["name"].lower(), value=found["value"].strip()[:4000],
                              sender=found["sender"] or None,
                              recipient=found["to"] or None)]  # fmt: skip
