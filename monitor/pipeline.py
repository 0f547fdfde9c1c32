"""The one pipeline: collectors hand it events; it enriches, stores and counts them.

    pipeline = Pipeline(store, resolver=ProviderResolver(cache=store), metrics=Metrics())
    for event in parse(lines):
        pipeline.put(event)
    pipeline.flush()

Enrichment fills what a collector cannot know: the recipient's mailbox provider and,
for failures, the reason and hard/soft verdict.  Events are written in batches, each
in one transaction; only events the store had not seen reach the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from monitor.classify import classify
from monitor.metrics import Metrics
from monitor.model import Event, EventType
from monitor.store import Store

__all__ = ["Pipeline", "ProviderLookup"]

log = logging.getLogger(__name__)

_FAILURES = frozenset(
    {EventType.DEFERRED, EventType.BOUNCED, EventType.EXPIRED, EventType.REJECTED}
)


class ProviderLookup(Protocol):
    def provider_for(self, domain: str | None) -> str: ...


class _NoProvider:
    def provider_for(self, domain: str | None) -> str:
        return "other"


class Pipeline:
    """Batches events into the store and the metrics."""

    def __init__(
        self,
        store: Store,
        *,
        resolver: ProviderLookup | None = None,
        metrics: Metrics | None = None,
        batch_size: int = 5000,
        on_write: Callable[[list[Event]], None] | None = None,
    ) -> None:
        self.store = store
        self.resolver = resolver or _NoProvider()
        self.metrics = metrics
        self.batch_size = batch_size
        self.on_write = on_write
        self._pending: list[Event] = []
        self.received = 0
        self.stored = 0
        self.duplicates = 0

    def enrich(self, event: Event) -> Event:
        """Add provider and failure classification where the collector left them out.

        The fields are filled in place: an event handed to the pipeline belongs to it
        until stored, enrichment only fills fields that were None and never changes the
        id, and a copy per event would cost more than parsing the line did.
        """
        fill = object.__setattr__
        if event.provider is None and event.recipient_domain:
            fill(event, "provider", self.resolver.provider_for(event.recipient_domain))
        if event.reason is None and event.type in _FAILURES:
            blame = rule = None
            if event.type is EventType.EXPIRED:
                reason, hard = "expired", False
            else:
                verdict = classify(
                    event.reply_code,
                    event.enhanced_status,
                    event.diagnostic,
                    provider=event.provider,
                    final=event.type is not EventType.DEFERRED,
                )
                reason, hard = verdict.reason, verdict.hard
                blame, rule = verdict.blame, verdict.rule
            fill(event, "reason", reason)
            if event.blame is None:
                fill(event, "blame", blame)
                fill(event, "rule", rule)
            if event.hard is None:
                fill(event, "hard", hard if event.type is EventType.BOUNCED else False)
        return event

    def put(self, event: Event) -> None:
        self._pending.append(self.enrich(event))
        if len(self._pending) >= self.batch_size:
            self.flush()

    def put_many(self, events: Iterable[Event]) -> None:
        for event in events:
            self.put(event)

    def discard(self) -> None:
        """Drop what is pending (the caller will read it again from its checkpoint)."""
        self._pending = []

    def flush(
        self,
        *,
        checkpoint: tuple[str, Mapping[str, Any]] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> list[Event]:
        """Write what is pending (with a checkpoint and state, in the same transaction)."""
        batch, self._pending = self._pending, []
        if not batch and checkpoint is None and not state:
            return []
        fresh = self.store.write(batch, checkpoint=checkpoint, state=state)
        self.received += len(batch)
        self.stored += len(fresh)
        self.duplicates += len(batch) - len(fresh)
        if self.metrics is not None and fresh:
            self.metrics.observe(fresh)
        if self.on_write is not None and fresh:
            self.on_write(fresh)
        return fresh
