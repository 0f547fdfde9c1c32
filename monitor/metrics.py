"""Prometheus metrics (prefix ``mailmon_``) with bounded label values.

Counters are updated from the events the store accepted as new, so re-reading
input never counts twice.  Label values come from closed sets only: providers
from :class:`monitor.model.Provider`, domains from an allow-list plus the top-N by
volume (everything else is ``other``), reasons from the bounce vocabulary.

Counters start at zero with the process, as prometheus-client's do: ``rate()`` and
``increase()`` see the restart as a counter reset and cope.  They are not seeded from
the store at start-up: several instances sharing one database would each start from
the whole store, so a ``sum()`` across them would count the shared history once per
instance (docs/metrics.md).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from monitor import __version__
from monitor.classify import REASONS
from monitor.gauges import PROVIDERS, DomainLabeler, IpLabeler, RollupGauges
from monitor.model import Event, EventType
from monitor.records import Record

__all__ = [
    "DELAY_BUCKETS",
    "OUTCOMES",
    "Metrics",
    "ObserverFactory",
    "RecordObserver",
    "forget_kind",
    "observe_kind",
]

OUTCOMES = frozenset({"delivered", "deferred", "bounced", "expired", "rejected", "suppressed"})
_ENGAGEMENT = {
    EventType.OPENED: "open",
    EventType.CLICKED: "click",
    EventType.UNSUBSCRIBED: "unsubscribe",
    EventType.REPLIED: "reply",
}
_BOUNCED = EventType.BOUNCED
_DELIVERED = EventType.DELIVERED
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
def delay_micros(seconds: float) -> int:
    """A delay as whole microseconds: a sum kept in integers is the same in any order."""
    return int(seconds * 1_000_000 + 0.5)


DELAY_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 5 * 86400)


#: Updates a record kind's own metrics from the records of that kind the store took as new.
RecordObserver = Callable[[Sequence[Record]], None]
#: Makes a kind's observer with its metrics registered on the registry it is given.
ObserverFactory = Callable[[CollectorRegistry], RecordObserver]

_OBSERVERS: dict[str, ObserverFactory] = {}

#: Modules that define Mailmon's own record kinds and their metrics, imported by every
#: ``Metrics`` so that /metrics lists their families whatever else was imported.
BUILTIN_KINDS = (
    "monitor.collectors.reports.records",
    "monitor.dnscheck.records",
    "monitor.collectors.seeds.records",
    "monitor.collectors.mailbox.records",
)


def observe_kind(kind: str, factory: ObserverFactory) -> None:
    """Have every :class:`Metrics` observe the new records of ``kind`` with ``factory``'s observer.

    Called once, beside ``register_record``, by the module that defines the kind; each
    ``Metrics`` calls ``factory(registry)`` once, so tests with their own registries
    never share a metric.  The observer's labels must be bounded as all others are::

        class ListingMetrics:
            def __init__(self, registry: CollectorRegistry) -> None:
                self.listed = Counter("mailmon_dnsbl_listings", "...", ["zone"], registry=registry)

            def __call__(self, records: Sequence[Record]) -> None:
                for r in records:
                    self.listed.labels(zone_label(r.zone)).inc()

        observe_kind("dnsbl_listings", ListingMetrics)
    """
    _OBSERVERS[kind] = factory


def forget_kind(kind: str) -> None:
    """Undo :func:`observe_kind` (tests that define kinds)."""
    _OBSERVERS.pop(kind, None)


def source_kind(source: str) -> str:
    """The bounded ``source`` label: the collector, without its host part."""
    return source.partition(":")[0]


class DelayHistogram:
    """``mailmon_delivery_delay_seconds``: per provider, bucket counts and a sum kept exact.

    The sum is kept in whole microseconds, so the same delays added up in another order
    (batches of another size) give the same number (float addition is not associative).
    """

    name = "mailmon_delivery_delay_seconds"
    doc = "Submission to delivery, per delivered recipient."

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._lock = threading.Lock()
        #: provider -> [count per bucket (+Inf last)..., sum in microseconds]
        self._data: dict[str, list[int]] = {}

    def add(self, provider: str, index: int, count: int, micros: int) -> None:
        """Count ``count`` observations in bucket ``index`` (``len(bounds)``: above all)."""
        with self._lock:
            row = self._data.get(provider)
            if row is None:
                row = self._data[provider] = [0] * (len(self.bounds) + 2)
            row[index] += count
            row[-1] += micros

    def bucket(self, seconds: float) -> int:
        """The index of the bucket ``seconds`` falls in (``len(bounds)``: above all)."""
        return next((i for i, b in enumerate(self.bounds) if seconds <= b), len(self.bounds))

    def observe(self, provider: str, seconds: float) -> None:
        self.add(provider, self.bucket(seconds), 1, delay_micros(seconds))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=["provider"])
        with self._lock:
            rows = {p: list(r) for p, r in self._data.items()}
        for provider, row in sorted(rows.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*self.bounds, float("inf")), row[:-1], strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric([provider], buckets, row[-1] / 1_000_000)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.doc, labels=["provider"])


class Metrics:
    """Mailmon's metrics, registered on ``registry`` (tests pass their own)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        labeler: DomainLabeler | None = None,
        ips: IpLabeler | None = None,
        sender_domains: IpLabeler | None = None,
        streams: IpLabeler | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.labeler = labeler or DomainLabeler()
        r = self.registry
        self.deliveries = Counter(
            "mailmon_deliveries", "Delivery outcomes per recipient (deferred: per attempt).",
            ["provider", "domain", "outcome"], registry=r,
        )  # fmt: skip
        self.bounces = Counter(
            "mailmon_bounces", "Bounced recipients by reason and hard/soft.",
            ["provider", "domain", "reason", "hard"], registry=r,
        )  # fmt: skip
        self.complaints = Counter(
            "mailmon_complaints", "Spam complaints (feedback loops, ESP events).",
            ["provider", "domain", "source"], registry=r,
        )  # fmt: skip
        self.engagement = Counter(
            "mailmon_engagement", "Opens, clicks, unsubscribes and replies.",
            ["provider", "domain", "kind"], registry=r,
        )  # fmt: skip
        self.ingested = Counter(
            "mailmon_events_ingested", "Events stored (new, not seen before) per source.",
            ["source"], registry=r,
        )  # fmt: skip
        self.duplicates = Counter(
            "mailmon_events_duplicate",
            "Events already in the store (input read again), per source.", ["source"], registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "mailmon_events_rejected", "Input that could not be turned into events.",
            ["source", "reason"], registry=r,
        )  # fmt: skip
        self.lines = Counter(
            "mailmon_source_lines", "Log lines read per source.", ["source"], registry=r,
        )  # fmt: skip
        self.delay = DelayHistogram(DELAY_BUCKETS)
        r.register(self.delay)
        self.last_event = Gauge(
            "mailmon_source_last_event_timestamp_seconds",
            "Event time of the newest event stored per source.", ["source"], registry=r,
        )  # fmt: skip
        self.bytes_behind = Gauge(
            "mailmon_source_bytes_behind",
            "Bytes written to followed logs and not read yet, per source.", ["source"],
            registry=r,
        )  # fmt: skip
        self.build_info = Gauge(
            "mailmon_build_info", "Mailmon's version.", ["version"], registry=r,
        )  # fmt: skip
        self.build_info.labels(version=__version__).set(1)
        # The scheduler's jobs (``monitor.jobs``); ``job`` is a name from its catalog.
        self.job_last_success = Gauge(
            "mailmon_job_last_success_timestamp_seconds",
            "When each scheduled job last finished without an error.", ["job"], registry=r,
        )  # fmt: skip
        self.job_failures = Counter(
            "mailmon_job_failures", "Runs of each scheduled job that raised an error.",
            ["job"], registry=r,
        )  # fmt: skip
        self.rollup = RollupGauges(self.labeler, ips, sender_domains, streams)
        r.register(self.rollup)
        self._latest: dict[str, float] = {}
        self.records_stored = Counter(
            "mailmon_records_stored", "Records stored (new, not seen before) per kind and source.",
            ["kind", "source"], registry=r,
        )  # fmt: skip
        self._observers: dict[str, RecordObserver] = {}
        for module in BUILTIN_KINDS:
            importlib.import_module(module)
        for kind in list(_OBSERVERS):
            self._observer(kind)

    def _observer(self, kind: str) -> RecordObserver | None:
        """The kind's observer, made on this registry the first time (kinds may come later)."""
        observer = self._observers.get(kind)
        if observer is None and kind in _OBSERVERS:
            observer = self._observers[kind] = _OBSERVERS[kind](self.registry)
        return observer

    def observe_records(self, records: Iterable[Record]) -> None:
        """Count records that the store accepted as new and hand them to their kind's observer."""
        by_kind: dict[str, list[Record]] = {}
        for record in records:
            by_kind.setdefault(record.kind, []).append(record)
        for kind, batch in by_kind.items():
            sources: dict[str, int] = {}
            for record in batch:
                source = source_kind(record.source)
                sources[source] = sources.get(source, 0) + 1
            for source, n in sources.items():
                self.records_stored.labels(kind, source).inc(n)
            observer = self._observer(kind)
            if observer is not None:
                observer(batch)

    def observe(self, events: Iterable[Event]) -> None:
        """Count events that the store accepted as new."""
        # First the events by what decides their labels, then each group once: a batch of
        # thousands of events has a few hundred groups.  Groups keep the order of their
        # first event, so label sets are created in event order and /metrics lists them
        # the same way whatever the batch size.
        groups: dict[tuple[Any, ...], int] = {}
        delays: dict[tuple[str | None, float], int] = {}
        newest: dict[str, datetime] = {}
        for e in events:
            kind = e.type
            if kind is _BOUNCED:
                key: tuple[Any, ...] = (
                    e.source, kind, e.provider, e.recipient_domain, e.reason, e.hard,
                )  # fmt: skip
            else:
                key = (e.source, kind, e.provider, e.recipient_domain)
                if kind is _DELIVERED and e.delay_seconds is not None:
                    slot = (e.provider, e.delay_seconds)
                    delays[slot] = delays.get(slot, 0) + 1
            groups[key] = groups.get(key, 0) + 1
            if e.occurred_at > newest.get(e.source, _EPOCH):  # only times after 1970 count
                newest[e.source] = e.occurred_at
        ingested: dict[str, int] = {}
        tally: dict[tuple[Any, ...], int] = {}
        for (source, kind, provider, recipient_domain, *bounce), n in groups.items():
            source = source_kind(source)
            ingested[source] = ingested.get(source, 0) + n
            provider = provider if provider in PROVIDERS else "other"
            domain = self.labeler(recipient_domain)
            if kind.value in OUTCOMES:
                k: tuple[Any, ...] = (self.deliveries, provider, domain, kind.value)
                tally[k] = tally.get(k, 0) + n
            if kind is _BOUNCED:
                reason, hard = bounce
                reason = reason if reason in REASONS else "undefined"
                k = (self.bounces, provider, domain, reason, "true" if hard else "false")
                tally[k] = tally.get(k, 0) + n
            elif kind is EventType.COMPLAINED:
                k = (self.complaints, provider, domain, source)
                tally[k] = tally.get(k, 0) + n
            elif kind in _ENGAGEMENT:
                k = (self.engagement, provider, domain, _ENGAGEMENT[kind])
                tally[k] = tally.get(k, 0) + n
        # One increment per label set and batch: labels() is the costly part.
        for (counter, *labels), n in tally.items():
            counter.labels(*labels).inc(n)
        for source, n in ingested.items():
            self.ingested.labels(source).inc(n)
        for (provider, seconds), n in delays.items():
            bounded = provider if provider in PROVIDERS else "other"
            self.delay.add(bounded, self.delay.bucket(seconds), n, n * delay_micros(seconds))
        latest: dict[str, float] = {}
        for source, moment in newest.items():
            kind_of = source_kind(source)
            latest[kind_of] = max(latest.get(kind_of, 0.0), moment.timestamp())
        for source, ts in latest.items():
            if ts > self._latest.get(source, 0.0):
                self._latest[source] = ts
                self.last_event.labels(source).set(ts)

    def count_duplicates(self, sources: Iterable[str]) -> None:
        """Count events the store already had, by their ``source``."""
        by_kind: dict[str, int] = {}
        for source in sources:
            kind = source_kind(source)
            by_kind[kind] = by_kind.get(kind, 0) + 1
        for kind, n in by_kind.items():
            self.duplicates.labels(kind).inc(n)

    def count_refused(self, source: str, reason: str, n: int = 1) -> None:
        """Count events the pipeline refused (``future_timestamp``)."""
        self.rejected.labels(source_kind(source), reason).inc(n)

    def count_input(self, source: str, lines: int, unparsed: int) -> None:
        """Count lines read and lines that could not be parsed."""
        kind = source_kind(source)
        if lines:
            self.lines.labels(kind).inc(lines)
        if unparsed:
            self.rejected.labels(kind, "unparsed").inc(unparsed)
