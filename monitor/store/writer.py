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

from monitor.model import ATTEMPT_TYPES, FINAL_TYPES, Event, EventType, domain_of, event_id
from monitor.store.rows import EVENT_COLUMNS, event_row, insert_sql, sparse, sparse_rows
from monitor.store.schema import (
    BUCKET_SECONDS,
    FAILURE_OUTCOMES,
    counters,
    deliveries,
    events,
    failure_counters,
    sender_counters,
)

__all__ = [
    "STREAM_TAGS",
    "SenderTally",
    "delivery_key",
    "fold_sender",
    "hardness",
    "sender_rows",
    "stream_of",
    "stream_tag",
    "upsert",
    "write_events",
]

_CHUNK = 500  # bound on bound parameters per IN (...) query
_RANK = {EventType.SUBMITTED: 0, EventType.DEFERRED: 1}
_STATEFUL = frozenset(_RANK) | FINAL_TYPES
_FAILURES = frozenset(FAILURE_OUTCOMES)


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


def hardness(hard: bool | None) -> str:
    """``failure_counters.hard``: None (not classified) must not read as soft."""
    return "" if hard is None else "hard" if hard else "soft"


def stream_of(event: Event) -> str:
    """The traffic stream: our own non-delivery notices are kept apart."""
    return "ndr" if "ndr" in event.tags else ""


#: Tag keys that name a stream, first found wins: ``stream:`` is ours to set, ESPs and
#: MTAs call the same thing a category (SendGrid, Mailgun tags) or a campaign.
STREAM_TAGS = ("stream:", "category:", "campaign:")
_STREAM_CHARS = 64  # the width of stream columns
_VALUE_CHARS = 255  # sender_counters.value: PostgreSQL refuses longer, SQLite would keep it


def stream_tag(tags: Sequence[str]) -> str:
    """The stream ``tags`` name (``ndr`` for our own notices), ``""`` when none does."""
    if not tags:
        return ""
    for prefix in STREAM_TAGS:
        for tag in tags:
            if tag.startswith(prefix) and len(tag) > len(prefix):
                return tag[len(prefix) :][:_STREAM_CHARS]
    return "ndr" if "ndr" in tags else ""


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


_BOOL_INTS: dict[bool, object] = {True: 1, False: 0}
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
    # Key and time once per event: both are used three times below, and a delivery's
    # events usually share a batch, so one hash serves several of them.
    keys: dict[tuple[str | None, ...], str] = {}
    keyed: list[_Keyed] = []
    for e in fresh:
        if e.message_id:
            ident: tuple[str | None, ...] = (e.message_id, e.recipient)
        elif e.queue_id:
            ident = (e.source, e.queue_id, e.recipient)
        else:
            ident = (e.id,)
        key = keys.get(ident)
        if key is None:
            key = keys[ident] = delivery_key(e)
        keyed.append((key, e.timestamp, e))
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


_Keyed = tuple[str, float, Event]  # delivery key, UNIX time, event


def _count(conn: Connection, keyed: Sequence[_Keyed], sign: int = 1) -> None:
    """Fold the batch into the counter tables in memory: one upsert per distinct key.

    ``sign=-1`` takes events back out (``monitor.store.retract``).
    """
    totals: dict[tuple[int, str, str, str, str, str], int] = {}
    failures: dict[tuple[Any, ...], int] = {}
    by_sender: SenderTally = {}
    domains: dict[str, str] = {}  # sender -> its domain: a batch has few senders
    for _, ts, e in keyed:
        if e.type is _PLACED:
            continue  # a seed probe's placement is no delivery outcome: in no counter
        bucket = int(ts // BUCKET_SECONDS) * BUCKET_SECONDS
        provider = e.provider or "other"
        if provider.__class__ is not str:
            provider = str(provider)  # a Provider: plain str for the driver
        outcome = str(e.type)
        reason = e.reason or ""
        tags = e.tags
        ndr = 1 if tags and "ndr" in tags else 0
        k = (bucket, e.recipient_domain or "", provider, outcome, reason, "ndr" if ndr else "")
        totals[k] = totals.get(k, 0) + sign
        hard = blame = ""
        if outcome in _FAILURES:
            h = e.hard
            hard, blame = "" if h is None else "hard" if h else "soft", e.blame or ""
            fk = (*k[:5], hard, blame, k[5])
            failures[fk] = failures.get(fk, 0) + sign
        sender = e.sender or ""
        domain = domains.get(sender)
        if domain is None:
            domain = domains[sender] = (domain_of(sender) or "")[:_VALUE_CHARS]
        # fold_sender, inlined: this loop runs once per stored event.
        sk = (
            bucket, domain, e.sending_ip or "", stream_tag(tags) if tags else "",
            provider, outcome, reason, hard, blame, ndr,
        )  # fmt: skip
        by_sender[sk] = by_sender.get(sk, 0) + sign
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
    by_key: dict[str, list[tuple[float, Event]]] = {}
    for key, ts, e in keyed:
        same = by_key.get(key)
        if same is None:
            by_key[key] = [(ts, e)]
        else:
            same.append((ts, e))
    current: dict[str, list[Any]] = {}
    keys = list(by_key)
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        sql = (
            f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM deliveries"
            f" WHERE key IN ({_marks(conn, len(chunk))})"
        )
        for found in conn.exec_driver_sql(sql, tuple(chunk)):
            current[found[0]] = list(found)
    rows: list[Any] = []  # lists on SQLite (monitor.store.rows.sparse), else tuples
    sqlite = conn.dialect.name == "sqlite"
    for key, evs in by_key.items():
        row = current.get(key)
        if row is None:
            row = _new_delivery(key, *evs[0])
        if len(evs) > 1:
            evs.sort(key=_first)
        for ts, e in evs:
            _apply(row, ts, e)
        provider = row[_PROVIDER]
        if provider is not None and provider.__class__ is not str:
            row[_PROVIDER] = str(provider)  # a Provider: its value, as a plain str
        if sqlite:  # sqlite3 binds a bool through its adaptation lookup: 0 and 1 directly
            row[_HARD] = _BOOL_INTS.get(row[_HARD], row[_HARD])
            rows.append(row)
        else:
            rows.append(tuple(row))
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


def _first(pair: tuple[float, Event]) -> float:
    return pair[0]


_DELIVERY_COLUMNS = tuple(c.name for c in deliveries.columns)
# Positions in a delivery row (a list in _DELIVERY_COLUMNS order).
(
    _KEY, _SOURCE, _MESSAGE_ID, _QUEUE_ID, _SENDER, _RECIPIENT, _RECIPIENT_DOMAIN, _PROVIDER,
    _STREAM, _STATE, _SUBMITTED_AT, _FIRST_ATTEMPT_AT, _LAST_EVENT_AT, _FINAL_AT, _ATTEMPTS,
    _DEFERRALS, _REPLY_CODE, _ENHANCED_STATUS, _REASON, _HARD, _DIAGNOSTIC, _BLAME, _RULE,
    _SENDING_IP, _STREAM_TAG,
) = range(len(_DELIVERY_COLUMNS))  # fmt: skip
assert _DELIVERY_COLUMNS[_RULE] == "rule" and _DELIVERY_COLUMNS[_STATE] == "state"
assert _DELIVERY_COLUMNS[_STREAM_TAG] == "stream_tag"
_DELIVERY_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in _DELIVERY_COLUMNS if c != "key")


@lru_cache(maxsize=256)
def _delivery_upsert(bits: int) -> str:
    """SQLite's upsert of the delivery rows whose filled columns ``bits`` names."""
    names = [c for i, c in enumerate(_DELIVERY_COLUMNS) if bits >> i & 1]
    return (
        f"INSERT INTO deliveries ({', '.join(names)}) VALUES ({', '.join(['?'] * len(names))})"
        f" ON CONFLICT (key) DO UPDATE SET {_DELIVERY_UPDATE}"
    )


def _new_delivery(key: str, ts: float, e: Event) -> list[Any]:
    row: list[Any] = [None] * len(_DELIVERY_COLUMNS)
    row[_KEY] = key
    row[_SOURCE] = e.source
    row[_RECIPIENT] = e.recipient
    row[_RECIPIENT_DOMAIN] = e.recipient_domain
    row[_STREAM] = stream_of(e)
    row[_STATE] = str(e.type)
    row[_LAST_EVENT_AT] = ts
    row[_ATTEMPTS] = 0
    row[_DEFERRALS] = 0
    row[_STREAM_TAG] = ""
    return row


_RANK_OF = {k.value: _RANK.get(k, 2 if k in FINAL_TYPES else -1) for k in EventType}
_SUBMITTED = EventType.SUBMITTED
_DEFERRED = EventType.DEFERRED
_PLACED = EventType.PLACED
_DELIVERED = EventType.DELIVERED


def _apply(row: list[Any], ts: float, e: Event) -> None:
    """Fold one event at UNIX time ``ts`` into a delivery row; order-independent."""
    if row[_MESSAGE_ID] is None:
        row[_MESSAGE_ID] = e.message_id
    if row[_QUEUE_ID] is None:
        row[_QUEUE_ID] = e.queue_id
    if row[_SENDER] is None:
        row[_SENDER] = e.sender
    if row[_PROVIDER] is None:
        row[_PROVIDER] = e.provider
    if e.tags and not row[_STREAM_TAG]:  # the submission usually carries the tags
        row[_STREAM_TAG] = stream_tag(e.tags)
    previous_last = row[_LAST_EVENT_AT]
    if ts > previous_last:
        row[_LAST_EVENT_AT] = ts
    kind = e.type
    if kind is _SUBMITTED:
        at = row[_SUBMITTED_AT]
        row[_SUBMITTED_AT] = ts if at is None or ts < at else at
    elif kind is _DELIVERED and e.delay_seconds is not None:
        # The MTA's delay counts from the message's arrival: the submission time when the
        # submission itself was not seen (a log that starts mid-flight, KumoMTA without
        # its Reception records), so latency still has both ends. The earlier time wins,
        # as for submitted events, so the order of arrival does not matter.
        arrived = ts - e.delay_seconds
        at = row[_SUBMITTED_AT]
        row[_SUBMITTED_AT] = arrived if at is None or arrived < at else at
    if kind in ATTEMPT_TYPES:
        row[_ATTEMPTS] += 1
        first = row[_FIRST_ATTEMPT_AT]
        row[_FIRST_ATTEMPT_AT] = ts if first is None or ts < first else first
        if kind is _DEFERRED:
            row[_DEFERRALS] += 1
    if kind not in _STATEFUL:
        return
    rank, held = _RANK_OF[kind], _RANK_OF.get(row[_STATE], -1)
    decided_at = row[_FINAL_AT] if held == 2 else previous_last
    if rank > held or (rank == held and ts >= (decided_at or 0.0)):
        row[_STATE] = str(kind)
        row[_FINAL_AT] = ts if rank == 2 else None
        if rank >= 1:
            row[_REPLY_CODE] = e.reply_code
            row[_ENHANCED_STATUS] = e.enhanced_status
            row[_REASON] = e.reason
            row[_HARD] = e.hard
            row[_DIAGNOSTIC] = e.diagnostic
            row[_BLAME] = e.blame
            row[_RULE] = e.rule
            row[_SENDING_IP] = e.sending_ip
