"""The rollup engine: windows from counters -> detectors -> incidents and gauges, in event time.

::

    engine = RollupEngine(store, gauges=metrics.rollup)        # every detector of issue 5
    engine = RollupEngine(store, RejectingDetector(min_attempts=20))  # just this one
    result = engine.evaluate(at)           # at: UNIX seconds of event time
    engine.replay(start, end, step=300)    # back-filled logs: the same incidents as live

``evaluate`` is idempotent: the same ``at`` twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, select

from monitor.rollup import incidents
from monitor.rollup.deliveries import QueueReader
from monitor.rollup.detectors import (
    Decision,
    Detector,
    LatencyDetector,
    LatencyStats,
    ProviderSilentDetector,
    QueueAgeDetector,
    QueueStats,
    RejectingDetector,
    default_detectors,
)
from monitor.rollup.evidence import empty_input, empty_windows, evidence_of, input_evidence
from monitor.rollup.latency import LatencyReader, LatencyTable, SubjectLatency
from monitor.rollup.views import SENDER_DOMAINS, SENDING_IPS, STREAMS, Key
from monitor.rollup.windows import (
    BASELINE_SECONDS,
    REST,
    SHORT,
    WEEK_SECONDS,
    WEEKLY,
    WEEKLY_MIN,
    WINDOWS,
    Counts,
    WindowReader,
    align,
    with_baselines,
)
from monitor.store import Store
from monitor.store.schema import BUCKET_SECONDS, counters

HOUR = 3600

__all__ = [
    "SENDER_LEVELS",
    "DomainState",
    "Evaluation",
    "GaugeSink",
    "RollupEngine",
    "SubjectState",
    "level_of",
    "newest_event_time",
    "subject_of",
]

#: Kinds whose detectors compare a share with the subject's baseline: their incident time
#: is left out of that baseline.
_BASELINE_KINDS = frozenset(
    {
        "domain_rejecting",
        "provider_rejecting",
        "bounce_rate",
        "deferral_spike",
        "sending_ip_rejecting",
        "sending_ip_bounce_rate",
        "sender_domain_rejecting",
        "sender_domain_bounce_rate",
        "stream_rejecting",
        "stream_bounce_rate",
    }
)
#: The window readers' levels: which counters a subject's key comes from.
#: The sender-side levels: their counters and how an incident names its subject.
SENDER_LEVELS = {
    "sending_ip": (SENDING_IPS, "sending IP"),
    "sender_domain": (SENDER_DOMAINS, "sending domain"),
    "stream": (STREAMS, "stream"),
}


#: Each default detector's kind -> its level (a stored incident names its kind only).
_LEVELS = {d.kind: d.level for d in default_detectors()}


def level_of(kind: str) -> str:
    """The level an incident kind judges: its detector's, a sender-side one by its prefix,
    else ``domain``."""
    if kind in _LEVELS:
        return _LEVELS[kind]
    for level in SENDER_LEVELS:
        if kind.startswith(f"{level}_"):
            return level
    return "domain"


def subject_of(kind: str, provider: str, domain: str) -> str:
    """An incident's subject in words: ``domain`` is a sending IP, sending domain or stream
    for the sender-side kinds."""
    level = level_of(kind)
    if level in SENDER_LEVELS:
        return f"{SENDER_LEVELS[level][1]} {domain} at {provider}"
    return f"{domain} ({provider})" if domain else provider


@dataclass(frozen=True, slots=True)
class DomainState:
    """The gauge-facing state of one (provider, domain) after an evaluation (rejecting)."""

    provider: str
    domain: str
    attempts: int
    rejecting: int
    open: bool


@dataclass(frozen=True, slots=True)
class SubjectState:
    """One detector's gauge-facing state of one subject (domain ``""``: the provider)."""

    kind: str
    provider: str
    domain: str
    open: bool
    value: float | None
    numerator: float
    denominator: float
    extra: dict[str, float | None] = field(default_factory=dict)


@dataclass(slots=True)
class Evaluation:
    """What one ``evaluate(at)`` did: ``opened``/``closed`` list the domain-rejecting subjects
    (the page), ``incidents_opened``/``incidents_closed`` every kind as (kind, provider, domain)."""

    at: float
    opened: list[Key] = field(default_factory=list)
    closed: list[Key] = field(default_factory=list)
    states: list[DomainState] = field(default_factory=list)
    subjects: list[SubjectState] = field(default_factory=list)
    incidents_opened: list[tuple[str, str, str]] = field(default_factory=list)
    incidents_closed: list[tuple[str, str, str]] = field(default_factory=list)
    #: The evidence each incident of ``incidents_opened`` was opened with.
    evidence: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    #: Delivery latency per subject and window (read when a latency detector or gauges ask).
    latency: list[SubjectLatency] = field(default_factory=list)


class GaugeSink(Protocol):
    """Receives the states after each evaluation (``monitor.gauges.RollupGauges``)."""

    def update(
        self,
        states: list[DomainState],
        subjects: Sequence[SubjectState] = (),
        latency: Sequence[SubjectLatency] = (),
    ) -> None: ...


def newest_event_time(store: Store, *, not_after: float | None = None) -> float | None:
    """The start of the newest counter bucket: the live engine evaluates there.

    That bucket may still be filling; every bucket before it is complete (logs arrive in
    order), so a live evaluation sees exactly what a replay of the same time sees.
    Buckets after ``not_after`` are passed over: a store that took in events dated far
    ahead (before the pipeline refused them) must not move the rollups' "now" there.
    """
    query = select(func.max(counters.c.bucket))
    if not_after is not None:
        query = query.where(counters.c.bucket <= not_after)
    with store.engine.connect() as conn:
        newest = conn.execute(query).scalar()
    return None if newest is None else float(newest)


def _input_of(detector: Detector) -> str:
    """The engine input a detector judges: domain or provider windows, latency, queue."""
    return detector.level if detector.source == "counters" else detector.source


def _windows_of(detector: Any) -> list[str]:
    """The windows a detector judges: its ladder's, else its one window."""
    return [w for w, _minimum in getattr(detector, "ladder", ())] or [detector.window]


class RollupEngine:
    """Evaluates detectors over the store's counters (and delivery rows) at event times."""

    def __init__(
        self,
        store: Store,
        detectors: Detector | Sequence[Detector] | None = None,
        *,
        gauges: GaugeSink | None = None,
        top_replies: int = 5,
        weeks: int = 4,
        min_weeks: int = 2,
        max_domains: int = 0,
        domains: Sequence[str] = (),
    ) -> None:
        """``detectors``: one detector, a sequence of them, or None for every default one;
        ``weeks``: how many weeks back the same-hour-of-week baseline looks (0: none), of
        which ``min_weeks`` must be usable; ``max_domains`` (0: no limit): only that many
        recipient domains (``Choice``: the busiest, then the day's new ones) and
        ``domains`` are judged one by one, the others add up per provider (``WindowReader``,
        and likewise the latency per domain), so memory is bounded in the number of domains
        while the provider level still sees every attempt; the sending IPs, sending domains
        and streams are bounded by the same number."""
        if weeks < 0 or min_weeks < 1:
            raise ValueError("weeks must be >= 0 and min_weeks >= 1")
        self.weeks = weeks
        self.min_weeks = min_weeks
        # Per level and subject, the pooled and least same-hour counts for its reader's
        # current slots.
        self._weekly_cache: dict[str, tuple[object, dict[Key, tuple[Counts, Counts]]]] = {}
        self.store = store
        if detectors is None:
            detectors = default_detectors()
        elif not isinstance(detectors, Sequence):
            detectors = (detectors,)
        self.detectors: tuple[Detector, ...] = tuple(detectors)
        kinds = [d.kind for d in self.detectors]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"one detector per kind: {kinds}")
        self.gauges = gauges
        self.top_replies = top_replies
        self.windows = WindowReader(max_subjects=max_domains, always=domains)
        # A sender-side level is read only when a detector judges it.
        levels = {d.level for d in self.detectors}
        self.sender_windows = {
            level: WindowReader(view=view, max_subjects=max_domains)
            for level, (view, _words) in SENDER_LEVELS.items()
            if level in levels
        }
        self.latency = LatencyReader()
        self.queue = QueueReader()

    # -- inputs ---------------------------------------------------------------

    def _windows(
        self, conn: Any, reader: WindowReader, level: str, end: float
    ) -> tuple[dict[Key, dict[str, Counts]], dict[Key, int]]:
        """One reader's windows with baselines, minus that level's incident time."""
        table = reader.read(conn, end)
        spans = self._incident_spans(conn, end, level)
        excluded, seconds = reader.incident_counts(conn, spans, end)
        return {key: with_baselines(w, excluded.get(key)) for key, w in table.items()}, seconds

    def _inputs(
        self, conn: Any, end: float
    ) -> tuple[dict[str, dict[Key, Any]], dict[str, dict[Key, int]], LatencyTable | None]:
        """Every detector source's input per subject, per level the incident seconds
        excluded from the baselines, and the latency per subject when a latency detector or
        the gauges want it."""
        domains, seconds = self._windows(conn, self.windows, "domain", end)
        excluded = {"domain": seconds}
        for windows in domains.values():
            windows["same_hour_min"] = Counts()
        if self.weeks:
            self._weekly(conn, self.windows, "domain", end, domains)
        providers: dict[Key, dict[str, Counts]] = {}
        for (provider, _domain), windows in domains.items():
            per = providers.setdefault((provider, ""), {})
            for name, counts in windows.items():
                if name in (WEEKLY, WEEKLY_MIN):  # per domain only: minima do not add up
                    continue
                per[name] = per.get(name, Counts()) + counts
        silent = [d for d in self.detectors if isinstance(d, ProviderSilentDetector)]
        if silent:
            for provider, days in self.windows.same_hour(conn, end, silent[0].days).items():
                key = (provider, "")
                per = providers.setdefault(key, empty_windows())
                # The quietest of those hours, as attempts (ProviderSilentDetector).
                per["same_hour_min"] = Counts(delivered=min(days))
        out: dict[str, dict[Key, Any]] = {"domain": domains, "provider": providers}
        for level, reader in self.sender_windows.items():
            out[level], excluded[level] = self._windows(conn, reader, level, end)
            if self.weeks:
                self._weekly(conn, reader, level, end, out[level])
        latency = next((d for d in self.detectors if isinstance(d, LatencyDetector)), None)
        table = None
        if latency is not None or self.gauges is not None:
            table = self.latency.read(conn, end, latency, kept=self._kept())
            out["latency"] = table.providers
        for detector in self.detectors:
            if isinstance(detector, QueueAgeDetector):
                names = {domain for _provider, domain in domains if domain != REST}
                newest = conn.execute(select(func.max(counters.c.bucket))).scalar()
                out["queue"] = self.queue.read(conn, end, names, detector, newest)
        return out, excluded, table

    def _kept(self) -> dict[str, list[str] | None]:
        """Per level, the subjects its window reader keeps on their own (the latency reader
        keeps the same)."""
        readers = {"domain": self.windows, **self.sender_windows}
        return {level: reader.kept() for level, reader in readers.items()}

    def _incident_spans(
        self, conn: Any, end: float, level: str, seconds: float = BASELINE_SECONDS
    ) -> dict[Key, list[tuple[float, float]]]:
        """Each subject's share-incident time in the last ``seconds``: from the detector's
        window before the start to the end (``end`` while open); it stays out of the
        subject's baselines.  Only the kinds of ``level`` judged against a baseline share
        count."""
        lookback = {d.kind: max(WINDOWS[w] for w in _windows_of(d)) for d in self.detectors}
        spans: dict[Key, list[tuple[float, float]]] = {}
        for row in incidents.overlapping(conn, end - seconds, end):
            kind = row["kind"]
            if kind not in _BASELINE_KINDS or level_of(kind) != level:
                continue
            stop = end if row["ended_at"] is None else min(row["ended_at"], end)
            start = row["started_at"] - lookback.get(row["kind"], WINDOWS[SHORT])
            spans.setdefault((row["provider"], row["domain"]), []).append((start, stop))
        return spans

    def _weekly(
        self,
        conn: Any,
        reader: WindowReader,
        level: str,
        end: float,
        table: dict[Key, dict[str, Counts]],
    ) -> None:
        """Add ``WEEKLY`` and ``WEEKLY_MIN`` to each subject's windows of ``level``: the same
        hour of the week in the last ``weeks`` weeks, leaving out hours that overlap the
        subject's incidents; fewer than ``min_weeks`` usable hours leave both empty (no
        pattern)."""
        slots = reader.weekly(conn, end, self.weeks)
        spans = self._incident_spans(conn, end, level, self.weeks * WEEK_SECONDS + HOUR)
        cached = self._weekly_cache.get(level)
        if cached is None or cached[0] is not slots:  # a new hour: pool afresh
            cached = self._weekly_cache[level] = (slots, {})
        cache = cached[1]
        none = (Counts(), Counts())
        for key, windows in table.items():
            own = spans.get(key)
            pair = None if own else cache.get(key)
            if pair is None:
                usable = [
                    counts
                    for hour, counts in slots.get(key, ())
                    if not own or not any(a < hour + HOUR and hour < b for a, b in own)
                ]
                pair = none
                if len(usable) >= self.min_weeks:
                    pooled, least = usable[0], usable[0]
                    for counts in usable[1:]:
                        pooled, least = pooled + counts, least.least(counts)
                    pair = (pooled, least)
                if not own:  # incident spans move with ``end``: not cached
                    cache[key] = pair
            windows[WEEKLY], windows[WEEKLY_MIN] = pair

    # -- evaluation -------------------------------------------------------------

    def evaluate(self, at: float) -> Evaluation:
        """Judge every subject of every detector over the windows ending at ``at``.

        Reading is one snapshot; only when something opens or closes does a short write
        transaction follow, re-checking the incidents so that a concurrent evaluation of
        the same time cannot duplicate one (the unique index backs this up).
        """
        end = float(align(at))
        result = Evaluation(at=end)
        with self.store.engine.connect() as conn:
            inputs, excluded, table = self._inputs(conn, end)
            current = incidents.active_all(conn, end)
        to_open: list[tuple[Any, Key, Decision]] = []
        to_close: list[tuple[Any, Key, Decision]] = []
        open_now: set[tuple[str, Key]] = set()
        decisions: dict[tuple[str, Key], Decision] = {}
        for detector in self.detectors:
            source = _input_of(detector)
            subjects = inputs.get(source, {})
            active = current.get(detector.kind, {})
            skip: frozenset[str] = getattr(detector, "skip_providers", frozenset())
            for key in sorted(subjects.keys() | active.keys()):
                if key[0] in skip or (key[1] == REST and detector.level != "provider"):
                    continue  # the rest counts towards its provider only
                decision = detector.decide(subjects.get(key) or empty_input(detector))
                decisions[(detector.kind, key)] = decision
                row = active.get(key)
                if row is None and decision.firing:
                    to_open.append((detector, key, decision))
                elif row is not None and row["ended_at"] is None and decision.resolved:
                    to_close.append((detector, key, decision))
                elif row is not None:
                    open_now.add((detector.kind, key))
        if to_open or to_close:
            with self.store.engine.begin() as conn:
                fresh = incidents.active_all(conn, end)
                recent: LatencyTable | None = table
                for detector, key, decision in to_open:
                    open_now.add((detector.kind, key))
                    if key in fresh.get(detector.kind, {}):
                        continue
                    source = _input_of(detector)
                    sender = SENDER_LEVELS.get(detector.level)
                    evidence = evidence_of(
                        conn, detector, key, end, inputs[source][key], decision.window,
                        inputs, self.queue, self.top_replies, sender[0] if sender else None,
                    )  # fmt: skip
                    evidence |= decision.as_dict()
                    level_excluded = excluded.get(detector.level, {})
                    evidence["baseline_excluded_seconds"] = level_excluded.get(key, 0)
                    evidence["subject"] = subject_of(detector.kind, *key)
                    level = level_of(detector.kind)
                    if detector.level == level and key[1]:  # a domain or sender-side subject
                        if recent is None:  # not read for the gauges: the last hour alone, once
                            recent = self.latency.read(
                                conn, end, daily=False, kept=self._kept()
                            )
                        evidence["latency_1h"] = recent.of(level, key).as_dict()
                    incidents.open_incident(conn, detector.kind, *key, end, evidence)
                    result.incidents_opened.append((detector.kind, *key))
                    result.evidence[(detector.kind, *key)] = evidence
                    if detector.kind == RejectingDetector.kind:
                        result.opened.append(key)
                for detector, key, decision in to_close:
                    row = fresh.get(detector.kind, {}).get(key)
                    if row is None or row["ended_at"] is not None:
                        continue
                    source = _input_of(detector)
                    data = inputs.get(source, {}).get(key)
                    resolution = input_evidence(detector, data) | decision.as_dict()
                    incidents.close(conn, row, end, resolution)
                    result.incidents_closed.append((detector.kind, *key))
                    if detector.kind == RejectingDetector.kind:
                        result.closed.append(key)
        for (kind, key), decision in sorted(decisions.items()):
            extra: dict[str, float | None] = {}
            if kind == "delivery_latency":
                stats = inputs["latency"].get(key) or LatencyStats()
                extra = {"p50": stats.p50, "p95": stats.p95}
            elif kind == "queue_age":
                extra = {"oldest_age": (inputs["queue"].get(key) or QueueStats()).oldest_age}
            result.subjects.append(
                SubjectState(kind, key[0], key[1], (kind, key) in open_now, decision.value,
                             decision.numerator, decision.denominator, extra)
            )  # fmt: skip
            if kind == RejectingDetector.kind:
                short = (inputs["domain"].get(key) or empty_windows())[SHORT]
                is_open = (kind, key) in open_now
                result.states.append(
                    DomainState(key[0], key[1], short.attempts, short.rejecting, is_open)
                )
        if table is not None:
            result.latency = table.states()
        if self.gauges is not None:
            self.gauges.update(result.states, result.subjects, result.latency)
        return result

    def replay(self, start: float, end: float, step: float = 300) -> Iterator[Evaluation]:
        """Evaluate at ``start``, ``start + step``, ... up to and including ``end``."""
        if step < BUCKET_SECONDS:
            raise ValueError(f"step must be at least {BUCKET_SECONDS} s")
        at = float(align(start))
        while at <= end:
            yield self.evaluate(at)
            at += step
