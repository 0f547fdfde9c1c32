"""The one pipeline: collectors hand it events; it enriches, stores and counts them.

    pipeline = Pipeline(store, resolver=ProviderResolver(cache=store), metrics=Metrics())
    for event in parse(lines):
        pipeline.put(event)
    pipeline.flush()

Enrichment fills what a collector cannot know: the recipient's mailbox provider and,
for failures, the reason and hard/soft verdict.  Events are written in batches, each
in one transaction; only events the store had not seen reach the metrics.

The provider decides metrics labels and counter rows, so an event is never written or
counted before its provider is known.  A domain the resolver cannot answer at once
(an MX lookup is needed) does not stop parsing: its events wait in the pending batch,
unenriched, while the lookup runs on the resolver's threads, and are finished just
before the batch is written, when the answer has usually arrived.

A full batch is written by a background thread while the caller goes on parsing: the
database driver releases the GIL while SQLite works, so parsing and writing overlap on
two cores.  At most one batch is in flight; :meth:`Pipeline.flush` waits for it, then
writes the rest (with the caller's checkpoint) before it returns, so what a flush
returns is stored.

With ``writer_process=True`` the background writes go to a child process instead
(:mod:`monitor.store.process`), started at the first full batch (or by
:meth:`Pipeline.start_writer`): the store's Python work then runs on the other core
instead of taking turns with parsing for the GIL.  Every write after that goes there,
checkpoints included, so the order of writes is the order of batches.  A full batch is
handed over by the caller's thread and only the answer is awaited in the background; its
events whose MX answer is still out go with the next batch instead of stopping parsing
(once: that batch waits for them; a flush waits for every answer).

Records (:mod:`monitor.records`: DMARC rows, DNS checks and the like) handed to
:meth:`Pipeline.put_record` go with the next batch, in its transaction: a flush's
checkpoint covers them too.  Only records the store had not seen reach
``Metrics.observe_records`` and ``on_records``.

An event dated more than ``max_future_seconds`` after the wall clock is refused before
anything else (counted in :attr:`Pipeline.refused` and ``mailmon_events_rejected_total``
with reason ``future_timestamp``): everything runs in event time, and one record dated
2099 would otherwise close every open incident and move the rollups' "now" decades ahead.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

from monitor import slots
from monitor.classify import classify
from monitor.metrics import Metrics
from monitor.model import Event, EventType, without_nul
from monitor.provider_rules import ProviderRules, packaged_rules
from monitor.records import Record
from monitor.store import Store
from monitor.store.process import Sent, WriterProcess

__all__ = ["Pipeline", "ProviderLookup"]

log = logging.getLogger(__name__)

#: ``dt.timestamp()``; in C where built (monitor/slots.py): 0.9 against 2.1 thousand
#: instructions an event, most of Python's in the datetime subtraction it makes.
_timestamp: Callable[[datetime], float] = slots.function("timestamp") or datetime.timestamp

#: Default of ``[ingest] max_future_seconds``: clock skew and time zone mistakes fit in a day.
MAX_FUTURE_SECONDS = 86400.0

_FAILURES = frozenset(
    {EventType.DEFERRED, EventType.BOUNCED, EventType.EXPIRED, EventType.REJECTED}
)


#: Allocations between young-generation collections.  Ingest allocates millions of
#: short-lived acyclic objects (events, rows); at CPython's default of 700 the collector
#: ran thousands of times, each older pass walking every live object (classifier tables,
#: parser state): about a sixth of ingest time.  Reference counting frees them anyway.
_GC_THRESHOLD = 100_000


def _fewer_collections() -> None:
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < _GC_THRESHOLD:
        gc.set_threshold(_GC_THRESHOLD, max(gen1, 50), max(gen2, 100))


#: What one write stored that was not stored before: events, records.
_Written = tuple[list[Event], list[Record]]


class ProviderLookup(Protocol):
    """What the pipeline asks of a resolver (:class:`monitor.providers.ProviderResolver`)."""

    def provider_soon(self, domain: str | None, relay: str | None = None) -> str | None:
        """The provider if known now; else None, and a lookup is started."""

    def wait_for(self, domain: str | None, relay: str | None = None) -> str:
        """The provider, waiting for a lookup in flight."""

    def save(self) -> None:
        """Persist what was learned (called before each batch is written)."""

    def start_deferred(self) -> None:
        """Start the lookups put off (called before waiting for a batch's providers)."""

    @property
    def rules(self) -> ProviderRules:
        """The rules it names providers by; mail collectors name report senders by them."""


class _NoProvider:
    def provider_soon(self, domain: str | None, relay: str | None = None) -> str:
        return "other"

    def wait_for(self, domain: str | None, relay: str | None = None) -> str:
        return "other"

    def save(self) -> None:
        pass

    def start_deferred(self) -> None:
        pass

    @property
    def rules(self) -> ProviderRules:
        return packaged_rules()


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
        on_records: Callable[[list[Record]], None] | None = None,
        max_future_seconds: float = MAX_FUTURE_SECONDS,
        clock: Callable[[], float] = time.time,
        writer_process: bool = False,
    ) -> None:
        self.store = store
        self.resolver = resolver or _NoProvider()
        self.metrics = metrics
        self.batch_size = batch_size
        self.on_write = on_write
        self.on_records = on_records
        _fewer_collections()
        self._pending: list[Event] = []
        self._waiting: list[Event] = []  # pending events whose provider is being looked up
        self._held = 0  # the first of _waiting, held back by the last hand-off (see _hold_back)
        self._retract: list[str] = []  # stored events the pending ones replace
        self._records: list[Record] = []
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: tuple[list[Event], int, Future[_Written]] | None = None
        # One in-memory SQLite database is one connection: it cannot be shared with a thread.
        self._overlap = store.engine.url.database not in (None, "", ":memory:")
        self._writer_process = writer_process and self._overlap
        self._process: WriterProcess | None = None
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self.max_future_seconds = max_future_seconds
        self._clock = clock
        #: events refused before storing, by reason (``future_timestamp``)
        self.refused: Counter[str] = Counter()
        self.rejected = 0  # events the store refused on their own (see Store.write)
        self._rejected_seen = 0
        self._rejected_ids: set[str] = set()  # of the batch being written
        #: records put, stored (new), and refused by the store on their own
        self.record_counts = Counter[str]()
        #: set by a group commit (monitor.service.group), which writes the batches: a full
        #: batch then waits for it instead of being written by put
        self.group_commit = False

    def enrich(self, event: Event) -> Event:
        """Add provider and failure classification where the collector left them out.

        The fields are filled in place: an event handed to the pipeline belongs to it
        until stored, enrichment only fills fields that were None and never changes the
        id, and a copy per event would cost more than parsing the line did.
        """
        fill = object.__setattr__
        if event.provider is None and event.recipient_domain:
            fill(event, "provider", self.resolver.wait_for(event.recipient_domain, event.relay))
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
        without_nul(event)
        self.put_checked(event)

    def put_checked(self, event: Event) -> None:
        """:meth:`put` for an event whose collector replaced its NULs already (a collector
        that sees every line can tell: scanning every event's text costs more)."""
        if _timestamp(event.occurred_at) > self._clock() + self.max_future_seconds:
            self._refuse(event, "future_timestamp")
            return
        looking_up = False
        if event.provider is None and event.recipient_domain:
            provider = self.resolver.provider_soon(event.recipient_domain, event.relay)
            if provider is None:
                self._waiting.append(event)  # enriched by _write, once its lookup is done
                looking_up = True
            else:
                object.__setattr__(event, "provider", provider)
        # Its provider known, all enrich does is classify a failure: most events are none,
        # and calling it cost more than this test.
        if not looking_up and event.reason is None and event.type in _FAILURES:
            self.enrich(event)
        self._pending.append(event)
        if len(self._pending) >= self.batch_size and not self.group_commit:
            if self._overlap:
                self._hand_off()
            else:
                self.flush()

    def put_record(self, record: Record) -> None:
        """Store ``record`` with the next batch (records are few: no enrichment)."""
        if record.occurred_at.timestamp() > self._clock() + self.max_future_seconds:
            self._refuse(record, "future_timestamp")
            return
        self._records.append(record)
        if len(self._records) >= self.batch_size and not self.group_commit:
            if self._overlap:
                self._hand_off()
            else:
                self.flush()

    def _refuse(self, event: Event | Record, reason: str) -> None:
        if not self.refused[reason]:  # one line per pipeline and reason; the rest are counted
            log.warning(
                "refused an event of %s dated %s, more than %.0f s ahead of the clock "
                "(%s; further ones are only counted)",
                event.source, event.occurred_at.isoformat(), self.max_future_seconds,
                getattr(event, "raw_ref", None) or "no reference",
            )  # fmt: skip
        self.refused[reason] += 1
        if self.metrics is not None:
            self.metrics.count_refused(event.source, reason)

    def _hand_off(self) -> None:
        """Start writing the pending batch in the background (after the one in flight)."""
        self._collect()  # first: if the batch in flight failed, this one is kept
        self.start_writer()
        held = self._held
        batch, waiting, retract, records = self._take()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="mailmon-store")
        future: Future[_Written]
        if self._process is not None:
            # Handed over here, while this thread would only parse: from the background
            # thread the handing over took turns on the GIL with parsing, and the writer
            # process waited for the batch (measured: either side idle half the time).
            # Events whose MX answer is still out go with the next batch instead.
            batch, waiting = self._hold_back(batch, waiting, held)
            self._finish(waiting, save=False)  # saved by _receive, off this thread
            sent = self._process.send(batch, retract=retract, records=records)
            future = self._writer.submit(self._receive, self._process, sent)
        else:
            future = self._writer.submit(self._write, batch, waiting, retract=retract,
                                         records=records)  # fmt: skip
        self._inflight = (batch, len(records), future)

    def start_writer(self) -> None:
        """Start the writer process now, if this pipeline has one (see the module)."""
        if self._writer_process and self._process is None:
            url = self.store.engine.url.render_as_string(hide_password=False)
            self._process = WriterProcess(url)
            self._process.start()

    def _hold_back(
        self, batch: list[Event], waiting: list[Event], held: int
    ) -> tuple[list[Event], list[Event]]:
        """Keep for the next batch the events of ``batch`` whose MX answer is still out;
        returns the rest of the batch and those of its events to enrich now.

        Waiting for them here stopped parsing (1.6 s of 15 on the benchmark's 1M-line log,
        DNS 30 ms away); a batch later their answers are in.  Each event is held back
        once: the ``held`` first of ``waiting`` were, and are waited for now.  Only the
        writer process's hand-off holds back (the writer thread waits off the parsing
        path), and never a flush: what it returns is stored, with its checkpoint.
        """
        if len(waiting) <= held:
            return batch, waiting
        self.resolver.start_deferred()  # all at once, then see which answers are in
        now, later = waiting[:held], []
        soon = self.resolver.provider_soon
        for event in waiting[held:]:
            provider = soon(event.recipient_domain, event.relay)
            if provider is None:
                later.append(event)
            else:
                object.__setattr__(event, "provider", provider)
                now.append(event)
        if later:
            kept = {id(e) for e in later}
            batch = [e for e in batch if id(e) not in kept]
            # _take emptied both lists: the held events lead the next batch.
            self._pending[:0] = later
            self._waiting[:0] = later
            self._held = len(later)
        return batch, now

    def _take(self) -> tuple[list[Event], list[Event], list[str], list[Record]]:
        self._held = 0
        batch, self._pending = self._pending, []
        waiting, self._waiting = self._waiting, []
        retract, self._retract = self._retract, []
        records, self._records = self._records, []
        return batch, waiting, retract, records

    def _finish(self, waiting: list[Event], *, save: bool = True) -> None:
        """Enrich the events that waited for their provider; save the answers learned."""
        if waiting:
            self.resolver.start_deferred()  # all at once, not one per event waited for
        for event in waiting:
            self.enrich(event)
        if save:
            self.resolver.save()

    def _write(self, batch: list[Event], waiting: list[Event], **write: Any) -> _Written:
        """Finish the events that waited for their provider, then store the batch."""
        self._finish(waiting)
        stored: list[Record] = []
        sink = self.store if self._process is None else self._process
        fresh = sink.write(batch, on_reject=self._rejected, on_records=stored.extend,
                                 **write)  # fmt: skip
        return fresh, stored

    def _receive(self, process: WriterProcess, sent: Sent) -> _Written:
        stored: list[Record] = []
        fresh = process.receive(sent, on_reject=self._rejected, on_records=stored.extend)
        # The MX answers learned are saved here, between the writer's transactions and
        # while the parsing thread reads on: from there each save stopped the parsing (33
        # saves, 0.2 s of the 1M benchmark log, resolution ON).
        try:
            self.resolver.save()
        except Exception as exc:  # the batch is stored: the answers go with a later save
            log.warning("MX answers not saved to the store yet: %s", exc)
        return fresh, stored

    def _collect(self) -> None:
        """Wait for the batch in flight, if any; count it (or raise what writing it raised)."""
        if self._inflight is None:
            return
        (batch, records, future), self._inflight = self._inflight, None
        self._stored(batch, *future.result(), records)

    def _rejected(self, item: Event | Record, reason: str) -> None:
        """An event or record the store refused (logged there): counted, the batch goes on."""
        if isinstance(item, Record):
            self.record_counts["rejected"] += 1
        else:
            self.rejected += 1
            self._rejected_ids.add(item.id)
        if self.metrics is not None:
            self.metrics.count_refused(item.source, reason)

    def _stored(
        self, batch: list[Event], fresh: list[Event], stored: list[Record], records: int
    ) -> None:
        # Rejections are reported while their batch is written, before it is counted here.
        rejected, self._rejected_seen = self.rejected - self._rejected_seen, self.rejected
        duplicates = len(batch) - len(fresh) - rejected
        self.received += len(batch)
        self.stored += len(fresh)
        self.duplicates += duplicates
        if self.metrics is not None:
            if fresh:
                self.metrics.observe(fresh)
            if duplicates:  # input read again: rare, so found event by event
                known = {e.id for e in fresh} | self._rejected_ids
                self.metrics.count_duplicates(e.source for e in batch if e.id not in known)
        self._rejected_ids = set()
        if self.on_write is not None and fresh:
            self.on_write(fresh)
        if records:
            self.record_counts["received"] += records
            self.record_counts["stored"] += len(stored)
            if self.metrics is not None and stored:
                self.metrics.observe_records(stored)
            if self.on_records is not None and stored:
                self.on_records(stored)

    def put_many(self, events: Iterable[Event]) -> None:
        for event in events:
            self.put(event)

    def replace(self, retracted: Iterable[str], events: Iterable[Event]) -> None:
        """Put ``events`` in place of the stored events ``retracted`` (written with them)."""
        self._retract.extend(retracted)  # written with the next batch, before its events
        for event in events:
            self.put(event)

    def discard(self) -> None:
        """Drop what is pending (the caller will read it again from its checkpoint)."""
        self._take()
        if self._inflight is not None:
            try:
                self._collect()
            except Exception:  # the caller re-reads from its checkpoint anyway
                log.debug("a background batch failed before discard", exc_info=True)

    def detach(self) -> tuple[list[Event], list[Event], list[str], list[Record]]:
        """Take what is pending, to be written by :meth:`commit_detached` while new events
        are put (a group commit; the caller keeps the two from running at once elsewhere)."""
        self._collect()
        return self._take()

    def commit_detached(
        self, taken: tuple[list[Event], list[Event], list[str], list[Record]]
    ) -> set[str]:
        """Write and count what :meth:`detach` took, in one transaction; returns the ids of
        the events the store refused on their own (left out, their neighbours stored)."""
        batch, waiting, retract, records = taken
        if not batch and not retract and not records:
            return set()
        fresh, stored = self._write(batch, waiting, retract=retract, records=records)
        rejected = set(self._rejected_ids)
        self._stored(batch, fresh, stored, len(records))
        return rejected

    def flush(
        self,
        *,
        checkpoint: tuple[str, Mapping[str, Any]] | None = None,
        state: Mapping[str, Any] | None = None,
        wait: bool = True,
    ) -> list[Event]:
        """Write what is pending (with a checkpoint and state, in the same transaction).

        Returns the new events of this write; a batch that was in flight is stored
        (and counted) before it.  ``wait=False`` (no checkpoint, no state) only starts
        writing what is pending, in the background where it can, and returns nothing:
        for a caller that wants recent events stored soon, without stopping.
        """
        if not wait and checkpoint is None and not state and self._overlap:
            # While a write is still running, the pending events go with the next one:
            # smaller batches would only mean more commits.
            idle = self._inflight is None or self._inflight[2].done()
            if (self._pending or self._retract or self._records) and idle:
                self._hand_off()
            return []
        self._collect()
        batch, waiting, retract, records = self._take()
        if not batch and checkpoint is None and not state and not retract and not records:
            return []
        fresh, stored = self._write(batch, waiting, checkpoint=checkpoint, state=state,
                                    retract=retract, records=records)  # fmt: skip
        self._stored(batch, fresh, stored, len(records))
        return fresh

    def close(self) -> None:
        """Write what is pending and stop the background writer."""
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None
            if self._process is not None:
                self._process.close()
                self._process = None
