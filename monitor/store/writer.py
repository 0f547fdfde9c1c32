"""Writing a batch of events: dedupe by id, insert, fold into deliveries and counters.

Everything for one batch happens in the caller's transaction, so a batch is either
fully stored (events, delivery states, counters and any checkpoint written with it)
or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table

from monitor.model import Event
from monitor.store import fold
from monitor.store.fold import DELIVERY_COLUMNS, STREAM_TAGS, stream_tag
from monitor.store.rows import EVENT_COLUMNS, event_row, insert_sql, sparse, sparse_rows
from monitor.store.schema import (
    FAILURE_OUTCOMES,
    counters,
    deliveries,
    events,
    failure_counters,
    sender_counters,
)
from monitor.store.wire import wired

__all__ = [
    "STREAM_TAGS",
    "SenderTally",
    "fold_sender",
    "hardness",
    "sender_rows",
    "stream_tag",
    "upsert",
    "write_events",
]

_CHUNK = 500  # bound on bound parameters per IN (...) query
_FAILURES = frozenset(FAILURE_OUTCOMES)


def hardness(hard: bool | None) -> str:
    """``failure_counters.hard``: None (not classified) must not read as soft."""
    return "" if hard is None else "hard" if hard else "soft"


#: (bucket, sender domain, sending IP, stream, provider, outcome, reason, hard, blame, ndr)
#: -> count: a batch is folded by all three dimensions at once (one dict update per
#: event), then spread into ``sender_counters`` rows per distinct key (:func:`sender_rows`).
SenderTally = dict[tuple[int, str, str, str, str, str, str, str, str, int], int]


def fold_sender(
    totals: SenderTally,
    bucket: int,
    sender_domain: str,
    sending_ip: str,
    tags: Sequence[str],
    provider: str,
    outcome: str,
    reason: str,
    hard: bool | None,
    blame: str | None,
) -> None:
    """Count one event in ``totals`` (the writer inlines this; the migration calls it)."""
    ndr = 1 if tags and "ndr" in tags else 0
    failed = outcome in _FAILURES
    k = (
        bucket, sender_domain, sending_ip, stream_tag(tags), provider, outcome, reason,
        hardness(hard) if failed else "", (blame or "") if failed else "", ndr,
    )  # fmt: skip
    totals[k] = totals.get(k, 0) + 1


def sender_rows(totals: SenderTally) -> list[tuple[Any, ...]]:
    """``sender_counters`` rows: each tally key counts once per dimension."""
    rows: dict[tuple[Any, ...], int] = {}
    for (bucket, domain, ip, stream, provider, *rest), n in totals.items():
        for k in (
            (bucket, "sender_domain", domain, provider, *rest),
            (bucket, "sending_ip", ip, provider, *rest),
            (bucket, "stream", stream, provider, *rest),
        ):
            rows[k] = rows.get(k, 0) + n
    return [(*k, n) for k, n in rows.items()]


_EVENT_COLUMNS = tuple(c.name for c in events.columns)
assert _EVENT_COLUMNS == EVENT_COLUMNS, "monitor.store.rows must name the events table's columns"
_ROWS_SLICE = 5000
_sparse_insert = lru_cache(maxsize=256)(insert_sql)


_HARD_AT = _EVENT_COLUMNS.index("hard")


def _boolean_hard(row: list[object]) -> list[object]:
    """``row`` for PostgreSQL, which refuses an integer in a boolean column."""
    hard = row[_HARD_AT]
    if hard is not None:
        row[_HARD_AT] = bool(hard)
    return row


def _marks(conn: Connection, n: int) -> str:
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return ", ".join([mark] * n)


def _insert_sql(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    tail: str = "",
) -> str:
    """Plain SQL for a bulk insert through the driver (Core's per-row work costs 3x here).

    Names are quoted where the dialect needs it: a record kind may name a field ``check``.
    """
    quote = conn.dialect.identifier_preparer.quote
    cols = ", ".join(map(quote, columns))
    marks = _marks(conn, len(columns))
    return f"INSERT INTO {quote(table.name)} ({cols}) VALUES ({marks}){tail}"


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
    # Key and time once per event, for the compiled folds that read wire tuples.
    keyed = fold.keyed([wired(e) for e in fresh])
    cursor = conn.connection.cursor()
    try:
        if conn.dialect.name == "sqlite":
            # Only the columns each event fills are bound (monitor.store.rows); a slice
            # at a time, so a batch's rows never all sit in memory.
            for start in range(0, len(keyed), _ROWS_SLICE):
                for bits, rows in sparse_rows(keyed[start : start + _ROWS_SLICE]).items():
                    cursor.executemany(_sparse_insert(bits), rows)
        else:
            # Rows are made as the driver takes them (psycopg takes any iterable).
            sql = _insert_sql(conn, events, _EVENT_COLUMNS)
            made = (_boolean_hard(event_row(key, ts, e)) for key, ts, e in keyed)
            cursor.executemany(sql, made)  # type: ignore[arg-type]
    finally:
        cursor.close()
    _count(conn, keyed)
    _fold_deliveries(conn, keyed)
    return fresh


_Keyed = tuple[str, float, tuple[Any, ...]]  # delivery key, UNIX time, wire tuple


def _count(conn: Connection, keyed: Sequence[_Keyed], sign: int = 1) -> None:
    """Fold the batch into the counter tables in memory: one upsert per distinct key.

    ``sign=-1`` takes events back out (``monitor.store.retract``).
    """
    totals, failures, by_sender = fold.tally(keyed, sign)
    _upsert_counts(conn, counters, [(*k, n) for k, n in totals.items()])
    _upsert_counts(conn, sender_counters, sender_rows(by_sender))
    _upsert_counts(conn, failure_counters, [(*k, n) for k, n in failures.items()])


def _upsert_counts(conn: Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    columns = [c.name for c in table.columns]
    keys = [c.name for c in table.primary_key]
    _upsert_rows(conn, table, columns, keys, rows, "count")


def _upsert_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    keys: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    increment: str | None = None,
) -> None:
    """:func:`upsert` for rows already in ``columns`` order."""
    if not rows:
        return
    if increment:
        update = f"{increment} = {table.name}.{increment} + excluded.{increment}"
    else:
        update = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    tail = f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}"
    conn.exec_driver_sql(_insert_sql(conn, table, columns, tail), rows)


def _fold_deliveries(conn: Connection, keyed: Sequence[_Keyed]) -> None:
    keys = list({key: None for key, _, _ in keyed})
    current: dict[str, list[Any]] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        sql = (
            f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM deliveries"
            f" WHERE key IN ({_marks(conn, len(chunk))})"
        )
        for found in conn.exec_driver_sql(sql, tuple(chunk)):
            current[found[0]] = list(found)
    sqlite = conn.dialect.name == "sqlite"
    rows = fold.fold_rows(keyed, current, sqlite)  # lists on SQLite (rows.sparse), else tuples
    if not sqlite:
        _upsert_rows(conn, deliveries, _DELIVERY_COLUMNS, ["key"], rows)
        return
    # Only the columns a row fills are bound (monitor.store.rows); the update sets every
    # column, so one left out (empty) is NULL in the stored row as well.
    cursor = conn.connection.cursor()
    try:
        for bits, filled in sparse(rows).items():
            cursor.executemany(_delivery_upsert(bits), filled)
    finally:
        cursor.close()


_DELIVERY_COLUMNS = tuple(c.name for c in deliveries.columns)
assert _DELIVERY_COLUMNS == DELIVERY_COLUMNS, "monitor.store.fold must name the deliveries columns"
_DELIVERY_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in _DELIVERY_COLUMNS if c != "key")


@lru_cache(maxsize=256)
def _delivery_upsert(bits: int) -> str:
    """SQLite's upsert of the delivery rows whose filled columns ``bits`` names."""
    names = [c for i, c in enumerate(_DELIVERY_COLUMNS) if bits >> i & 1]
    return (
        f"INSERT INTO deliveries ({', '.join(names)}) VALUES ({', '.join(['?'] * len(names))})"
        f" ON CONFLICT (key) DO UPDATE SET {_DELIVERY_UPDATE}"
    )


# What monitor.store.retract folds with (the same as a batch's rows).
_new_delivery = fold.new_delivery
_apply = fold.apply
