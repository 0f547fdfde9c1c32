"""The source of bounce, complaint and auto-reply emails (``mailmon ingest eml|mbox FILE...``).

Each message (an ``.eml`` file, every message of an mbox, ``-`` for stdin) is parsed by
:func:`.dsn.parse` and its events (:func:`.events.report_events`) go through the same
pipeline as log lines.  They carry the original message's Message-ID, so a bounce joins
the original delivery and ``mailmon trace`` shows it in that timeline.  The event source
is ``mailbox:<kind>``; a message is referenced as ``file#n``.  Input that is not an email
(:func:`.mailfiles.is_mail`: a log, a JSON payload, a binary file) is refused and counted
as ``not_mail``.
"""

from __future__ import annotations

from collections import Counter

from monitor.collectors.mail.dsn import DEFAULT_MAX_BYTES, parse
from monitor.collectors.mail.events import report_events
from monitor.collectors.mail.mailfiles import is_mail
from monitor.collectors.source import NotUnderstood, ParseStats, Source
from monitor.model import Event
from monitor.provider_rules import ProviderRules

__all__ = ["MAIL_SOURCES", "NOT_MAIL", "MailSource"]

#: The ``mailmon ingest`` kinds this module reads (either reads both shapes of file).
MAIL_SOURCES = ("eml", "mbox")
NOT_MAIL = "not an email"


class MailSource(Source[bytes]):
    """Bounce (DSN), complaint (ARF) and auto-reply emails, one message per unit -> events.

    Bytes that are not an email (no header fields such as From, Date or Received: a log,
    a JSON payload, a binary file) are not understood: the DSN parser would read events
    into anything.  A message of no kind it knows is counted as not understood too.
    ``provider_rules`` (None: the packaged ones) name the providers of a report's sender
    and remote MTA.
    """

    kind = "mailbox"

    def __init__(
        self,
        name: str = "mbox",
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        provider_rules: ProviderRules | None = None,
    ) -> None:
        self.source = f"mailbox:{name}"
        self.max_bytes = max_bytes
        self.provider_rules = provider_rules
        self.stats = ParseStats()
        self.kinds: Counter[str] = Counter()  # messages by kind (dsn, arf, autoreply, ...)
        self.best_effort = 0  # messages read by the plain-text fallbacks

    def feed(self, unit: bytes, ref: str | None = None) -> list[Event]:
        self.stats.lines += 1
        if not is_mail(unit):
            raise NotUnderstood(NOT_MAIL)
        report = parse(unit, max_bytes=self.max_bytes, provider_rules=self.provider_rules)
        self.kinds[report.kind] += 1
        self.best_effort += report.best_effort
        if report.kind == "unknown":
            self.stats.unparsed["unknown"] += 1
        events = report_events(report, self.source, raw_ref=ref)
        self.stats.events += len(events)
        return events
