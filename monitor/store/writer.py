"""Writing a batch of events: dedupe by id, insert, fold into deliveries and counters.

Everything for one batch happens in the caller's transaction, so a batch is either
fully stored (events, delivery states, counters and any checkpoint written with it)
or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table

from monitor.model import ATTEMPT_TYPES, FINAL_TYPES, Event, EventType, event_id
from monitor.store.schema import BUCKET_SECONDS, counters, deliveries, events

__all__ = ["delivery_key", "stream_of", "upsert", "write_events"]

_CHUNK = 500  # bound on bound parameters per IN (...) query
_RANK = {EventType.SUBMITTED: 0, EventType.DEFERRED: 1}
_STATEFUL = frozenset(_RANK) | FINAL_TYPES


def delivery_key(event: Event) -> str:
    """The (message, recipient) a delivery row tracks.

    The RFC 5322 Message-ID joins what different sources say about one message;
    without one, the source's queue id does; without either, the event is alone.
    """
    if event.message_id:
        return event_id("msg", "", event.message_id, event.recipient)
    if event.queue_id:
        return event_id(event.source, "queue", event.queue_id, event.recipient)
    return event.id


def stream_of(event: Event) -> str:
    """The traffic stream: our own non-delivery notices are kept apart."""
    return "ndr" if "ndr" in event.tags else ""


_EVENT_COLUMNS = tuple(c.name for c in events.columns)


def _event_row(event: Event, key: str) -> tuple[Any, ...]:
    """The events-table row, in ``_EVENT_COLUMNS`` order."""
    return (
        event.id,
        event.timestamp,
        event.source,
        event.type.value,
        key,
        event.message_id,
        event.queue_id,
        event.provider_message_id,
        event.sender,
        event.recipient,
        event.orig_recipient,
        event.recipient_domain,
        event.provider,
        event.relay,
        event.sending_ip,
        event.client,
        event.reply_code,
        event.enhanced_status,
        event.diagnostic,
        event.reason,
        event.hard,
        event.delay_seconds,
        event.size_bytes,
        event.attempt,
        ",".join(event.tags) if event.tags else None,
        event.raw_ref,
        event.blame,
        event.rule,
    )


def _marks(conn: Connection, n: int) -> str:
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return ", ".join([mark] * n)


def _insert_sql(conn: Connection, table: Table, columns: Sequence[str], tail: str = "") -> str:
    """Plain SQL for a bulk insert through the driver (Core's per-row work costs 3x here)."""
    cols = ", ".join(columns)
    return f"INSERT INTO {table.name} ({cols}) VALUES ({_marks(conn, len(columns))}){tail}"


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    increment: str | None = None,
) -> None:
    """Insert ``rows``; on a key conflict overwrite the other columns (or add to ``increment``).

    ``INSERT ... ON CONFLICT`` has the same spelling on SQLite (3.24+) and PostgreSQL.
    """
    if not rows:
        return
    columns = list(rows[0])
    if increment:
        update = f"{increment} = {table.name}.{increment} + excluded.{increment}"
    else:
        update = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    tail = f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}"
    conn.exec_driver_sql(
        _insert_sql(conn, table, columns, tail), [tuple(r[c] for c in columns) for r in rows]
    )


def _existing(conn: Connection, table: Table, column: str, values: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        sql = f"SELECT {column} FROM {table.name} WHERE {column} IN ({_marks(conn, len(chunk))})"
        found.update(r[0] for r in conn.exec_driver_sql(sql, tuple(chunk)))
    return found


def write_events(conn: Connection, batch: Iterable[Event]) -> list[Event]:
    """Store the events not stored before; returns exactly those, in input order."""
    unique: dict[str, Event] = {}
    for event in batch:
        unique.setdefault(event.id, event)
    if not unique:
        return []
    seen = _existing(conn, events, "id", list(unique))
    fresh = [e for i, e in unique.items() if i not in seen]
    if not fresh:
        return []
    keyed = [(delivery_key(e), e) for e in fresh]
    conn.exec_driver_sql(
        _insert_sql(conn, events, _EVENT_COLUMNS), [_event_row(e, k) for k, e in keyed]
    )
    _count(conn, fresh)
    _fold_deliveries(conn, keyed)
    return fresh


def _count(conn: Connection, fresh: Sequence[Event]) -> None:
    totals: dict[tuple[int, str, str, str, str, str], int] = {}
    for e in fresh:
        bucket = int(e.timestamp // BUCKET_SECONDS) * BUCKET_SECONDS
        k = (
            bucket,
            e.recipient_domain or "",
            e.provider or "other",
            e.type.value,
            e.reason or "",
            stream_of(e),
        )
        totals[k] = totals.get(k, 0) + 1
    rows = [
        {
            "bucket": k[0],
            "recipient_domain": k[1],
            "provider": k[2],
            "outcome": k[3],
            "reason": k[4],
            "stream": k[5],
            "count": n,
        }
        for k, n in totals.items()
    ]
    upsert(conn, counters, rows, [c.name for c in counters.primary_key], increment="count")


def _fold_deliveries(conn: Connection, keyed: Sequence[tuple[str, Event]]) -> None:
    by_key: dict[str, list[Event]] = {}
    for key, e in keyed:
        by_key.setdefault(key, []).append(e)
    current: dict[str, dict[str, Any]] = {}
    keys = list(by_key)
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        sql = (
            f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM deliveries"
            f" WHERE key IN ({_marks(conn, len(chunk))})"
        )
        for found in conn.exec_driver_sql(sql, tuple(chunk)):
            current[found[0]] = dict(zip(_DELIVERY_COLUMNS, found, strict=True))
    rows: list[dict[str, Any]] = []
    for key, evs in by_key.items():
        row = current.get(key) or _new_delivery(key, evs[0])
        for e in sorted(evs, key=lambda ev: ev.timestamp):
            _apply(row, e)
        rows.append(row)
    upsert(conn, deliveries, rows, ["key"])


_DELIVERY_COLUMNS = tuple(c.name for c in deliveries.columns)


def _new_delivery(key: str, e: Event) -> dict[str, Any]:
    return {
        "key": key,
        "source": e.source,
        "message_id": None,
        "queue_id": None,
        "sender": None,
        "recipient": e.recipient,
        "recipient_domain": e.recipient_domain,
        "provider": None,
        "stream": stream_of(e),
        "state": e.type.value,
        "submitted_at": None,
        "first_attempt_at": None,
        "last_event_at": e.timestamp,
        "final_at": None,
        "attempts": 0,
        "deferrals": 0,
        "reply_code": None,
        "enhanced_status": None,
        "reason": None,
        "hard": None,
        "diagnostic": None,
        "blame": None,
        "rule": None,
    }


_RANK_OF = {k.value: _RANK.get(k, 2 if k in FINAL_TYPES else -1) for k in EventType}


def _rank(state: str) -> int:
    return _RANK_OF.get(state, -1)


def _apply(row: dict[str, Any], e: Event) -> None:
    """Fold one event into a delivery row; order-independent for its outcome."""
    ts = e.timestamp
    for column, value in (
        ("message_id", e.message_id),
        ("queue_id", e.queue_id),
        ("sender", e.sender),
        ("provider", e.provider),
    ):
        if row[column] is None and value is not None:
            row[column] = value
    previous_last = row["last_event_at"]
    row["last_event_at"] = max(previous_last, ts)
    kind = e.type
    if kind is EventType.SUBMITTED:
        row["submitted_at"] = ts if row["submitted_at"] is None else min(row["submitted_at"], ts)
    if kind in ATTEMPT_TYPES:
        row["attempts"] += 1
        first = row["first_attempt_at"]
        row["first_attempt_at"] = ts if first is None else min(first, ts)
    if kind is EventType.DEFERRED:
        row["deferrals"] += 1
    if kind not in _STATEFUL:
        return
    rank, held = _rank(kind.value), _rank(row["state"])
    decided_at = row["final_at"] if held == 2 else previous_last
    if rank > held or (rank == held and ts >= (decided_at or 0.0)):
        row["state"] = kind.value
        row["final_at"] = ts if rank == 2 else None
        if rank >= 1:
            row["reply_code"] = e.reply_code
            row["enhanced_status"] = e.enhanced_status
            row["reason"] = e.reason
            row["hard"] = e.hard
            row["diagnostic"] = e.diagnostic
            row["blame"] = e.blame
            row["rule"] = e.rule
