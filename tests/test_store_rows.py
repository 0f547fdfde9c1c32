"""SQLite's events rows bind only the columns an event fills (monitor.store.rows): the
values stored are those of every column bound, empty ones NULL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from factories import ev

from monitor.model import Event, Provider
from monitor.store import Store
from monitor.store.rows import EVENT_COLUMNS, insert_sql, sparse_rows
from monitor.store.schema import events
from monitor.store.wire import WireEvent, to_wire

_EVERY_FIELD = ev(
    "bounced", 1, provider=Provider.GOOGLE, relay="gmail-smtp-in.l.google.com[1.2.3.4]:25",
    sending_ip="192.0.2.9", client="app[10.0.0.1]", reply_code=550, enhanced_status="5.1.1",
    diagnostic="550 5.1.1 no such user", reason="userunknown", hard=True, blame="recipient",
    rule="user.unknown", delay_seconds=1.5, size_bytes=2048, attempt=2,
    tags=("stream:receipts", "ndr"), raw_ref="mail.log:7", orig_recipient="a@app.example",
    provider_message_id="pmid-1",
)  # fmt: skip

EVENTS: list[Event] = [
    _EVERY_FIELD,
    ev("submitted", 0, queue_id=None, message_id=None, sender=None, recipient=None),
    ev("deferred", 2, hard=False, reply_code=0, diagnostic="", tags=()),  # falsy, not empty
    ev("delivered", 3, provider="other", delay_seconds=0.0, attempt=0),
]


def _expected(key: str, e: Event) -> tuple[object, ...]:
    """Every column of ``e``'s row, spelled out here rather than by the code under test."""
    values = {
        "occurred_at": e.timestamp, "delivery_key": key, "type": e.type.value,
        "hard": None if e.hard is None else int(e.hard), "tags": ",".join(e.tags) or None,
        "provider": None if e.provider is None else str(e.provider),
    }  # fmt: skip
    return tuple(values[c] if c in values else getattr(e, c) for c in EVENT_COLUMNS)


def _full(bits: int, values: list[object]) -> tuple[object, ...]:
    """A sparse row back in every column, NULL where it has no value."""
    found = iter(values)
    return tuple(next(found) if bits >> i & 1 else None for i in range(len(EVENT_COLUMNS)))


def test_sparse_rows_hold_the_values_of_every_column() -> None:
    keyed = [(f"key{i}", e.timestamp, e) for i, e in enumerate(EVENTS)]
    every = [_expected(key, e) for key, _, e in keyed]
    groups = sparse_rows([(key, ts, to_wire(e)) for key, ts, e in keyed])
    assert sum(len(rows) for rows in groups.values()) == len(EVENTS)
    sparse = [_full(bits, row) for bits, rows in groups.items() for row in rows]
    assert sorted(sparse, key=repr) == sorted(every, key=repr)
    assert tuple(c.name for c in events.columns) == EVENT_COLUMNS
    # Empty columns are left out of the statement; falsy values are not empty.
    by_id = {row[0]: bits for bits, rows in groups.items() for row in rows}
    filled = {name for i, name in enumerate(EVENT_COLUMNS) if by_id[EVENTS[2].id] >> i & 1}
    assert {"hard", "reply_code", "diagnostic"} <= filled and "tags" not in filled
    assert insert_sql(by_id[EVENTS[1].id]) == (
        "INSERT INTO events (id, occurred_at, source, type, delivery_key) VALUES (?, ?, ?, ?, ?)"
    )
    assert len(groups) == len(EVENTS)  # four shapes, four statements


def test_stored_rows_equal_every_column_bound(tmp_path: Path) -> None:
    """Written through the store, then compared with the rows bound in full."""
    db = tmp_path / "rows.db"
    with Store.open(f"sqlite:///{db}") as store:
        store.write(EVENTS)
    with sqlite3.connect(db) as conn:
        stored = {r[0]: r for r in conn.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events")}
        types = dict(conn.execute("SELECT id, typeof(hard) FROM events"))
    assert len(stored) == len(EVENTS)
    keys = {r[0]: r[4] for r in stored.values()}
    for e in EVENTS:
        assert stored[e.id] == _expected(keys[e.id], e)
    assert types[EVENTS[2].id] == "integer" and types[EVENTS[1].id] == "null"


def test_a_delivery_upsert_empties_what_the_new_state_leaves_empty(tmp_path: Path) -> None:
    """Delivery rows bind only their filled columns too: a later batch whose state has no
    reply (delivered after a deferral) stores NULL where the deferral's reply was."""
    db = tmp_path / "deliveries.db"
    deferred = ev("deferred", 1, reply_code=451, enhanced_status="4.7.1",
                  diagnostic="451 4.7.1 try later", relay="mx.example[192.0.2.1]:25")  # fmt: skip
    delivered = ev("delivered", 5, delay_seconds=300.0)
    with Store.open(f"sqlite:///{db}") as store:
        store.write([deferred])
        with sqlite3.connect(db) as conn:
            first = conn.execute("SELECT state, reply_code, diagnostic, reason FROM deliveries").fetchone()
        store.write([delivered])
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT state, reply_code, enhanced_status, diagnostic, reason, hard, attempts,"
            " deferrals, sender, final_at IS NOT NULL FROM deliveries"
        ).fetchall()
    assert first == ("deferred", 451, "451 4.7.1 try later", None)  # unclassified: no pipeline
    assert row == [("delivered", None, None, None, None, None, 2, 1, "noreply@app.example", 1)]


def test_wire_positions_name_the_wire_fields() -> None:
    """The positions the compiled folds read a wire tuple by are WireEvent's fields."""
    from monitor.store import wire

    assert [getattr(wire, f.upper()) for f in WireEvent._fields] == list(range(27))
    assert WireEvent._make(to_wire(_EVERY_FIELD)).diagnostic == "550 5.1.1 no such user"
