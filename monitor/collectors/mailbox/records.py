"""The record kinds of the inbound mailboxes, and the metrics they feed.

* :class:`InboundMessage`: one message read from a watched mailbox: what it was (a bounce,
  a complaint, an auto-reply, a human reply or unmatched), the thread headers it carried,
  and the outbound message it was linked to and how.
* :class:`TrackedMessage`: an outbound message's tracking token (the part of a VERP or
  plus-addressed return path, or of a quoted reference, that names it), so mail that comes
  back without usable headers still joins its original.

Identity: an inbound message is named by the mailbox's name and its own Message-ID (a
digest of its first bytes when it has none), never by its IMAP UID, so a mailbox
re-scanned after a UIDVALIDITY change stores, and counts on ``/metrics``, nothing twice.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from monitor.metrics import observe_kind
from monitor.records import Record
from monitor.store.records import register_record

__all__ = ["CATEGORIES", "LINKS", "InboundMessage", "TrackedMessage"]

#: What an inbound message is (``mailmon_inbound_messages_total{category}``).
CATEGORIES = ("bounce", "complaint", "auto_reply", "reply", "unmatched")
#: How a message was linked to its original, best first (``none``: it was not).
LINKS = ("in-reply-to", "references", "report", "verp", "token", "none")


@register_record
@dataclass(frozen=True, slots=True)
class InboundMessage(Record):
    """One message read from a mailbox (``occurred_at``: its Date, else its arrival)."""

    kind = "inbound_messages"
    identity_fields = ("mailbox", "message_id")
    indexes = (("message_id",), ("linked_message_id",), ("mailbox", "category"))

    mailbox: str  # the configured mailbox's name
    message_id: str  # its own Message-ID (or "digest:<hex>" when it has none)
    category: str  # one of CATEGORIES
    link: str  # one of LINKS
    linked_message_id: str | None = None  # the outbound message it answers or reports on
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    subject: str | None = None  # normalised: Re:/Fwd: prefixes and spaces folded
    reply_prefix: bool = False  # its subject starts with Re: (or a language's form of it)
    sender: str | None = None  # its From address
    to_noreply: bool = False  # it reached a mailbox of role "noreply"
    events: int = 0  # the events it made for its original
    error: str | None = None  # why it could not be read whole (cut, broken MIME)


@register_record
@dataclass(frozen=True, slots=True)
class TrackedMessage(Record):
    """The token of one outbound message for one recipient (``occurred_at``: sent)."""

    kind = "tracked_messages"
    identity_fields = ("token",)
    indexes = (("token",), ("message_id",))

    token: str
    message_id: str
    recipient: str | None = None
    subject: str | None = None


class InboundMetrics:
    """``mailmon_inbound_messages_total{mailbox,category}`` and ``mailmon_replies_total``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "mailmon_inbound_messages", "Messages read from the watched mailboxes, by what "
            "they were", ["mailbox", "category"], registry=registry,
        )  # fmt: skip
        self.replies = Counter(
            "mailmon_replies", "Human replies read from the mailboxes: linked to an outbound "
            "message or not, and whether they reached the no-reply address",
            ["linked", "to_noreply"], registry=registry,
        )  # fmt: skip

    def __call__(self, records: Sequence[Record]) -> None:
        for r in records:
            if not isinstance(r, InboundMessage):
                continue
            category = r.category if r.category in CATEGORIES else "unmatched"
            self.messages.labels(r.mailbox, category).inc()
            if category == "reply":
                self.replies.labels(_flag(r.link != "none"), _flag(r.to_noreply)).inc()


def _flag(value: bool) -> str:
    return "true" if value else "false"


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, InboundMetrics] = (
    weakref.WeakKeyDictionary()
)


def _observer(registry: CollectorRegistry) -> Callable[[Sequence[Record]], None]:
    metrics = _SHARED.get(registry)
    if metrics is None:
        metrics = _SHARED[registry] = InboundMetrics(registry)
    return metrics


observe_kind(InboundMessage.kind, _observer)
