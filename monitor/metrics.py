"""Prometheus metrics (prefix ``mailmon_``) with bounded label values.

Counters are updated from the events the store accepted as new, so re-reading
input never counts twice.  Label values come from closed sets only: providers
from :class:`monitor.model.Provider`, domains from an allow-list plus the top-N by
volume (everything else is ``other``), reasons from the bounce vocabulary.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from monitor import __version__
from monitor.classify import REASONS
from monitor.model import Event, EventType, Provider
from monitor.store.totals import Totals, delay_micros

__all__ = [
    "DELAY_BUCKETS",
    "OUTCOMES",
    "DomainLabeler",
    "IpLabeler",
    "Metrics",
    "RollupGauges",
]

OUTCOMES = frozenset({"delivered", "deferred", "bounced", "expired", "rejected", "suppressed"})
_PROVIDERS = frozenset(p.value for p in Provider)
_ENGAGEMENT = {
    EventType.OPENED: "open",
    EventType.CLICKED: "click",
    EventType.UNSUBSCRIBED: "unsubscribe",
    EventType.REPLIED: "reply",
}
_BOUNCED = EventType.BOUNCED
_DELIVERED = EventType.DELIVERED
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ENGAGEMENT_BY_NAME = {t.value: kind for t, kind in _ENGAGEMENT.items()}
DELAY_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 5 * 86400)


class DomainLabeler:
    """Maps a recipient domain to a bounded ``domain`` label value."""

    def __init__(self, allow: Iterable[str] = (), top: Iterable[str] = ()) -> None:
        self._allow = {d.lower() for d in allow}
        self._top: set[str] = set()
        self.set_top(top)

    def set_top(self, top: Iterable[str]) -> None:
        self._top = {d.lower() for d in top}

    def __call__(self, domain: str | None) -> str:
        if domain and (domain in self._allow or domain in self._top):
            return domain
        return "other"


class IpLabeler:
    """Maps a sending IP to a bounded ``sending_ip`` label value: the configured addresses
    plus the ``top`` busiest ones of the last evaluation, the rest ``other``.  Sending
    domains and streams are labelled the same way."""

    def __init__(self, allow: Iterable[str] = (), top: int = 20) -> None:
        self._allow = frozenset(allow)
        self.top = top

    def labels(self, volumes: dict[str, float]) -> dict[str, str]:
        """Every IP of ``volumes`` (ip -> attempts) with its label value."""
        busiest = sorted(volumes, key=lambda ip: (-volumes[ip], ip))[: self.top]
        keep = self._allow | set(busiest)
        return {ip: ip if ip in keep else "other" for ip in volumes}


def source_kind(source: str) -> str:
    """The bounded ``source`` label: the collector, without its host part."""
    return source.partition(":")[0]


class _DomainState(Protocol):
    """One (provider, domain) as ``monitor.rollup.DomainState`` describes it."""

    @property
    def provider(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def rejecting(self) -> int: ...
    @property
    def open(self) -> bool: ...


class _SubjectState(Protocol):
    """One detector's subject as ``monitor.rollup.SubjectState`` describes it."""

    @property
    def kind(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def open(self) -> bool: ...
    @property
    def value(self) -> float | None: ...
    @property
    def numerator(self) -> float: ...
    @property
    def denominator(self) -> float: ...
    @property
    def extra(self) -> dict[str, float | None]: ...


class _LatencyState(Protocol):
    """One subject's latency in one window as ``monitor.rollup.latency.SubjectLatency``
    describes it."""

    @property
    def level(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def window(self) -> str: ...
    @property
    def deliveries(self) -> int: ...
    @property
    def p50(self) -> float | None: ...
    @property
    def p95(self) -> float | None: ...


#: Detector kinds judged per (provider, domain), per provider and per (provider, sending
#: IP) (monitor.rollup.detectors).
DOMAIN_KINDS = ("domain_rejecting", "bounce_rate", "deferral_spike", "queue_age")
PROVIDER_KINDS = ("complaint_rate", "provider_silent", "delivery_latency")
SENDING_IP_KINDS = ("sending_ip_rejecting", "sending_ip_bounce_rate")
SENDER_DOMAIN_KINDS = ("sender_domain_rejecting", "sender_domain_bounce_rate")
STREAM_KINDS = ("stream_rejecting", "stream_bounce_rate")
#: Sender-side levels: label name, what the incident gauge's help calls the subject, kinds.
_SENDER_LEVELS = {
    "sending_ip": ("sending_ip", "sending IP", SENDING_IP_KINDS),
    "sender_domain": ("sender_domain", "sending domain", SENDER_DOMAIN_KINDS),
    "stream": ("stream", "stream", STREAM_KINDS),
}


def _sender_ratios(level: str, words: str) -> dict[str, tuple[str, str]]:
    """A sender-side level's share gauges, pooled like the domain ones: kind -> (name, help)."""
    return {
        f"{level}_rejecting": (
            f"mailmon_{level}_rejecting_ratio",
            f"Share of a {words}'s attempts at a provider failing for reputation/policy/rate/"
            "block reasons (last 5 minutes, event time), rollup engine.",
        ),
        f"{level}_bounce_rate": (
            f"mailmon_{level}_bounce_ratio",
            f"Bounced / finished recipients of a {words} at a provider in the last hour "
            "(event time), rollup engine.",
        ),
    }


#: Share gauges pooled as numerator / denominator: kind -> (name, help).
_DOMAIN_RATIOS = {
    "bounce_rate": (
        "mailmon_domain_bounce_ratio",
        "Bounced / finished recipients in the last hour (event time), rollup engine.",
    ),
    "deferral_spike": (
        "mailmon_domain_deferral_ratio",
        "Deferred / all attempts in the last 15 minutes (event time), rollup engine.",
    ),
}


class RollupGauges:
    """The rollup engine's gauges, built at scrape time from its last evaluation.

    Domains outside the labeler aggregate into ``other``: an incident gauge is 1 when any
    of them has an open incident, a ratio is their pooled share, a count their sum.
    Providers outside the known set become ``other`` the same way.
    """

    def __init__(
        self,
        labeler: DomainLabeler,
        ips: IpLabeler | None = None,
        sender_domains: IpLabeler | None = None,
        streams: IpLabeler | None = None,
    ) -> None:
        self._labeler = labeler
        # Sending IPs, sending domains and streams: the configured values plus the busiest.
        self._senders = {
            "sending_ip": ips or IpLabeler(),
            "sender_domain": sender_domains or IpLabeler(),
            "stream": streams or IpLabeler(),
        }
        self._lock = threading.Lock()
        self._states: list[_DomainState] = []
        self._subjects: list[_SubjectState] = []
        self._latency: list[_LatencyState] = []

    def update(
        self,
        states: Iterable[_DomainState],
        subjects: Iterable[_SubjectState] = (),
        latency: Iterable[_LatencyState] = (),
    ) -> None:
        with self._lock:
            self._states = list(states)
            self._subjects = list(subjects)
            self._latency = list(latency)

    def _provider(self, provider: str) -> str:
        return provider if provider in _PROVIDERS else "other"

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            states = list(self._states)
            subjects = list(self._subjects)
            latency = list(self._latency)
        pooled: dict[tuple[str, str], list[int]] = {}
        for s in states:
            pair = (self._provider(s.provider), self._labeler(s.domain))
            slot = pooled.setdefault(pair, [0, 0, 0])
            slot[0] += s.attempts
            slot[1] += s.rejecting
            slot[2] = max(slot[2], int(s.open))
        rejecting = GaugeMetricFamily(
            "mailmon_domain_rejecting",
            "1 while the rollup engine has an open domain-rejecting incident.",
            labels=["provider", "domain"],
        )
        ratio = GaugeMetricFamily(
            "mailmon_domain_rejecting_ratio",
            "Share of attempts failing for reputation/policy/rate/block reasons (short window).",
            labels=["provider", "domain"],
        )
        for (provider, domain), (attempts, failing, is_open) in sorted(pooled.items()):
            rejecting.add_metric([provider, domain], is_open)
            if attempts:
                ratio.add_metric([provider, domain], failing / attempts)
        yield rejecting
        yield ratio
        sender_kinds = {k for _l, _w, kinds in _SENDER_LEVELS.values() for k in kinds}
        yield from self._subject_families([s for s in subjects if s.kind not in sender_kinds])
        yield from self._latency_families("domain", "domain", "domain", latency, self._labeler)
        for level, (name, words, kinds) in _SENDER_LEVELS.items():
            chosen = [s for s in subjects if s.kind in kinds]
            label = self._sender_labels(level, chosen, latency)
            yield from self._sender_families(level, name, words, chosen, label)
            yield from self._latency_families(level, name, words, latency, label.__getitem__)

    def _sender_labels(
        self, level: str, subjects: list[_SubjectState], latency: list[_LatencyState]
    ) -> dict[str, str]:
        """A sender-side level's values with their label: the busiest by the detectors'
        volumes (a value only the latency saw, by its deliveries)."""
        volumes: dict[str, float] = {}
        for s in subjects:
            volumes[s.domain] = max(volumes.get(s.domain, 0.0), s.denominator)
        seen: dict[str, float] = {}
        for t in latency:
            if t.level == level and t.value not in volumes:
                seen[t.value] = max(seen.get(t.value, 0.0), float(t.deliveries))
        return self._senders[level].labels(volumes | seen)

    def _latency_families(
        self,
        level: str,
        name: str,
        words: str,
        latency: list[_LatencyState],
        label: Callable[[str], str],
    ) -> Iterator[Metric]:
        """Per (provider, subject) and window: the latency quantiles and their deliveries.
        Quantiles do not pool: values labelled ``other`` (and unknown providers) get the
        count only."""
        seconds = GaugeMetricFamily(
            f"mailmon_{level}_delivery_latency_seconds",
            f"Submission-to-delivery latency quantile of a {words}'s deliveries at a provider "
            "(window 1h: exact; 24h: the whole hours before, from a histogram).",
            labels=["provider", name, "window", "quantile"],
        )
        count = GaugeMetricFamily(
            f"mailmon_{level}_delivery_latency_deliveries",
            f"Deliveries of a {words} at a provider behind its latency quantiles, per window.",
            labels=["provider", name, "window"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        quantiles: list[tuple[str, str, str, str, float]] = []
        for t in latency:
            if t.level != level:
                continue
            provider, value = self._provider(t.provider), label(t.value)
            k = (provider, value, t.window)
            counts[k] = counts.get(k, 0) + t.deliveries
            if provider == t.provider and value == t.value:
                for q, v in (("0.5", t.p50), ("0.95", t.p95)):
                    if v is not None:
                        quantiles.append((*k, q, v))
        for k, n in sorted(counts.items()):
            count.add_metric(list(k), n)
        for *labels, v in sorted(quantiles):
            seconds.add_metric(labels, v)
        yield seconds
        yield count

    def _sender_families(
        self,
        level: str,
        name: str,
        words: str,
        subjects: list[_SubjectState],
        label: dict[str, str],
    ) -> Iterator[Metric]:
        """Per (provider, sender-side value): open incidents and shares; values beyond the
        label budget pool into ``other`` (an incident gauge is then 1 when any of them is)."""
        opened = GaugeMetricFamily(
            f"mailmon_{level}_incident_open",
            f"1 while the rollup engine has an open incident of this kind for the {words} "
            "at the provider.",
            labels=["kind", "provider", name],
        )
        is_open: dict[tuple[str, str, str], int] = {}
        shares: dict[tuple[str, str, str], list[float]] = {}
        for s in subjects:
            k = (s.kind, self._provider(s.provider), label[s.domain])
            is_open[k] = max(is_open.get(k, 0), int(s.open))
            slot = shares.setdefault(k, [0.0, 0.0])
            slot[0] += s.numerator
            slot[1] += s.denominator
        for k, value in sorted(is_open.items()):
            opened.add_metric(list(k), value)
        yield opened
        for kind, (metric, help_text) in _sender_ratios(level, words).items():
            family = GaugeMetricFamily(metric, help_text, labels=["provider", name])
            for (k_kind, provider, ip), (num, den) in sorted(shares.items()):
                if k_kind == kind and den:
                    family.add_metric([provider, ip], num / den)
            yield family

    def _subject_families(self, subjects: list[_SubjectState]) -> Iterator[Metric]:
        domain_open = GaugeMetricFamily(
            "mailmon_domain_incident_open",
            "1 while the rollup engine has an open incident of this kind for the domain.",
            labels=["kind", "provider", "domain"],
        )
        provider_open = GaugeMetricFamily(
            "mailmon_provider_incident_open",
            "1 while the rollup engine has an open incident of this kind for the provider.",
            labels=["kind", "provider"],
        )
        opened: dict[tuple[str, ...], int] = {}
        shares: dict[tuple[str, str, str], list[float]] = {}
        stuck: dict[tuple[str, str], list[float]] = {}
        complaints: dict[str, list[float]] = {}
        latency: dict[tuple[str, str], float] = {}
        for s in subjects:
            provider = self._provider(s.provider)
            if s.kind in PROVIDER_KINDS:
                k: tuple[str, ...] = (s.kind, provider)
            else:
                k = (s.kind, provider, self._labeler(s.domain))
            opened[k] = max(opened.get(k, 0), int(s.open))
            if s.kind in _DOMAIN_RATIOS:
                slot = shares.setdefault((s.kind, provider, self._labeler(s.domain)), [0.0, 0.0])
                slot[0] += s.numerator
                slot[1] += s.denominator
            elif s.kind == "complaint_rate":
                pair = complaints.setdefault(provider, [0.0, 0.0])
                pair[0] += s.numerator
                pair[1] += s.denominator
            elif s.kind == "queue_age":
                slot = stuck.setdefault((provider, self._labeler(s.domain)), [0.0, 0.0])
                slot[0] += s.numerator
                slot[1] = max(slot[1], s.extra.get("oldest_age") or 0.0)
            elif s.kind == "delivery_latency" and provider == s.provider:
                # Quantiles do not pool: only the known providers get a latency series.
                for q, name in (("0.5", "p50"), ("0.95", "p95")):
                    value = s.extra.get(name)
                    if value is not None:
                        latency[(provider, q)] = value
        for k, is_open in sorted(opened.items()):
            (provider_open if len(k) == 2 else domain_open).add_metric(list(k), is_open)
        yield domain_open
        yield provider_open
        for kind, (name, help_text) in _DOMAIN_RATIOS.items():
            family = GaugeMetricFamily(name, help_text, labels=["provider", "domain"])
            for (k_kind, provider, domain), (num, den) in sorted(shares.items()):
                if k_kind == kind and den:
                    family.add_metric([provider, domain], num / den)
            yield family
        family = GaugeMetricFamily(
            "mailmon_provider_complaint_ratio",
            "Complaints / delivered over the last 24 hours (event time), rollup engine.",
            labels=["provider"],
        )
        for provider, (num, den) in sorted(complaints.items()):
            if den:
                family.add_metric([provider], num / den)
        yield family
        family = GaugeMetricFamily(
            "mailmon_provider_delivery_latency_seconds",
            "Submission-to-delivery latency quantile of the last hour's deliveries.",
            labels=["provider", "quantile"],
        )
        for (provider, q), value in sorted(latency.items()):
            family.add_metric([provider, q], value)
        yield family
        count = GaugeMetricFamily(
            "mailmon_domain_queue_stuck",
            "Deliveries still deferred longer than the queue-age detector's max age.",
            labels=["provider", "domain"],
        )
        oldest = GaugeMetricFamily(
            "mailmon_domain_queue_oldest_age_seconds",
            "Age of the oldest stuck deferred delivery since its first attempt (0: none).",
            labels=["provider", "domain"],
        )
        for (provider, domain), (n, age) in sorted(stuck.items()):
            count.add_metric([provider, domain], n)
            oldest.add_metric([provider, domain], age)
        yield count
        yield oldest

    def describe(self) -> Iterator[Metric]:
        return iter(())


class DelayHistogram:
    """``mailmon_delivery_delay_seconds``: per provider, bucket counts and a sum kept exact.

    The sum is kept in whole microseconds, so a sum seeded from the store and one added up
    event by event in another order are the same number (float addition is not associative).
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
        self.rollup = RollupGauges(self.labeler, ips, sender_domains, streams)
        r.register(self.rollup)
        self._latest: dict[str, float] = {}

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
            provider = provider if provider in _PROVIDERS else "other"
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
            bounded = provider if provider in _PROVIDERS else "other"
            self.delay.add(bounded, self.delay.bucket(seconds), n, n * delay_micros(seconds))
        latest: dict[str, float] = {}
        for source, moment in newest.items():
            kind_of = source_kind(source)
            latest[kind_of] = max(latest.get(kind_of, 0.0), moment.timestamp())
        for source, ts in latest.items():
            if ts > self._latest.get(source, 0.0):
                self._latest[source] = ts
                self.last_event.labels(source).set(ts)

    def seed(self, totals: Totals) -> None:
        """Start from what the store has counted (``monitor.store.totals``), as observe() would.

        Called once at start-up, before anything is observed: a restarted process then
        shows the counters an uninterrupted one would.
        """
        tally: dict[tuple[Any, ...], int] = {}

        def add(key: tuple[Any, ...], n: int) -> None:
            tally[key] = tally.get(key, 0) + n

        def bounded(provider: str | None) -> str:
            return provider if provider in _PROVIDERS else "other"

        for provider, domain, outcome, n in totals.outcomes:
            where = (bounded(provider), self.labeler(domain))
            if outcome in OUTCOMES:
                add((self.deliveries, *where, outcome), n)
            elif outcome in _ENGAGEMENT_BY_NAME:
                add((self.engagement, *where, _ENGAGEMENT_BY_NAME[outcome]), n)
        latest: dict[str, float] = {}
        for source, n, newest in totals.sources:
            kind = source_kind(source)
            add((self.ingested, kind), n)
            latest[kind] = max(latest.get(kind, 0.0), newest)
        for d in totals.details:
            where = (bounded(d.provider), self.labeler(d.recipient_domain))
            if d.type == EventType.BOUNCED.value:
                reason = d.reason if d.reason in REASONS else "undefined"
                add((self.bounces, *where, reason, "true" if d.hard else "false"), d.count)
            else:
                add((self.complaints, *where, source_kind(d.source)), d.count)
        for delayed_at, index, n, micros in totals.delays:
            self.delay.add(bounded(delayed_at), index, n, micros)
        for counts in totals.inputs:
            read_by = source_kind(counts.source)
            add((self.lines, read_by), counts.lines)
            for why, n in counts.rejected.items():
                add((self.rejected, read_by, why), n)
        for (counter, *labels), n in tally.items():
            if n:
                counter.labels(*labels).inc(n)
        for source, ts in latest.items():
            if ts > self._latest.get(source, 0.0):
                self._latest[source] = ts
                self.last_event.labels(source).set(ts)

    def count_input(self, source: str, lines: int, unparsed: int) -> None:
        """Count lines read and lines that could not be parsed."""
        kind = source_kind(source)
        if lines:
            self.lines.labels(kind).inc(lines)
        if unparsed:
            self.rejected.labels(kind, "unparsed").inc(unparsed)
