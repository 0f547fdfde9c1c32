"""Writing a batch of events: dedupe by id, insert, fold into deliveries and counters.

Everything for one batch happens in the caller's transaction, so a batch is either
fully stored (events, delivery states, counters and any checkpoint written with it)
or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, select
from sqlalchemy.dialects import postgresql, sqlite

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


def _event_row(event: Event, key: str) -> dict[str, Any]:
    return {
        "id": event.id,
        "occurred_at": event.timestamp,
        "source": event.source,
        "type": event.type.value,
        "delivery_key": key,
        "message_id": event.message_id,
        "queue_id": event.queue_id,
        "provider_message_id": event.provider_message_id,
        "sender": event.sender,
        "recipient": event.recipient,
        "orig_recipient": event.orig_recipient,
        "recipient_domain": event.recipient_domain,
        "provider": event.provider,
        "relay": event.relay,
        "sending_ip": event.sending_ip,
        "client": event.client,
        "reply_code": event.reply_code,
        "enhanced_status": event.enhanced_status,
        "diagnostic": event.diagnostic,
        "reason": event.reason,
        "hard": event.hard,
        "delay_seconds": event.delay_seconds,
        "size_bytes": event.size_bytes,
        "attempt": event.attempt,
        "tags": ",".join(event.tags) if event.tags else None,
        "raw_ref": event.raw_ref,
    }


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    increment: str | None = None,
) -> None:
    """Insert ``rows``; on a key conflict overwrite the other columns (or add to ``increment``)."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:  # pragma: no cover - only the two supported back ends
        raise NotImplementedError(dialect)
    if increment:
        update = {increment: getattr(table.c, increment) + stmt.excluded[increment]}
    else:
        update = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=update), rows)


def _existing(conn: Connection, column: Any, values: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        found.update(r[0] for r in conn.execute(select(column).where(column.in_(chunk))))
    return found


def write_events(conn: Connection, batch: Iterable[Event]) -> list[Event]:
    """Store the events not stored before; returns exactly those, in input order."""
    unique: dict[str, Event] = {}
    for event in batch:
        unique.setdefault(event.id, event)
    if not unique:
        return []
    seen = _existing(conn, events.c.id, list(unique))
    fresh = [e for i, e in unique.items() if i not in seen]
    if not fresh:
        return []
    keyed = [(delivery_key(e), e) for e in fresh]
    conn.execute(events.insert(), [_event_row(e, k) for k, e in keyed])
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
        for row in conn.execute(select(deliveries).where(deliveries.c.key.in_(chunk))).mappings():
            current[row["key"]] = dict(row)
    rows = []
    for key, evs in by_key.items():
        row = current.get(key) or _new_delivery(key, evs[0])
        for e in sorted(evs, key=lambda ev: ev.timestamp):
            _apply(row, e)
        rows.append(row)
    upsert(conn, deliveries, rows, ["key"])


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
    }


def _rank(state: str) -> int:
    kind = EventType(state)
    return _RANK.get(kind, 2 if kind in FINAL_TYPES else -1)


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
