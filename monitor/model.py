"""The one event vocabulary every source, the store and the metrics speak.

An :class:`Event` is something that happened to one message for one recipient
(or to the message as a whole, when ``recipient`` is None).  Its ``id`` is a
hash of the source and the fields that identify it, so reading the same log or
webhook twice yields the same ids and the store counts it once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from monitor import slots

__all__ = [
    "ATTEMPT_TYPES",
    "FINAL_TYPES",
    "Event",
    "EventType",
    "Provider",
    "domain_of",
    "event_id",
    "identity",
    "identity_after",
    "second_prefix",
    "utc",
    "without_nul",
]


class EventType(StrEnum):
    SUBMITTED = "submitted"  # handed to us / the MTA / the ESP
    DEFERRED = "deferred"  # one attempt failed temporarily
    DELIVERED = "delivered"  # accepted by the receiving server
    BOUNCED = "bounced"  # permanent failure, synchronous or by a later DSN
    EXPIRED = "expired"  # gave up retrying
    REJECTED = "rejected"  # refused at submission
    SUPPRESSED = "suppressed"
    DROPPED = "dropped"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    REPLIED = "replied"
    AUTO_REPLIED = "auto_replied"
    PLACED = "placed"  # seed-probe placement (inbox / spam / missing)


#: Types that end a recipient's delivery; a delivery row keeps the latest one.
FINAL_TYPES = frozenset(
    {
        EventType.DELIVERED,
        EventType.BOUNCED,
        EventType.EXPIRED,
        EventType.REJECTED,
        EventType.SUPPRESSED,
        EventType.DROPPED,
    }
)

#: Types that record one delivery attempt against the receiving server.
ATTEMPT_TYPES = frozenset({EventType.DELIVERED, EventType.DEFERRED, EventType.BOUNCED})


class Provider(StrEnum):
    """Mailbox providers: the bounded ``provider`` label."""

    GOOGLE = "google"
    MICROSOFT = "microsoft"
    YAHOO = "yahoo"
    APPLE = "apple"
    COMCAST = "comcast"
    GMX = "gmx"
    ORANGE = "orange"
    MAILRU = "mailru"
    YANDEX = "yandex"
    ZOHO = "zoho"
    PROTON = "proton"
    FASTMAIL = "fastmail"
    PROOFPOINT = "proofpoint"
    MIMECAST = "mimecast"
    BARRACUDA = "barracuda"
    CISCO = "cisco"
    OTHER = "other"


def utc(moment: datetime) -> datetime:
    """Return ``moment`` in UTC; naive datetimes are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def domain_of(address: str | None) -> str | None:
    """The lower-cased domain of an address, or None when it has none."""
    if not address:
        return None
    _, at, domain = address.rpartition("@")
    if not at or not domain:
        return None
    return domain.strip().rstrip(".").lower() or None


def plain_event_id(source: str, kind: str, *parts: object) -> str:
    """A stable 128-bit hex id from the fields that identify an event: :data:`event_id`,
    in Python."""
    text = "\x1f".join([source, kind, *["" if p is None else str(p) for p in parts]])
    return _digest(text)


#: :func:`plain_event_id` in one call to C where ``monitor/slots.py`` has it built.
event_id: Callable[..., str] = slots.function("event_id") or plain_event_id


def _digest(text: str) -> str:
    try:
        raw = text.encode()
    except UnicodeEncodeError:  # undecodable input bytes kept as surrogates
        raw = text.encode("utf-8", "surrogateescape")
    return _blake2b(raw, digest_size=16).hexdigest()


_blake2b = hashlib.blake2b


def second_prefix(seconds: str) -> str:
    """The start of an id: the UNIX second of ``seconds`` (``%.6f`` text) in 8 hex digits."""
    return f"{int(float(seconds)) & 0xFFFFFFFF:08x}"


def identity(
    source: str,
    kind: str,
    seconds: str,
    queue_id: str | None,
    message_id: str | None,
    provider_message_id: str | None,
    recipient: str | None,
    reply_code: int | None,
    enhanced_status: str | None,
    diagnostic: str | None,
    relay: str | None,
    delay_seconds: float | None,
    client: str | None = None,
) -> str:
    """The id of an event from its identifying fields (``seconds``: the time as ``%.6f``).

    Relay and delay are part of it so that two attempts in the same second with the
    same reply (a queue flush) stay two attempts; the client, so that the same refusal
    of two clients in one second stays two refusals.  The id starts with the event's
    UNIX second in hex, so ids sort by time and a growing store appends to its index
    instead of writing all over it.
    """
    return identity_after(
        second_prefix(seconds), source, kind, seconds, queue_id, message_id,
        provider_message_id, recipient, reply_code, enhanced_status, diagnostic, relay,
        delay_seconds, client,
    )  # fmt: skip


def plain_identity_after(
    prefix: str,
    source: str,
    kind: str,
    seconds: str,
    queue_id: str | None,
    message_id: str | None,
    provider_message_id: str | None,
    recipient: str | None,
    reply_code: int | None,
    enhanced_status: str | None,
    diagnostic: str | None,
    relay: str | None,
    delay_seconds: float | None,
    client: str | None,
) -> str:
    """:func:`identity` with its :func:`second_prefix` worked out already (by a caller that
    makes many events of one second): :data:`identity_after`, in Python.

    The text hashed is :func:`event_id`'s (the fields joined by ``\\x1f``, None as "",
    the others as ``str()``), in one f-string because it runs once per event.
    """
    text = (
        f"{source}\x1f{kind}\x1f{seconds!s}"
        f"\x1f{'' if queue_id is None else queue_id!s}"
        f"\x1f{'' if message_id is None else message_id!s}"
        f"\x1f{'' if provider_message_id is None else provider_message_id!s}"
        f"\x1f{'' if recipient is None else recipient!s}"
        f"\x1f{'' if reply_code is None else reply_code!s}"
        f"\x1f{'' if enhanced_status is None else enhanced_status!s}"
        f"\x1f{'' if diagnostic is None else diagnostic!s}"
        f"\x1f{'' if relay is None else relay!s}"
        f"\x1f{'' if delay_seconds is None else delay_seconds!s}"
        f"\x1f{'' if client is None else client!s}"
    )
    return prefix + _digest(text)[:24]


#: :func:`plain_identity_after` in one call to C where ``monitor/slots.py`` has it built
#: (10.6 against 15.8 thousand instructions an id): the same ids (``tests/test_slots.py``).
identity_after: Callable[..., str] = slots.function("identity") or plain_identity_after


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to a message for one recipient."""

    type: EventType
    occurred_at: datetime
    source: str
    message_id: str | None = None
    queue_id: str | None = None
    provider_message_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    orig_recipient: str | None = None
    recipient_domain: str | None = None
    provider: str | None = None
    relay: str | None = None
    sending_ip: str | None = None
    client: str | None = None
    reply_code: int | None = None
    enhanced_status: str | None = None
    diagnostic: str | None = None
    reason: str | None = None
    hard: bool | None = None
    blame: str | None = None  # who is to blame for a failure (monitor.classify.BLAMES)
    rule: str | None = None  # the classification rule that decided reason and blame
    delay_seconds: float | None = None
    size_bytes: int | None = None
    attempt: int | None = None
    tags: tuple[str, ...] = ()
    raw_ref: str | None = None
    id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset():
            object.__setattr__(self, "occurred_at", utc(self.occurred_at))
        if self.recipient_domain is None and self.recipient:
            object.__setattr__(self, "recipient_domain", domain_of(self.recipient))
        if not self.id:
            object.__setattr__(self, "id", self.identity())

    def identity(self) -> str:
        """The deterministic id: where the event came from and what it says.

        The raw reference is left out on purpose: the same line read from
        ``mail.log`` today and ``mail.log.1`` tomorrow is the same event.
        """
        return identity(
            self.source,
            self.type.value,
            f"{self.occurred_at.timestamp():.6f}",
            self.queue_id,
            self.message_id,
            self.provider_message_id,
            self.recipient,
            self.reply_code,
            self.enhanced_status,
            self.diagnostic,
            self.relay,
            self.delay_seconds,
            self.client,
        )

    @property
    def is_final(self) -> bool:
        return self.type in FINAL_TYPES

    @property
    def timestamp(self) -> float:
        return self.occurred_at.timestamp()

    def replace(self, **changes: object) -> Event:
        """A copy with ``changes``; the id is kept (enrichment does not change identity)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready mapping (times as ISO 8601 UTC)."""
        out: dict[str, object] = {"id": self.id}
        for f in dataclasses.fields(self):
            if f.name == "id":
                continue
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat().replace("+00:00", "Z")
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, StrEnum):
                value = value.value
            out[f.name] = value
        return out


#: Every text field a collector fills from its input (the id is hex, made by us).
_TEXT_FIELDS = operator.attrgetter(*(
    f.name for f in dataclasses.fields(Event) if f.type == "str | None" or f.name == "source"
))  # fmt: skip


def without_nul(event: Event) -> None:
    """Replace NUL characters in ``event``'s text (PostgreSQL refuses them in text columns).

    A NUL in a log line is damage, not data: U+FFFD marks where it was.  The id is kept,
    so the same damaged line read again is still a duplicate.
    """
    if "\x00" not in "".join(filter(None, _TEXT_FIELDS(event))) and not (
        event.tags and "\x00" in "".join(event.tags)
    ):
        return
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, str) and "\x00" in value:
            object.__setattr__(event, f.name, value.replace("\x00", "\ufffd"))
        elif f.name == "tags" and value:
            object.__setattr__(event, f.name, tuple(t.replace("\x00", "\ufffd") for t in value))


def sort_key(event: Event) -> tuple[float, int]:
    """Timeline order: by time, and at equal times submission before outcomes."""
    return (event.timestamp, 0 if event.type is EventType.SUBMITTED else 1)


def timeline(events: Iterable[Event]) -> list[Event]:
    return sorted(events, key=sort_key)
