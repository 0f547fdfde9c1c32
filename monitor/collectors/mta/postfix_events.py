"""Making :class:`~monitor.model.Event` objects at log speed.

``Event(...)`` costs about 6 µs: a frozen dataclass sets its 25 slots through
``object.__setattr__`` and hashes its identity through a generic helper.  A Postfix log
carries one event per three or four lines, so that alone would eat a third of the parse
budget.  :class:`EventMaker` builds the very same object (equal fields, equal ``id``)
through the slot descriptors (in one call to C where ``monitor/slots.py`` has its helper
built), with the timestamp text and the id's time prefix cached per time.  The fast path
is used only while ``Event``'s fields are the ones listed here; otherwise it falls back
to ``Event(...)``, and ``tests/test_postfix_parser.py`` checks both agree.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Final

from monitor import slots
from monitor.collectors.mta.postfix_state import Queued, Recipient
from monitor.model import Event, EventType, domain_of, identity_after, second_prefix

__all__ = ["FAST_PATH", "EventMaker"]

_FIELDS = (
    "type",
    "occurred_at",
    "source",
    "message_id",
    "queue_id",
    "provider_message_id",
    "sender",
    "recipient",
    "orig_recipient",
    "recipient_domain",
    "provider",
    "relay",
    "sending_ip",
    "client",
    "reply_code",
    "enhanced_status",
    "diagnostic",
    "reason",
    "hard",
    "blame",
    "rule",
    "delay_seconds",
    "size_bytes",
    "attempt",
    "tags",
    "raw_ref",
    "id",
)

#: Whether the model still has exactly the fields the fast path sets.
FAST_PATH = tuple(f.name for f in dataclasses.fields(Event)) == _FIELDS and hasattr(
    Event, "__slots__"
)

_SUBMITTED = EventType.SUBMITTED
_EXPIRED = EventType.EXPIRED
_REJECTED = EventType.REJECTED
_new = object.__new__
_KIND = {kind: kind.value for kind in EventType}
_MAX_TIMES = 4096
if FAST_PATH:
    (
        _type,
        _occurred_at,
        _source,
        _message_id,
        _queue_id,
        _provider_message_id,
        _sender,
        _recipient,
        _orig_recipient,
        _recipient_domain,
        _provider,
        _relay,
        _sending_ip,
        _client,
        _reply_code,
        _enhanced_status,
        _diagnostic,
        _reason,
        _hard,
        _blame,
        _rule,
        _delay_seconds,
        _size_bytes,
        _attempt,
        _tags,
        _raw_ref,
        _id,
    ) = (getattr(Event, name).__set__ for name in _FIELDS)

#: All of them in one call, in _FIELDS order (monitor/slots.py), where built.
_FILL: Final = slots.setter(Event, _FIELDS) if FAST_PATH else None


class EventMaker:
    """Builds Events; keeps the text of the last timestamp and domain it worked out."""

    def __init__(self) -> None:
        # Two timestamps: a "submitted" (arrival time) and its outcome (the line's time).
        # Recent times -> their "%.6f" text and the id prefix (the UNIX second).  Outcomes
        # come at the line's time, their "submitted" at each message's own arrival time.
        self._times: dict[datetime, tuple[str, str]] = {}
        self._recipient: str | None = None
        self._domain: str | None = None

    # Positional on purpose: a call with 15 keywords costs more than the object it builds.
    def make(
        self,
        kind: EventType,
        occurred_at: datetime,
        source: str,
        message_id: str | None,
        queue_id: str | None,
        sender: str | None,
        recipient: str | None,
        orig_recipient: str | None,
        relay: str | None,
        client: str | None,
        reply_code: int | None,
        enhanced_status: str | None,
        diagnostic: str | None,
        delay_seconds: float | None,
        size_bytes: int | None,
        attempt: int | None,
        tags: tuple[str, ...],
        raw_ref: str | None,
    ) -> Event:
        """An Event equal to ``Event(type=kind, ...)`` with these fields; times must be UTC."""
        if not FAST_PATH:
            return Event(
                type=kind,
                occurred_at=occurred_at,
                source=source,
                message_id=message_id,
                queue_id=queue_id,
                sender=sender,
                recipient=recipient,
                orig_recipient=orig_recipient,
                relay=relay,
                client=client,
                reply_code=reply_code,
                enhanced_status=enhanced_status,
                diagnostic=diagnostic,
                delay_seconds=delay_seconds,
                size_bytes=size_bytes,
                attempt=attempt,
                tags=tags,
                raw_ref=raw_ref,
            )
        texts = self._times.get(occurred_at)
        if texts is None:
            seconds = f"{occurred_at.timestamp():.6f}"
            texts = (seconds, second_prefix(seconds))
            if len(self._times) >= _MAX_TIMES:
                self._times.clear()
            self._times[occurred_at] = texts
        seconds, prefix = texts
        if recipient is not self._recipient:  # "submitted" and its outcome share one
            self._recipient = recipient
            self._domain = domain_of(recipient)
        ident = identity_after(
            prefix, source, _KIND[kind], seconds, queue_id, message_id, None, recipient,
            reply_code, enhanced_status, diagnostic, relay, delay_seconds, client,
        )  # fmt: skip
        event = _new(Event)
        if _FILL is not None:
            _FILL(
                event, kind, occurred_at, source, message_id, queue_id, None, sender,
                recipient, orig_recipient, self._domain, None, relay, None, client, reply_code,
                enhanced_status, diagnostic, None, None, None, None, delay_seconds, size_bytes,
                attempt, tags, raw_ref, ident,
            )  # fmt: skip
            return event
        _type(event, kind)
        _occurred_at(event, occurred_at)
        _source(event, source)
        _message_id(event, message_id)
        _queue_id(event, queue_id)
        _provider_message_id(event, None)
        _sender(event, sender)
        _recipient(event, recipient)
        _orig_recipient(event, orig_recipient)
        _recipient_domain(event, self._domain)
        _provider(event, None)
        _relay(event, relay)
        _sending_ip(event, None)
        _client(event, client)
        _reply_code(event, reply_code)
        _enhanced_status(event, enhanced_status)
        _diagnostic(event, diagnostic)
        _reason(event, None)
        _hard(event, None)
        _blame(event, None)
        _rule(event, None)
        _delay_seconds(event, delay_seconds)
        _size_bytes(event, size_bytes)
        _attempt(event, attempt)
        _tags(event, tags)
        _raw_ref(event, raw_ref)
        _id(event, ident)
        return event

    # The event shapes the Postfix parser makes, from what it remembers of the queue id.

    def submitted(
        self,
        state: Queued,
        arrival: datetime,
        source: str,
        qid: str,
        recipient: str | None,
        orig: str | None,
        ref: str | None,
    ) -> Event:
        """The message was handed to Postfix (at its arrival) for this recipient."""
        return self.make(
            _SUBMITTED, arrival, source, state.message_id, qid, state.sender, recipient, orig,
            None, state.client, None, None, None, None, state.size, None, state.tags, ref,
        )  # fmt: skip

    def outcome(
        self,
        kind: EventType,
        moment: datetime,
        source: str,
        state: Queued,
        qid: str,
        recipient: str | None,
        orig: str | None,
        relay: str | None,
        code: int | None,
        enhanced: str | None,
        text: str | None,
        delay: float | None,
        attempt: int,
        ref: str | None,
    ) -> Event:
        """One delivery attempt's result: delivered, deferred, bounced or expired."""
        return self.make(
            kind, moment, source, state.message_id, qid, state.sender, recipient, orig, relay,
            None, code, enhanced, text, delay, None, attempt, state.tags, ref,
        )  # fmt: skip

    def expired(
        self,
        moment: datetime,
        source: str,
        state: Queued,
        qid: str,
        recipient: str | None,
        rcpt: Recipient,
        ref: str | None,
    ) -> Event:
        """Postfix gave up on a recipient; the last deferral says why."""
        return self.make(
            _EXPIRED, moment, source, state.message_id, qid, state.sender, recipient, None, None,
            None, rcpt.code, rcpt.enhanced, rcpt.diagnostic, None, None, rcpt.attempts or None,
            state.tags, ref,
        )  # fmt: skip

    def rejected(
        self,
        moment: datetime,
        source: str,
        state: Queued | None,
        qid: str | None,
        sender: str | None,
        recipient: str | None,
        client: str | None,
        code: int | None,
        enhanced: str | None,
        text: str | None,
        ref: str | None,
    ) -> Event:
        """The SMTP server, a milter or a content filter refused the message."""
        return self.make(
            _REJECTED, moment, source, state.message_id if state else None, qid, sender,
            recipient, None, None, client, code, enhanced, text, None, None, None,
            state.tags if state else (), ref,
        )  # fmt: skip
