"""The source the driver runs for every watched mailbox: one email in, events and a record out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from monitor.collectors.mail.dsn import DEFAULT_MAX_BYTES
from monitor.collectors.mail.mailfiles import is_mail
from monitor.collectors.mail.source import NOT_MAIL
from monitor.collectors.mailbox.links import Linker
from monitor.collectors.mailbox.route import ROLES, route
from monitor.collectors.source import Item, NotUnderstood, ParseStats, Source
from monitor.provider_rules import ProviderRules

__all__ = ["InboundSource", "Mail"]


@dataclass(frozen=True, slots=True)
class Mail:
    """One message as a mailbox holds it: its bytes and when it arrived (IMAP INTERNALDATE)."""

    data: bytes
    received_at: datetime | None = None
    size: int | None = None  # its whole size when ``data`` is only its start


class InboundSource(Source[Mail]):
    """Bounces, complaints, auto-replies and replies of one mailbox -> events + records.

    Each message makes one :class:`~monitor.collectors.mailbox.records.InboundMessage`
    (what it was, how it was linked) and the events for its original.  Bytes that are not
    an email are not understood (counted as ``not an email``).
    """

    kind = "mailbox"
    records = True

    def __init__(
        self,
        name: str,
        linker: Linker,
        *,
        role: str = "replies",
        max_bytes: int = DEFAULT_MAX_BYTES,
        provider_rules: ProviderRules | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"mailbox role {role!r}: one of {', '.join(ROLES)}")
        self.name = name
        self.source = f"mailbox:{name}"
        self.linker = linker
        self.role = role
        self.max_bytes = max_bytes
        self.provider_rules = provider_rules
        self.stats = ParseStats()
        self.categories: Counter[str] = Counter()
        self.errors = 0  # messages read in part (cut, broken MIME)

    def feed(self, unit: Mail, ref: str | None = None) -> Sequence[Item]:
        self.stats.lines += 1
        if not is_mail(unit.data):
            raise NotUnderstood(NOT_MAIL)
        routed = route(
            unit.data, mailbox=self.name, role=self.role, linker=self.linker,
            source=self.source, received_at=unit.received_at, raw_ref=ref,
            max_bytes=self.max_bytes, provider_rules=self.provider_rules,
        )  # fmt: skip
        if unit.size is not None and unit.size > len(unit.data):
            note = f"cut at {len(unit.data)} of {unit.size} bytes"
            error = "; ".join(filter(None, [note, routed.record.error]))[:500]
            routed.record = replace(routed.record, error=error)
        self.categories[routed.category] += 1
        if routed.record.error:
            self.errors += 1
        if routed.category == "unmatched":
            self.stats.ignored += 1
        self.stats.events += len(routed.events)
        return [*routed.events, routed.record]

