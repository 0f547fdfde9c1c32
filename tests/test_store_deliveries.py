"""Delivery rows: batch by batch they end as one batch leaves them, and two writers at once
store every event and count once."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import sqlalchemy as sa
from factories import ev

from monitor.model import Event
from monitor.store import Store


def _learned_later() -> list[Event]:
    """Alice's delivery seen first without its queue id, sender or provider (an attempt
    read before the submission), then submitted and delivered; Bob's bounced."""
    return [
        ev("deferred", 1, queue_id=None, sender=None, reply_code=421, enhanced_status="4.7.28",
           reason="speeding", attempt=1, sending_ip="203.0.113.7"),
        ev("submitted", 0, provider="gmail", tags=("stream:spring",)),
        ev("delivered", 9, reply_code=250, attempt=2, delay_seconds=540.0,
           sending_ip="203.0.113.8"),
        ev("submitted", 0, recipient="bob@outlook.com"),
        ev("bounced", 1, recipient="bob@outlook.com", reply_code=550, enhanced_status="5.1.1",
           reason="userunknown", hard=True, diagnostic="550 5.1.1 user unknown"),
    ]  # fmt: skip


def _rows(store: Store) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM deliveries ORDER BY key"))]


def _clear(store: Store) -> None:
    with store.engine.begin() as conn:
        for table in ("events", "deliveries", "counters", "sender_counters", "failure_counters"):
            conn.execute(sa.text(f"DELETE FROM {table}"))


def test_a_delivery_written_batch_by_batch_ends_as_in_one_batch(db_url: str) -> None:
    """Each event in a batch of its own, in every order, leaves the rows one batch of them
    all leaves, and what a later event teaches (queue id, sender) is found by trace."""
    flow = _learned_later()
    with Store.open(db_url) as store:
        store.write(flow)
        whole = _rows(store)
        (alice,) = store.trace("alice@gmail.com")
        assert alice["delivery"]["state"] == "delivered"
        assert alice["delivery"]["queue_id"] == "4B1C2D3E4F"
        for order in itertools.permutations(flow[:3]):
            _clear(store)
            store.write(flow[3:])
            for e in order:
                store.write([e])
                store.write([e])  # stored before: changes nothing
            assert _rows(store) == whole, order
        _clear(store)
        store.write([flow[0]])
        assert store.trace("4B1C2D3E4F") == []  # no row has that queue id yet
        store.write([flow[1]])
        (found,) = store.trace("4B1C2D3E4F")
        row = found["delivery"]
        assert (row["queue_id"], row["sender"], row["provider"], row["stream_tag"]) == (
            "4B1C2D3E4F", "noreply@app.example", "gmail", "spring")  # fmt: skip
        assert (row["state"], row["attempts"], row["deferrals"]) == ("deferred", 1, 1)


def test_two_writers_at_once(db_url: str) -> None:
    """Two processes' worth of writers (``ingest`` beside ``serve``) on the same deliveries at
    once: no batch fails, every event and delivery is stored once and every count kept."""
    n = 60
    submitted = [ev("submitted", 0, recipient=f"u{i}@gmail.com", queue_id=f"Q{i}")
                 for i in range(n)]  # fmt: skip
    delivered = [ev("delivered", 1 + i / 60, recipient=f"u{i}@gmail.com", queue_id=f"Q{i}",
                    reply_code=250, attempt=1) for i in range(n)]  # fmt: skip
    with Store.open(db_url) as serial:
        serial.write(submitted + delivered)
        expected = _rows(serial)
        _clear(serial)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(events: list[Event]) -> None:
        try:
            with Store.open(db_url) as store:
                start.wait()
                for i in range(0, len(events), 3):
                    store.write(events[i : i + 3])
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(evs,)) for evs in (submitted, delivered)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store.open(db_url) as store:
        assert store.count("events") == 2 * n
        assert store.count("deliveries") == n
        (stats,) = store.stats("domain")
        assert (stats["submitted"], stats["delivered"]) == (n, n)
        if store.engine.dialect.name == "sqlite":
            # One writer at a time (the database's write lock, taken by the batch's first
            # insert, before the delivery rows are read): exactly the serial result.
            assert _rows(store) == expected
