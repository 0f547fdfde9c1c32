"""An event as the store's writer process receives it: a plain tuple of what it stores.

An :class:`~monitor.model.Event` crosses a process boundary as a tuple of plain str,
int, float, bool and None: :func:`to_wire` makes it in the parent (the type and a
provider as their plain values), ``marshal`` carries it (``monitor.store.process``:
2.6x faster than pickle for a batch of them), and :meth:`WireEvent._make` reads it back
in the child, where the writer (``monitor.store.writer``) reads it by position (the
compiled folds) or by name (``WireEvent``): the time is already a UNIX ``timestamp``.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from monitor import slots
from monitor.model import Event, EventType, Provider

__all__ = ["WireEvent", "plain_wire", "to_wire", "wired"]


class WireEvent(NamedTuple):
    id: str
    timestamp: float
    type: str  # an EventType's value
    source: str
    message_id: str | None
    queue_id: str | None
    provider_message_id: str | None
    sender: str | None
    recipient: str | None
    orig_recipient: str | None
    recipient_domain: str | None
    provider: str | None
    relay: str | None
    sending_ip: str | None
    client: str | None
    reply_code: int | None
    enhanced_status: str | None
    diagnostic: str | None
    reason: str | None
    hard: bool | None
    blame: str | None
    rule: str | None
    delay_seconds: float | None
    size_bytes: int | None
    attempt: int | None
    tags: tuple[str, ...]
    raw_ref: str | None


#: An enum member -> its plain value (a str subclass is not marshalled); a plain str
#: equal to one maps to that value, the same text.
_PLAIN: dict[object, str] = {m: m.value for enum in (EventType, Provider) for m in enum}


#: to_wire in one call to C (monitor/slots.py), where built: Event's field for each wire
#: field and what becomes of it.
_C_WIRE: Final = slots.getter(
    Event,
    ["occurred_at" if f == "timestamp" else f for f in WireEvent._fields],
    [
        slots.TIMESTAMP if f == "timestamp"
        else slots.PLAIN if f == "type"
        else slots.PLAIN_OR_SAME if f == "provider"
        else slots.AS_IS
        for f in WireEvent._fields
    ],
    _PLAIN,
)  # fmt: skip


def to_wire(e: Event) -> tuple[object, ...]:
    """``e`` in :class:`WireEvent` order (a plain tuple: pickling a named one costs more),
    its type and provider as plain str."""
    made = _C_WIRE
    return made(e) if made is not None else plain_wire(e)


def plain_wire(e: Event) -> tuple[object, ...]:
    """:func:`to_wire` in Python (where the C helper is not built, and for tests)."""
    provider = e.provider
    return (
        e.id, e.occurred_at.timestamp(), _PLAIN[e.type], e.source, e.message_id, e.queue_id,
        e.provider_message_id, e.sender, e.recipient, e.orig_recipient, e.recipient_domain,
        None if provider is None else _PLAIN.get(provider, provider), e.relay, e.sending_ip,
        e.client, e.reply_code, e.enhanced_status, e.diagnostic, e.reason, e.hard, e.blame,
        e.rule, e.delay_seconds, e.size_bytes, e.attempt, e.tags, e.raw_ref,
    )  # fmt: skip


def wired(e: Event | tuple[object, ...]) -> tuple[object, ...]:
    """``e`` as a wire tuple: a :class:`WireEvent` (or any wire tuple) as it is."""
    return e if isinstance(e, tuple) else to_wire(e)


# Positions in a wire tuple, for the compiled code that reads one (``monitor.store.rows``,
# ``monitor.store.fold``): compiled code indexes a tuple directly, where a named field goes
# through its descriptor (the writer process took 0.5-0.8 CPU s less per 1M lines).
ID: Final = 0
TIMESTAMP: Final = 1
TYPE: Final = 2
SOURCE: Final = 3
MESSAGE_ID: Final = 4
QUEUE_ID: Final = 5
PROVIDER_MESSAGE_ID: Final = 6
SENDER: Final = 7
RECIPIENT: Final = 8
ORIG_RECIPIENT: Final = 9
RECIPIENT_DOMAIN: Final = 10
PROVIDER: Final = 11
RELAY: Final = 12
SENDING_IP: Final = 13
CLIENT: Final = 14
REPLY_CODE: Final = 15
ENHANCED_STATUS: Final = 16
DIAGNOSTIC: Final = 17
REASON: Final = 18
HARD: Final = 19
BLAME: Final = 20
RULE: Final = 21
DELAY_SECONDS: Final = 22
SIZE_BYTES: Final = 23
ATTEMPT: Final = 24
TAGS: Final = 25
RAW_REF: Final = 26
