"""Detector inputs from the deliveries table: latency (submitted -> delivered) and queue age.

Counters carry no times per message, so these two read delivery rows:

- latency reads the last hour's delivered rows through the partial index on ``final_at``
  (schema 4) and the 24 h baseline before it once per event-time hour, aggregated in SQL
  into a fixed histogram;
- queue age goes through the ``(recipient_domain, state)`` index: the deferred rows of
  the domains the windows saw.  It judges the rows' *current* state, so a replay of a past
  day sees only the mail that is still deferred now (live evaluation is exact).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, case, func, literal, select

from monitor.rollup.detectors import LatencyDetector, LatencyStats, QueueAgeDetector, QueueStats
from monitor.rollup.incidents import rank_replies
from monitor.rollup.windows import Key, align
from monitor.store.schema import deliveries

__all__ = ["LatencyReader", "quantile", "queue_stats", "stuck_replies"]

HOUR = 3600
#: Histogram edges (seconds) for the baseline p95: fine where mail usually lands.
EDGES = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200,
         4 * HOUR, 8 * HOUR, 12 * HOUR, 24 * HOUR, 48 * HOUR, 120 * HOUR)  # fmt: skip
_IN_CHUNK = 500


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` with linear interpolation (None when empty)."""
    if not values:
        return None
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _histogram_quantile(bins: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile of a histogram over EDGES (bin i: (EDGES[i-1], EDGES[i]])."""
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


class LatencyReader:
    """Per provider: the last hour's latency quantiles and the share slower than the
    detector's threshold, against the p95 of the 24 h before the current hour (cached)."""

    def __init__(self) -> None:
        self._hour: int | None = None
        self._baseline: dict[str, float | None] = {}

    def read(
        self, conn: Connection, at: float, detector: LatencyDetector
    ) -> dict[Key, LatencyStats]:
        end = align(at)
        hour = end // HOUR * HOUR
        if hour != self._hour:
            # The 24 h before the hour-aligned start of the short window: never inside it.
            self._baseline = self._baseline_p95(
                conn, hour - 25 * HOUR, hour - HOUR, detector.quantile
            )
            self._hour = hour
        provider = func.coalesce(deliveries.c.provider, literal("other"))
        rows = conn.execute(
            select(provider, _latency()).where(*_delivered_between(end - HOUR, end))
        )
        by_provider: dict[str, list[float]] = {}
        for name, latency in rows:
            by_provider.setdefault(name, []).append(max(0.0, float(latency)))
        out: dict[Key, LatencyStats] = {}
        for name, values in by_provider.items():
            values.sort()
            base = self._baseline.get(name)
            threshold = detector.threshold(base)
            out[(name, "")] = LatencyStats(
                deliveries=len(values),
                p50=quantile(values, 0.5),
                p95=quantile(values, detector.quantile),
                baseline_p95=base,
                slow=sum(1 for v in values if v > threshold),
                threshold=threshold,
            )
        return out

    def _baseline_p95(
        self, conn: Connection, start: float, end: float, q: float
    ) -> dict[str, float | None]:
        latency = _latency()
        index = case(*((latency <= edge, i) for i, edge in enumerate(EDGES)), else_=len(EDGES))
        provider = func.coalesce(deliveries.c.provider, literal("other"))
        rows = conn.execute(
            select(provider, index, func.count())
            .where(*_delivered_between(start, end))
            .group_by(provider, index)
        )
        bins: dict[str, dict[int, int]] = {}
        for name, i, n in rows:
            bins.setdefault(name, {})[int(i)] = int(n)
        return {name: _histogram_quantile(b, q) for name, b in bins.items()}


def queue_stats(
    conn: Connection, at: float, domains: Iterable[str], detector: QueueAgeDetector
) -> dict[Key, QueueStats]:
    """Per (provider, domain): deliveries deferred now and first tried by ``at``, and how
    many of them more than the detector's max age before ``at``."""
    end = align(at)
    cut = end - detector.max_age_seconds
    names = sorted(set(domains))
    found: dict[Key, list[float]] = {}
    for i in range(0, len(names), _IN_CHUNK):
        rows = conn.execute(
            select(
                func.coalesce(deliveries.c.provider, literal("other")),
                deliveries.c.recipient_domain,
                deliveries.c.first_attempt_at,
            ).where(
                deliveries.c.recipient_domain.in_(names[i : i + _IN_CHUNK]),
                deliveries.c.state == "deferred",
                deliveries.c.first_attempt_at <= end,
                deliveries.c.stream != "ndr",
            )
        )
        for provider, domain, first in rows:
            found.setdefault((provider, domain), []).append(float(first))
    out: dict[Key, QueueStats] = {}
    for key, firsts in found.items():
        stuck = [t for t in firsts if t <= cut]
        out[key] = QueueStats(
            stuck=len(stuck),
            oldest_age=end - min(stuck) if stuck else None,
            deferred=len(firsts),
        )
    return out


def stuck_replies(
    conn: Connection, key: Key, at: float, max_age: float, limit: int
) -> list[dict[str, Any]]:
    """The most frequent last replies of a domain's stuck deliveries (why they wait)."""
    end = align(at)
    rows = conn.execute(
        select(
            deliveries.c.reply_code,
            deliveries.c.enhanced_status,
            deliveries.c.reason,
            deliveries.c.diagnostic,
        )
        .where(
            deliveries.c.recipient_domain == key[1],
            deliveries.c.state == "deferred",
            deliveries.c.first_attempt_at <= end - max_age,
            deliveries.c.stream != "ndr",
        )
        .limit(5000)
    )
    return rank_replies(rows, limit)
