"""Delivery latency (submitted -> delivered) from the delivered rows of the deliveries table.

Per provider (the latency detector's input) and per (provider, recipient domain / sending IP /
sending domain / stream), over two windows:

- ``1h``: exact quantiles of the rows delivered in the last hour, read through the partial
  index on ``final_at`` (schema 4) at every evaluation;
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

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, literal, or_, select

from monitor.model import domain_of
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
    if not values:
        return None
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


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
        head = func.rtrim(sender, func.replace(sender, literal("@"), literal("")))
        after = case(
            (func.instr(sender, literal("@")) > 0, func.replace(sender, head, literal(""))),
            else_=literal(""),
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
            moved = self._last is not None and (
                end < self._last or end // DAY != self._last // DAY
            )
            if moved or kept != self._kept:
                self._hours = {}
                self._kept = kept
            self._last = end
            self._hours = {h: self._hours[h] for h in wanted if h in self._hours}
            for h in wanted:
                if h not in self._hours:
                    self._hours[h] = _hour_bins(conn, h, kept)
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
        short = _last_hour(conn, end, kept)
        table = LatencyTable()
        for key, values in short.pop("provider", {}).items():
            base = histogram_quantile(baseline.get(key, {}), detector.quantile)
            threshold = detector.threshold(base)
            table.providers[key] = LatencyStats(
                deliveries=len(values),
                p50=quantile(values, 0.5),
                p95=quantile(values, detector.quantile),
                baseline_p95=base,
                slow=sum(1 for v in values if v > threshold),
                threshold=threshold,
            )
        for level in LEVELS:
            per = table.subjects[level] = {}
            for key, values in short.get(level, {}).items():
                per[key] = {
                    "1h": Latency(len(values), quantile(values, 0.5), quantile(values, 0.95))
                }
            for key, bins in day[level].items():
                per.setdefault(key, {})["24h"] = Latency(
                    sum(bins.values()), histogram_quantile(bins, 0.5),
                    histogram_quantile(bins, 0.95),
                )  # fmt: skip
        return table


def _keep(value: str | None, kept: set[str] | None) -> str | None:
    return value if not value or kept is None or value in kept else REST


def _kept_or_rest(column: Any, level: str, kept: Kept) -> Any:
    """``column``, or ``REST`` for a value not kept (a level that keeps every value: as is)."""
    if level not in kept:
        return column
    listed = column.in_(bindparam(f"kept_{level}", expanding=True))
    keep = or_(column.is_(None), column == "", listed)
    return case((keep, column), else_=literal(REST))


def _last_hour(
    conn: Connection, end: float, kept: Kept | None = None
) -> dict[str, dict[Key, list[float]]]:
    """The last hour's latencies (sorted) per level and (provider, value), the values not
    ``kept`` as ``REST``."""
    wanted = {level: set(values) for level, values in (kept or {}).items() if values is not None}
    in_domains, in_ips, in_senders, in_streams = (wanted.get(level) for level in LEVELS)
    c = deliveries.c
    provider = func.coalesce(c.provider, literal("other"))
    rows = conn.execute(
        select(provider, c.recipient_domain, c.sending_ip, c.sender, c.stream_tag, _latency())
        .where(*_delivered_between(end - HOUR, end))
    )  # fmt: skip
    out: dict[str, dict[Key, list[float]]] = {level: {} for level in ("provider", *LEVELS)}
    by_provider, by_domain, by_ip, by_sender, by_stream = (out[n] for n in ("provider", *LEVELS))
    senders: dict[str | None, str | None] = {}  # sender -> domain: addresses repeat
    for name, domain, ip, sender, stream, latency in rows:
        value = max(0.0, float(latency))
        if wanted:
            domain, ip, stream = (_keep(domain, in_domains), _keep(ip, in_ips),
                                  _keep(stream, in_streams))  # fmt: skip
        by_provider.setdefault((name, ""), []).append(value)
        if domain:
            by_domain.setdefault((name, domain), []).append(value)
        if ip:
            by_ip.setdefault((name, ip), []).append(value)
        if sender not in senders:
            senders[sender] = domain_of(sender)
        if sending_domain := _keep(senders[sender], in_senders):
            by_sender.setdefault((name, sending_domain), []).append(value)
        if stream:
            by_stream.setdefault((name, stream), []).append(value)
    for per in out.values():
        for values in per.values():
            values.sort()
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
