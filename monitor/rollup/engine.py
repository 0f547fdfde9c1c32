"""The rollup engine: windows from counters -> detectors -> incidents and gauges, in event time.

::

    engine = RollupEngine(store, RejectingDetector(min_attempts=20), gauges=metrics.rollup)
    result = engine.evaluate(at)           # at: UNIX seconds of event time
    engine.replay(start, end, step=300)    # back-filled logs: the same incidents as live

``evaluate`` is idempotent: the same ``at`` twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, select

from monitor.rollup import incidents
from monitor.rollup.detectors import Decision, RejectingDetector
from monitor.rollup.windows import (
    BASELINE,
    BASELINE_SECONDS,
    REJECTING_REASONS,
    SHORT,
    WINDOWS,
    Counts,
    Key,
    WindowReader,
    align,
    exclude_from_baseline,
)
from monitor.store import Store
from monitor.store.schema import BUCKET_SECONDS, counters

__all__ = ["DomainState", "Evaluation", "GaugeSink", "RollupEngine", "newest_event_time"]


@dataclass(frozen=True, slots=True)
class DomainState:
    """The gauge-facing state of one (provider, domain) after an evaluation."""

    provider: str
    domain: str
    attempts: int
    rejecting: int
    open: bool


@dataclass(slots=True)
class Evaluation:
    """What one ``evaluate(at)`` did."""

    at: float
    opened: list[Key] = field(default_factory=list)
    closed: list[Key] = field(default_factory=list)
    states: list[DomainState] = field(default_factory=list)


class GaugeSink(Protocol):
    """Receives the per-domain state after each evaluation (``monitor.metrics.RollupGauges``)."""

    def update(self, states: list[DomainState]) -> None: ...


def newest_event_time(store: Store) -> float | None:
    """The start of the newest counter bucket: the live engine evaluates there.

    That bucket may still be filling; every bucket before it is complete (logs arrive in
    order), so a live evaluation sees exactly what a replay of the same time sees.
    """
    with store.engine.connect() as conn:
        newest = conn.execute(select(func.max(counters.c.bucket))).scalar()
    return None if newest is None else float(newest)


class RollupEngine:
    """Evaluates detectors over the store's counters at event times."""

    def __init__(
        self,
        store: Store,
        detector: RejectingDetector | None = None,
        *,
        gauges: GaugeSink | None = None,
        top_replies: int = 5,
    ) -> None:
        self.store = store
        self.detector = detector or RejectingDetector()
        self.gauges = gauges
        self.top_replies = top_replies
        self.windows = WindowReader()

    def evaluate(self, at: float) -> Evaluation:
        """Judge every (provider, domain) over the windows ending at ``at``.

        Reading is one snapshot; only when something opens or closes does a short write
        transaction follow, re-checking the incidents so that a concurrent evaluation of
        the same time cannot duplicate one (the unique index backs this up).
        """
        end = float(align(at))
        result = Evaluation(at=end)
        kind = self.detector.kind
        with self.store.engine.connect() as conn:
            table = self.windows.read(conn, end)
            current = incidents.active(conn, kind, end)
            excluded = self._exclude_incident_time(conn, table, end)
        to_open: dict[Key, Decision] = {}
        to_close: dict[Key, Decision] = {}
        open_now: set[Key] = set()
        for key in sorted(table.keys() | current.keys()):
            decision = self.detector.decide(table.get(key) or _empty())
            row = current.get(key)
            if row is None and decision.firing:
                to_open[key] = decision
            elif row is not None and row["ended_at"] is None and decision.resolved:
                to_close[key] = decision
            elif row is not None:
                open_now.add(key)
        if to_open or to_close:
            with self.store.engine.begin() as conn:
                fresh = incidents.active(conn, kind, end)
                for key, decision in to_open.items():
                    open_now.add(key)
                    if key in fresh:
                        continue
                    windows = table[key]
                    evidence = self._evidence(conn, key, end, windows) | decision.as_dict()
                    evidence["baseline_excluded_seconds"] = excluded.get(key, 0)
                    incidents.open_incident(conn, kind, *key, end, evidence)
                    result.opened.append(key)
                for key, decision in to_close.items():
                    row = fresh.get(key)
                    if row is None or row["ended_at"] is not None:
                        continue
                    windows = table.get(key) or _empty()
                    resolution = {"windows": _windows_dict(windows)} | decision.as_dict()
                    incidents.close(conn, row, end, resolution)
                    result.closed.append(key)
        for key in sorted(table.keys() | current.keys()):
            short = (table.get(key) or _empty())[SHORT]
            result.states.append(
                DomainState(key[0], key[1], short.attempts, short.rejecting, key in open_now)
            )
        if self.gauges is not None:
            self.gauges.update(result.states)
        return result

    def replay(self, start: float, end: float, step: float = 300) -> Iterator[Evaluation]:
        """Evaluate at ``start``, ``start + step``, ... up to and including ``end``."""
        if step < BUCKET_SECONDS:
            raise ValueError(f"step must be at least {BUCKET_SECONDS} s")
        at = float(align(start))
        while at <= end:
            yield self.evaluate(at)
            at += step

    def _exclude_incident_time(
        self, conn: Any, table: dict[Key, dict[str, Counts]], end: float
    ) -> dict[Key, int]:
        """Leave each subject's incident time (from its short window before the start to its
        end, or ``end`` while open) out of its baseline; the seconds left out per subject."""
        spans: dict[Key, list[tuple[float, float]]] = {}
        for row in incidents.overlapping(conn, end - BASELINE_SECONDS, end):
            stop = end if row["ended_at"] is None else min(row["ended_at"], end)
            spans.setdefault((row["provider"], row["domain"]), []).append(
                (row["started_at"] - WINDOWS[SHORT], stop)
            )
        return exclude_from_baseline(conn, table, spans, end)

    def _evidence(
        self, conn: Any, key: Key, end: float, windows: dict[str, Counts]
    ) -> dict[str, Any]:
        since = end - WINDOWS[SHORT]
        return {
            "windows": _windows_dict(windows),
            "top_reasons": incidents.top_reasons(conn, key[0], key[1], since, end),
            "top_replies": incidents.top_replies(
                conn, key[1], since, end, REJECTING_REASONS, self.top_replies
            ),
            "min_attempts": self.detector.min_attempts,
            "factor": self.detector.factor,
            "floor": self.detector.floor,
        }


def _empty() -> dict[str, Counts]:
    return {name: Counts() for name in (*WINDOWS, BASELINE)}


def _windows_dict(windows: dict[str, Counts]) -> dict[str, Any]:
    return {name: counts.as_dict() for name, counts in windows.items()}
