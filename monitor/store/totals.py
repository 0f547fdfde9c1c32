"""Everything the store has counted, read in one transaction: what ``/metrics`` starts from.

A restarted ``mailmon serve`` seeds its Prometheus counters with these totals, so its
counters continue where the store is instead of starting from zero::

    with store.engine.connect() as conn:
        totals = read_totals(conn, delay_buckets=(1, 5, 15))
    metrics.seed(totals)

Outcomes per (provider, domain) come from the pre-aggregated ``counters``; the events
table is read for what only it holds, each query grouping by as few columns as it can
(sorting every event by a wide key is what makes such a read slow): events and newest
event time per source, bounces and complaints in detail, delivery delays per bucket.
Delays are summed as whole microseconds (:func:`delay_micros`) so that the seeded sum
and the one a process adds up event by event are the same number, in any order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, Connection, Integer, and_, case, cast, func, select

from monitor.model import EventType
from monitor.store.schema import checkpoints, counters, events

__all__ = ["Detail", "SourceCounts", "Totals", "delay_micros", "read_totals"]

#: Event types counted with their reason, hard flag and source, not just their outcome.
DETAILED = (EventType.BOUNCED.value, EventType.COMPLAINED.value)


def delay_micros(seconds: float) -> int:
    """A delay as whole microseconds, rounded as the aggregate query rounds it."""
    return int(seconds * 1_000_000 + 0.5)  # int() truncates toward zero, as SQL CAST does


@dataclass(frozen=True)
class Detail:
    """Bounced or complained events sharing source, provider, domain, reason and hard."""

    source: str
    type: str
    provider: str | None
    recipient_domain: str | None
    reason: str | None
    hard: bool | None
    count: int


@dataclass(frozen=True)
class SourceCounts:
    """What a collector read, as its checkpoint carries it (the store holds no lines)."""

    source: str
    lines: int
    rejected: dict[str, int]


@dataclass(frozen=True)
class Totals:
    #: (provider, recipient domain, event type, count) from the counters table
    outcomes: list[tuple[str, str, str, int]]
    #: (source, events, newest event time)
    sources: list[tuple[str, int, float]]
    details: list[Detail]
    #: (provider, bucket index (len(bounds): above the last), count, sum in microseconds)
    delays: list[tuple[str | None, int, int, int]]
    inputs: list[SourceCounts]


def read_totals(conn: Connection, delay_buckets: Sequence[float]) -> Totals:
    """The store's totals by the fields metrics label with, and the checkpoints' input counts.

    ``conn`` must be fresh (nothing run on it yet): the reads share one snapshot, so a
    batch another process commits meanwhile is in all the totals or in none.
    """
    _snapshot(conn)
    c, k = events.c, counters.c
    outcomes = conn.execute(
        select(k.provider, k.recipient_domain, k.outcome, func.sum(k.count)).group_by(
            k.provider, k.recipient_domain, k.outcome
        )
    ).all()
    sources = conn.execute(
        select(c.source, func.count(), func.max(c.occurred_at)).group_by(c.source)
    ).all()
    keys = (c.source, c.type, c.provider, c.recipient_domain, c.reason, c.hard)
    details = conn.execute(
        select(*keys, func.count()).where(c.type.in_(DETAILED)).group_by(*keys)
    ).all()
    return Totals(
        outcomes=[(p, d, o, int(n)) for p, d, o, n in outcomes],
        sources=[(s, int(n), float(t)) for s, n, t in sources],
        details=[
            Detail(s, t, p, d, r, None if h is None else bool(h), int(n))
            for s, t, p, d, r, h, n in details
        ],
        delays=_delays(conn, delay_buckets),
        inputs=_input_counts(conn),
    )


def _snapshot(conn: Connection) -> None:
    """One read snapshot for the statements that follow on ``conn``."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    elif conn.dialect.name == "sqlite":
        # pysqlite begins transactions only before writes; without BEGIN every SELECT
        # would read the newest commit. The connection's end rolls it back.
        conn.exec_driver_sql("BEGIN")


def _delays(conn: Connection, bounds: Sequence[float]) -> list[tuple[str | None, int, int, int]]:
    c = events.c
    bucket = case(
        *((c.delay_seconds <= b, i) for i, b in enumerate(bounds)), else_=len(bounds)
    ).label("bucket")
    scaled = c.delay_seconds * 1_000_000 + 0.5
    if conn.dialect.name == "postgresql":  # its CAST rounds; truncate first, as SQLite's does
        micros = cast(func.trunc(scaled), BigInteger)
    else:
        micros = cast(scaled, Integer)
    query = (
        select(c.provider, bucket, func.count(), func.sum(micros))
        .where(and_(c.type == EventType.DELIVERED.value, c.delay_seconds.isnot(None)))
        .group_by(c.provider, bucket)
    )
    return [(p, int(i), int(n), int(s)) for p, i, n, s in conn.execute(query)]


def _input_counts(conn: Connection) -> list[SourceCounts]:
    """The ``counts`` of every checkpoint that has them (followed files, the log hook)."""
    rows = conn.execute(select(checkpoints.c.state).where(checkpoints.c.state.like('%"counts"%')))
    found = []
    for (text,) in rows:
        state = json.loads(text)
        counts = state.get("counts") if isinstance(state, dict) else None
        if isinstance(counts, dict) and isinstance(counts.get("source"), str):
            found.append(
                SourceCounts(
                    counts["source"],
                    int(counts.get("lines", 0)),
                    {str(r): int(n) for r, n in dict(counts.get("rejected", {})).items()},
                )
            )
    return found
