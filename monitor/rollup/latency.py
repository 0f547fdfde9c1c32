"""Delivery latency (submitted -> delivered) from the delivered rows of the deliveries table.

Per provider (the latency detector's input) and per (provider, recipient domain / sending IP /
sending domain / stream), over two windows:

- ``1h``: exact quantiles of the rows delivered in the last hour, read through the partial
  index on ``final_at`` (schema 4) at every evaluation, grouped by the database into one row
  per subject and distinct latency (``_Sample``);
- ``24h``: the 24 whole event-time hours before the current one, from a fixed histogram
  (``EDGES``) aggregated in SQL per hour and dimension value.  Each hour is read once and kept
  while a window needs it, so an evaluation every minute reads only the last hour's rows and a
  new hour one hour more.  Rows stored late for a kept hour (a back-filled log) are seen after
  the next rebuild: when the evaluation time moves backwards or crosses a UTC day, as the
  counter windows (``WindowReader``).

The provider's baseline p95 (the detector's yardstick) comes from the same cached hours: the 24
before the hour-aligned start of the short window, never inside it.  Our own notices (stream
``ndr``) are left out; a delivery whose sending IP, stream or sending domain is unknown has no
latency at that level (as the counters: only known subjects).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from sqlalchemy import Connection, Integer, bindparam, case, cast, func, literal, or_, select

from monitor.rollup.detectors import LatencyDetector, LatencyStats
from monitor.rollup.views import Key
from monitor.rollup.windows import REST, align
from monitor.store.schema import deliveries

__all__ = [
    "EDGES",
    "LEVELS",
    "WINDOWS",
    "Latency",
    "LatencyReader",
    "LatencyTable",
    "SubjectLatency",
    "quantile",
]

MINUTE = 60
HOUR = 3600
DAY = 24 * HOUR
#: Histogram edges (seconds) for the 24 h quantiles: fine where mail usually lands.
EDGES = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200,
         4 * HOUR, 8 * HOUR, 12 * HOUR, 24 * HOUR, 48 * HOUR, 120 * HOUR)  # fmt: skip
#: The per-subject levels, named as the engine's (``SENDER_LEVELS`` and ``domain``).
LEVELS = ("domain", "sending_ip", "sender_domain", "stream")
WINDOWS = ("1h", "24h")
_DAY_HOURS = 24

#: One hour's histograms: level ("provider" or one of LEVELS) -> (provider, value) -> bins.
_Bins = dict[str, dict[Key, dict[int, int]]]
#: Per level, the values kept on their own (the window readers' choice); a level missing or
#: None keeps every value.  The others add up per provider as value ``REST``.
Kept = dict[str, list[str] | None]


@dataclass(frozen=True, slots=True)
class Latency:
    """How many deliveries a window holds and their latency p50 / p95 (None when none)."""

    deliveries: int = 0
    p50: float | None = None
    p95: float | None = None

    def as_dict(self) -> dict[str, Any]:
        # Milliseconds: differences of UNIX times near 1.8e9 carry float noise below that.
        return {"deliveries": self.deliveries, "p50": _ms(self.p50), "p95": _ms(self.p95)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


@dataclass(frozen=True, slots=True)
class SubjectLatency:
    """One subject's latency in one window, as the gauges receive it."""

    level: str
    provider: str
    value: str
    window: str
    deliveries: int
    p50: float | None
    p95: float | None


@dataclass(slots=True)
class LatencyTable:
    """What ``LatencyReader.read`` found: the detector's input per provider, and per level
    (``LEVELS``) and (provider, value) the latency per window (``WINDOWS``)."""

    providers: dict[Key, LatencyStats] = field(default_factory=dict)
    subjects: dict[str, dict[Key, dict[str, Latency]]] = field(default_factory=dict)

    def of(self, level: str, key: Key, window: str = "1h") -> Latency:
        """One subject's latency (empty when it had no deliveries then)."""
        return self.subjects.get(level, {}).get(key, {}).get(window) or Latency()

    def states(self) -> list[SubjectLatency]:
        """Every subject and window, flat and sorted (what the gauges take)."""
        return [
            SubjectLatency(level, key[0], key[1], window, w.deliveries, w.p50, w.p95)
            for level in LEVELS
            for key, windows in sorted(self.subjects.get(level, {}).items())
            for window, w in sorted(windows.items())
        ]


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` with linear interpolation (None when empty)."""
    return _interpolated(values.__getitem__, len(values), q)


def _interpolated(at: Callable[[int], float], n: int, q: float) -> float | None:
    """The ``q`` quantile of ``n`` sorted values, ``at(i)`` the i-th (0-based)."""
    if not n:
        return None
    pos = q * (n - 1)
    lo = int(pos)
    low, high = at(lo), at(min(lo + 1, n - 1))
    return low + (high - low) * (pos - lo)


def histogram_quantile(bins: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile of a histogram over EDGES (bin i: (EDGES[i-1], EDGES[i]]),
    interpolated linearly inside its bin."""
    total = sum(bins.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for i in range(len(EDGES) + 1):
        n = bins.get(i, 0)
        if seen + n >= rank and n:
            lo = EDGES[i - 1] if i else 0.0
            hi = EDGES[i] if i < len(EDGES) else EDGES[-1]
            return lo + (hi - lo) * (rank - seen) / n
        seen += n
    return float(EDGES[-1])


def _latency() -> Any:
    return deliveries.c.final_at - deliveries.c.submitted_at


def _delivered_between(start: float, end: float) -> list[Any]:
    return [
        deliveries.c.state == "delivered",
        deliveries.c.final_at >= start,
        deliveries.c.final_at < end,
        deliveries.c.submitted_at.is_not(None),
        deliveries.c.stream != "ndr",
    ]


def _sender_domain(dialect: str) -> Any:
    """The sender's domain in SQL as ``domain_of`` finds it: after the last '@', trimmed of
    blanks and a trailing dot, lower-cased ('' when there is none)."""
    sender = deliveries.c.sender
    after: Any
    if dialect == "postgresql":
        after = func.coalesce(func.substring(sender, literal("@([^@]*)$")), literal(""))
    else:  # SQLite: no "last index of"; trimming every non-'@' character leaves "...@"
        at = func.instr(sender, literal("@"))
        first = func.substr(sender, at + 1)  # after the first '@': the answer when it is the only
        head = func.rtrim(sender, func.replace(sender, literal("@"), literal("")))
        after = case(
            (at == 0, literal("")),
            (func.instr(first, literal("@")) == 0, first),
            else_=func.replace(sender, head, literal("")),
        )
    return func.lower(func.rtrim(func.trim(after), literal(".")))


def _merge(into: dict[int, int], bins: dict[int, int]) -> None:
    for i, n in bins.items():
        into[i] = into.get(i, 0) + n


class LatencyReader:
    """Latency per provider and per subject at an evaluation time (module docstring); the
    hourly histograms stay cached across evaluations."""

    def __init__(self) -> None:
        self._hours: dict[int, _Bins] = {}
        self._last: float | None = None  # the last evaluation time the hours served
        self._kept: Kept = {}  # the values the cached hours keep on their own
        self._short = _LastHour()
        # (hour, baseline, 24 h window): the sums of the cached hours for that hour
        self._summed: tuple[int, dict[Key, dict[int, int]], _Bins] | None = None

    def read(
        self,
        conn: Connection,
        at: float,
        detector: LatencyDetector | None = None,
        *,
        daily: bool = True,
        kept: Kept | None = None,
    ) -> LatencyTable:
        """The table at ``at``; ``daily=False`` skips the 24 h window and the baseline (an
        incident's evidence needs only the last hour); ``kept``: per level, the values
        kept on their own, so memory is bounded in their number (``Kept``)."""
        detector = detector or LatencyDetector()
        kept = {level: values for level, values in (kept or {}).items() if values is not None}
        end = align(at)
        hour = end // HOUR * HOUR
        baseline: dict[Key, dict[int, int]] = {}
        day: _Bins = {level: {} for level in LEVELS}
        if daily:
            # Hours hour-25h .. hour-1h: the baseline is the first 24, the 24 h window the last.
            wanted = [hour - k * HOUR for k in range(_DAY_HOURS + 1, 0, -1)]
            moved = self._last is not None and (end < self._last or end // DAY != self._last // DAY)
            if moved or kept != self._kept:
                self._hours, self._summed = {}, None
                self._kept = kept
            self._last = end
            self._hours = {h: self._hours[h] for h in wanted if h in self._hours}
            for h in wanted:
                if h not in self._hours:
                    self._hours[h] = _hour_bins(conn, h, kept)
                    self._summed = None
            if self._summed is None or self._summed[0] != hour:
                self._summed = (hour, *self._sum_hours(wanted, hour))
            baseline, day = self._summed[1:]
        short = self._short.read(conn, end, kept)
        table = LatencyTable()
        for key, sample in short.pop("provider", {}).items():
            base = histogram_quantile(baseline.get(key, {}), detector.quantile)
            threshold = detector.threshold(base)
            table.providers[key] = LatencyStats(
                deliveries=len(sample),
                p50=sample.quantile(0.5),
                p95=sample.quantile(detector.quantile),
                baseline_p95=base,
                slow=sample.above(threshold),
                threshold=threshold,
            )
        for level in LEVELS:
            per = table.subjects[level] = {}
            for key, sample in short.get(level, {}).items():
                per[key] = {"1h": Latency(len(sample), sample.quantile(0.5), sample.quantile(0.95))}
            for key, bins in day[level].items():
                per.setdefault(key, {})["24h"] = Latency(
                    sum(bins.values()), histogram_quantile(bins, 0.5),
                    histogram_quantile(bins, 0.95),
                )  # fmt: skip
        return table

    def _sum_hours(self, wanted: list[int], hour: int) -> tuple[dict[Key, dict[int, int]], _Bins]:
        """The cached hours added up: the providers' baseline and the 24 h window per level
        (kept until an hour is read or dropped: evaluations a minute apart share them)."""
        baseline: dict[Key, dict[int, int]] = {}
        day: _Bins = {level: {} for level in LEVELS}
        for h in wanted:
            for level, keys in self._hours[h].items():
                if level == "provider":
                    if h == hour - HOUR:
                        continue  # inside the short window's hour: not the baseline
                    target = baseline
                elif h == wanted[0]:
                    continue  # 25 hours back: the baseline's only
                else:
                    target = day[level]
                for key, bins in keys.items():
                    _merge(target.setdefault(key, {}), bins)
        return baseline, day


def _keep(value: str | None, kept: set[str] | None) -> str | None:
    """``value``, or ``REST`` for a value not ``kept`` (None: every value kept); the Python
    twin of ``_kept_or_rest``."""
    return value if not value or kept is None or value in kept else REST


def _kept_or_rest(column: Any, level: str, kept: Kept) -> Any:
    """``column``, or ``REST`` for a value not kept (a level that keeps every value: as is)."""
    if level not in kept:
        return column
    listed = column.in_(bindparam(f"kept_{level}", expanding=True))
    keep = or_(column.is_(None), column == "", listed)
    return case((keep, column), else_=literal(REST))


class _Sample:
    """The latencies of one subject as distinct values (ascending) with how often each came:
    exact quantiles without one list entry per delivery."""

    __slots__ = ("_cumulative", "values")

    def __init__(self, counts: dict[float, int]) -> None:
        self.values = sorted(counts)
        self._cumulative = list(accumulate(counts[value] for value in self.values))

    def counts(self) -> dict[float, int]:
        """Each distinct latency and how many deliveries took it."""
        return dict(zip(self.values, map(int.__sub__, self._cumulative, [0, *self._cumulative]),
                        strict=True))  # fmt: skip

    def __len__(self) -> int:
        return self._cumulative[-1] if self._cumulative else 0

    def _at(self, position: int) -> float:
        """The value at ``position`` of the sorted deliveries (0-based)."""
        return self.values[bisect_right(self._cumulative, position)]

    def quantile(self, q: float) -> float | None:
        """As ``quantile`` over every delivery's latency, sorted."""
        return _interpolated(self._at, len(self), q)

    def above(self, threshold: float) -> int:
        """How many deliveries took longer than ``threshold``."""
        i = bisect_right(self.values, threshold)
        return len(self) - (self._cumulative[i - 1] if i else 0)


#: One minute of the last hour: level ("provider" or one of LEVELS) -> (provider, value) ->
#: latency -> deliveries, the values not kept already ``REST``.
_Minute = dict[str, dict[Key, dict[float, int]]]
#: What a minute's delivered rows looked like when it was read: count, sum of final_at and
#: of submitted_at.  A row delivered, no longer delivered or given its submission late
#: changes it, and the minute is read again.
_Mark = tuple[int, float, float]


def _minute_of(dialect: str) -> Any:
    """final_at's minute as an integer (UNIX seconds // 60) in SQL."""
    at = deliveries.c.final_at / MINUTE
    return func.floor(at) if dialect == "postgresql" else cast(at, Integer)


class _LastHour:
    """The last hour's delivered rows, kept per minute of final_at between evaluations.

    Each evaluation asks the database, in one grouped read of the hour's rows that stays in
    its own code, for every minute's mark (``_Mark``), and reads again only the minutes whose
    mark moved or that it never read: an evaluation a minute after the last reads one minute,
    not sixty, and sorts again only the subjects that minute touched.  Within a minute the
    database groups the rows by subject and latency, so Python sees one row per distinct
    latency of a subject (providers that stamp events to the second repeat a handful of
    values).  The quantiles stay exact: the kept minutes are the rows as they are now,
    whatever order or delay they were stored in (a row whose subject alone changed, its
    times and state the same, is the one change a mark does not show)."""

    def __init__(self) -> None:
        self._kept: dict[str, set[str]] = {}
        self._reset()

    def _reset(self) -> None:
        self._minutes: dict[int, tuple[_Mark, _Minute]] = {}
        # The kept minutes added up per subject, and each subject's sample of them.
        self._counts: dict[tuple[str, Key], dict[float, int]] = {}
        self._samples: dict[tuple[str, Key], _Sample] = {}

    def read(self, conn: Connection, end: float, kept: Kept) -> dict[str, dict[Key, _Sample]]:
        """Per level and (provider, value), the latencies delivered in [end - 1 h, end)."""
        wanted = {level: set(values) for level, values in kept.items() if values is not None}
        if wanted != self._kept:
            self._reset()
            self._kept = wanted
        minute = _minute_of(conn.dialect.name)
        c = deliveries.c
        marks: dict[int, _Mark] = {
            int(m): (int(n), float(finals), float(submits))
            for m, n, finals, submits in conn.execute(
                select(minute, func.count(), func.sum(c.final_at), func.sum(c.submitted_at))
                .where(*_delivered_between(end - HOUR, end))
                .group_by(minute)
            )
        }  # fmt: skip
        touched: set[tuple[str, Key]] = set()
        for m in [m for m, (mark, _) in self._minutes.items() if marks.get(m) != mark]:
            self._add(self._minutes.pop(m)[1], -1, touched)
        stale = [m for m in marks if m not in self._minutes]
        if stale:
            read = _read_minutes(conn, _slices(marks, stale), end, wanted)
            for m in stale:
                self._minutes[m] = (marks[m], read.get(m, {}))
                self._add(self._minutes[m][1], 1, touched)
        for subject in touched:
            counts = self._counts.get(subject)
            if counts:
                self._samples[subject] = _Sample(counts)
            else:
                self._samples.pop(subject, None)
        out: dict[str, dict[Key, _Sample]] = {level: {} for level in ("provider", *LEVELS)}
        for (level, key), sample in self._samples.items():
            out[level][key] = sample
        return out

    def _add(self, minute: _Minute, sign: int, touched: set[tuple[str, Key]]) -> None:
        """Add a minute's counts to the subjects' (``sign`` -1: take them away)."""
        for level, keys in minute.items():
            for key, counts in keys.items():
                subject = (level, key)
                touched.add(subject)
                into = self._counts.setdefault(subject, {})
                for value, n in counts.items():
                    left = into.get(value, 0) + sign * n
                    if left:
                        into[value] = left
                    else:
                        del into[value]
                if not into:
                    del self._counts[subject]


#: About how many rows one statement of the minutes' read reads: while a statement runs it
#: holds back the WAL checkpoint (``monitor.store.wal``), so none should run long.  At 500
#: webhook requests/s a minute holds 100,000 delivered rows or more.
SLICE_ROWS = 20_000

_Slice = tuple[list[int], float, float]


def _slices(marks: dict[int, _Mark], minutes: list[int]) -> list[_Slice]:
    """The statements reading ``minutes``: (their minutes, from, to) of final_at, each about
    :data:`SLICE_ROWS` rows by the marks' counts: small minutes together when no minute
    kept from before lies between them, a big one in equal parts of its 60 s.  The minute
    in SQL decides which rows are a minute's (a second of margin at its edges), so each row
    is read once."""
    out: list[_Slice] = []
    group: list[int] = []
    rows = 0
    wanted = set(minutes)

    def flush() -> None:
        nonlocal rows
        if group:
            out.append((group.copy(), group[0] * MINUTE - 1.0, (group[-1] + 1) * MINUTE + 1.0))
            group.clear()
        rows = 0

    for m in sorted(marks):
        n = marks[m][0]
        if m not in wanted or rows + n > SLICE_ROWS:
            flush()  # a kept minute (not read again) lies between, or the group is full
        if m not in wanted:
            continue
        if n > SLICE_ROWS:
            parts = -(-n // SLICE_ROWS)
            for i in range(parts):
                lo = m * MINUTE - 1.0 if i == 0 else m * MINUTE + i * MINUTE / parts
                last = i == parts - 1
                hi = (m + 1) * MINUTE + 1.0 if last else m * MINUTE + (i + 1) * MINUTE / parts
                out.append(([m], lo, hi))
            continue
        group.append(m)
        rows += n
    flush()
    return out


def _read_minutes(
    conn: Connection, slices: list[_Slice], end: float, wanted: dict[str, set[str]]
) -> dict[int, _Minute]:
    """The delivered rows of the slices' minutes (in [end - 1 h, end)), grouped by subject
    and latency in the database, one statement a slice, the values not ``wanted`` as
    ``REST``."""
    c = deliveries.c
    minute = _minute_of(conn.dialect.name)
    provider = func.coalesce(c.provider, literal("other"))
    columns = [minute, provider, c.recipient_domain, c.sending_ip,
               _sender_domain(conn.dialect.name), c.stream_tag, _latency()]  # fmt: skip
    out: dict[int, _Minute] = {}
    keeps = (None, *(wanted.get(level) for level in LEVELS))
    for minutes, lo, hi in slices:
        rows: Any = conn.execute(
            select(*columns, func.count())
            .where(*_delivered_between(max(lo, end - HOUR), min(hi, end)), minute.in_(minutes))
            .group_by(*columns)
        )
        for m, name, *subjects, latency, n in rows:
            into = out.get(int(m))
            if into is None:
                into = out[int(m)] = {level: {} for level in ("provider", *LEVELS)}
            value = max(0.0, float(latency))
            for level, raw, keep in zip(("provider", *LEVELS), ("", *subjects), keeps,
                                        strict=True):  # fmt: skip
                key = _keep(raw, keep) or ""
                if key or level == "provider":
                    counts = into[level].setdefault((name, key), {})
                    counts[value] = counts.get(value, 0) + n
    return out


def _hour_bins(conn: Connection, start: int, kept: Kept | None = None) -> _Bins:
    """One hour's histograms per level, from one grouped read of its delivered rows (the
    values not ``kept`` summed as ``REST`` in SQL)."""
    c = deliveries.c
    kept = kept or {}
    latency = _latency()
    index = case(*((latency <= edge, i) for i, edge in enumerate(EDGES)), else_=len(EDGES))
    provider = func.coalesce(c.provider, literal("other"))
    values = (c.recipient_domain, c.sending_ip, _sender_domain(conn.dialect.name), c.stream_tag)
    mapped = [_kept_or_rest(col, level, kept) for col, level in zip(values, LEVELS, strict=True)]
    columns = [provider, *mapped, index]
    params = {f"kept_{level}": values for level, values in kept.items() if values is not None}
    rows: Any = conn.execute(
        select(*columns, func.count())
        .where(*_delivered_between(start, start + HOUR))
        .group_by(*columns),
        params,
    )
    out: _Bins = {level: {} for level in ("provider", *LEVELS)}
    for name, domain, ip, sending_domain, stream, i, n in rows:
        i, n = int(i), int(n)
        for level, value in (("provider", ""), ("domain", domain), ("sending_ip", ip),
                             ("sender_domain", sending_domain), ("stream", stream)):  # fmt: skip
            if level != "provider" and not value:
                continue
            bins = out[level].setdefault((name, value), {})
            bins[i] = bins.get(i, 0) + n
    return out
