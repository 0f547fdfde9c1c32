"""What every ESP webhook collector is: a source of its event records and a way to trust them.

A provider module defines three things and registers them as one :class:`Webhook`:

- a :class:`EspSource` subclass: one decoded event record (a JSON object) in, its events
  out, in Mailmon's vocabulary (``monitor.model.Event``).  The provider's own bounce
  type and subtype go into the tags (``bounce_type:Permanent``, ``bounce_subtype:General``)
  and its diagnostic text into ``diagnostic``, where the pipeline's classifier reads it,
  so reasons compare across sources; the sender's tags and metadata become ``stream:``,
  ``category:`` or ``campaign:`` tags;
- ``split(body)``: the records a request body (or an exported payload file) holds;
  :func:`monitor.collectors.jsonbody.split_records` for plain JSON;
- ``verifier(settings)``: checks a request against the provider's scheme, on the raw
  body bytes as received, and raises :class:`Refused` when it fails.

    class SendGridEvents(EspSource):
        kind = "sendgrid"

        def events(self, record, ref):
            ...

    register_webhook(Webhook("sendgrid", SendGridEvents, split_records, SendGridSignature))

``POST /webhooks/NAME`` and ``mailmon ingest NAME FILE`` then take the provider's events
through the driver like every other source.

A payload that carries the message's thread headers (In-Reply-To, References, Subject)
hands them to :meth:`EspSource.carry` from ``events``; ``feed`` then returns, after the
events, their ``message_headers`` records (:func:`monitor.threads.headers.thread_records`),
so ``mailmon threads`` joins the message to its conversation.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from monitor.collectors.source import Item, NotUnderstood, ParseStats, Source
from monitor.config import WebhookSettings
from monitor.model import Event
from monitor.threads.headers import thread_records

__all__ = [
    "EspSource", "Refused", "Verifier", "Webhook", "register_webhook", "webhook", "webhooks",
]

#: Exceptions a provider's mapping raises on a record that is not what it expects.
RECORD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)


class Refused(Exception):
    """A request that is not trusted: ``reason`` is a bounded label
    (``bad_signature``, ``bad_auth``, ``stale``, ``replayed``, ``bad_topic``),
    ``status`` the HTTP answer (401 or 403)."""

    def __init__(self, reason: str, status: int = 401, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.status = status


class Verifier(Protocol):
    """Checks one request; raises :class:`Refused`.  Never sees a re-serialised body.

    A verifier may say ``offline = True``: it never waits on the network (it holds its key),
    so a small request is checked and stored on the service's event loop, not a thread.
    """

    def verify(self, headers: Mapping[str, str], body: bytes) -> None: ...


class EspSource(Source[Any]):
    """A provider's decoded event records -> events (then the thread headers' records);
    a record it cannot read is not understood."""

    records = True  # message_headers, when a payload carries thread headers

    def __init__(self) -> None:
        self.stats = ParseStats()
        self._carried: tuple[list[tuple[str, Any]], datetime | None] | None = None

    def feed(self, unit: Any, ref: str | None = None) -> list[Item]:
        self.stats.lines += 1
        if isinstance(unit, NotUnderstood):  # a piece of the body that did not decode
            raise unit
        if type(unit) is not dict and not isinstance(unit, Mapping):  # dict: no ABC check
            raise NotUnderstood("not an event object")
        self._carried = None
        try:
            events = self.events(unit, ref)
        except RECORD_ERRORS:
            raise NotUnderstood(f"not a {self.kind} event") from None
        if not events:
            self.stats.ignored += 1
            return []
        self.stats.events += len(events)
        if self._carried is None:
            return events  # type: ignore[return-value]  # list is invariant; Event is an Item
        return [*events, *self._thread(events, *self._carried)]

    def carry(self, headers: Iterable[tuple[str, Any]], at: datetime | None = None) -> None:
        """The thread headers (name, value) the record shows of its message; ``at``: a time
        every event of the message gives (when it was sent), so each stores them once."""
        self._carried = (list(headers), at)

    def _thread(self, events: list[Event], headers: list[tuple[str, Any]],
                at: datetime | None) -> list[Item]:  # fmt: skip
        first = events[0]
        if not first.message_id:
            return []  # nothing to join them to
        when = at or min(e.occurred_at for e in events)
        return list(thread_records(self.kind, when, f"{self.kind}:{first.message_id}",
                                   first.message_id, headers, sender=first.sender))

    @abstractmethod
    def events(self, record: Mapping[str, Any], ref: str | None) -> list[Event]:
        """The events of one record ([] for one that changes nothing we track)."""


@dataclass(frozen=True)
class Webhook:
    """A provider's webhook: ``POST /webhooks/{name}``, ``mailmon ingest {name} FILE``."""

    name: str
    source: Callable[[], EspSource]
    split: Callable[[str], Iterable[Any]]
    verifier: Callable[[WebhookSettings], Verifier]
    #: whether ``[webhooks.NAME]`` needs a secret (SNS signs with Amazon's certificates)
    secret: bool = True


_WEBHOOKS: dict[str, Webhook] = {}


def register_webhook(hook: Webhook) -> None:
    _WEBHOOKS[hook.name] = hook


def webhooks() -> dict[str, Webhook]:
    """Every registered provider, by name."""
    return dict(_WEBHOOKS)


def webhook(name: str) -> Webhook:
    found = _WEBHOOKS.get(name)
    if found is None:
        raise ValueError(f"unknown webhook provider {name!r}; known: {', '.join(_WEBHOOKS)}")
    return found
