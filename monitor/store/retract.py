"""Taking stored events back, for a collector that learned better.

A message's later lines read before its earlier ones (a rotated log read newest first,
or its older part ingested in a later command) make events without what the earlier
lines say: no Message-ID, no sender, the wrong attempt numbers.  When the earlier lines
come, the collector makes the right events and names the ones they replace; this module
removes those in the same transaction as the new ones are written: their rows, their
share of every counter, and the delivery rows they were folded into, folded again from
the events that remain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, delete, select

from monitor.store.queries import _event_from_row
from monitor.store.schema import (
    BUCKET_SECONDS,
    counters,
    deliveries,
    events,
    failure_counters,
    sender_counters,
)
from monitor.store.wire import to_wire
from monitor.store.writer import (
    _CHUNK,
    _DELIVERY_COLUMNS,
    _apply,
    _count,
    _Keyed,
    _new_delivery,
    _upsert_rows,
)

__all__ = ["refold_deliveries", "retract_events"]


def retract_events(conn: Connection, ids: Sequence[str]) -> set[str]:
    """Delete the events ``ids`` and their counts; returns the delivery keys they touched."""
    keyed: list[_Keyed] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        rows = conn.execute(select(events).where(events.c.id.in_(chunk))).mappings()
        keyed.extend(
            (r["delivery_key"], r["occurred_at"], to_wire(_event_from_row(r))) for r in rows
        )
        conn.execute(delete(events).where(events.c.id.in_(chunk)))
    if not keyed:
        return set()
    _count(conn, keyed, sign=-1)
    buckets = sorted({int(ts // BUCKET_SECONDS) * BUCKET_SECONDS for _, ts, _ in keyed})
    for table in (counters, failure_counters, sender_counters):
        for start in range(0, len(buckets), _CHUNK):
            conn.execute(
                delete(table).where(
                    table.c.bucket.in_(buckets[start : start + _CHUNK]), table.c.count <= 0
                )
            )
    return {key for key, _, _ in keyed}


def refold_deliveries(conn: Connection, keys: Iterable[str]) -> None:
    """Fold the delivery rows of ``keys`` again from their events (none left: no row)."""
    todo = sorted(keys)
    for start in range(0, len(todo), _CHUNK):
        chunk = todo[start : start + _CHUNK]
        conn.execute(delete(deliveries).where(deliveries.c.key.in_(chunk)))
        found = conn.execute(select(events).where(events.c.delivery_key.in_(chunk))).mappings()
        by_key: dict[str, list[tuple[float, tuple[object, ...]]]] = {}
        for r in found:
            event = to_wire(_event_from_row(r))
            by_key.setdefault(r["delivery_key"], []).append((r["occurred_at"], event))
        rows = []
        for key, evs in by_key.items():
            evs.sort(key=lambda pair: pair[0])
            row = _new_delivery(key, *evs[0])
            for ts, e in evs:
                _apply(row, ts, e)
            rows.append(tuple(row))
        _upsert_rows(conn, deliveries, _DELIVERY_COLUMNS, ["key"], rows)
