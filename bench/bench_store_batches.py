"""The store's writes in small batches, as a live follow makes them.

    .venv/bin/python bench/bench_store_batches.py STORE.db [--batch 200] [--out FRESH.db]

Reads the events of a store that ``mailmon ingest`` filled (``STORE.db``, SQLite), in time
order, and writes them again through ``Store.write`` into a fresh SQLite store,
``--batch`` events a transaction: what following a log at a few hundred lines a second
writes, where a delivery's later events find its row already stored (a bulk ingest
writes most deliveries whole in one batch). Prints the CPU seconds of the writes alone
(reading the source is not counted). The fresh store holds what the source does:
compare them table by table to check a change of the writer.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import sqlalchemy as sa

from monitor.store import Store
from monitor.store.queries import _event_from_row
from monitor.store.schema import events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/out/store-batches.db"))
    args = parser.parse_args()
    engine = sa.create_engine(f"sqlite:///{args.source}")
    with engine.connect() as conn:
        query = sa.select(events).order_by(events.c.occurred_at, events.c.id)
        stored = [_event_from_row(r) for r in conn.execute(query).mappings()]
    engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{args.out}{suffix}").unlink(missing_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with Store.open(f"sqlite:///{args.out}") as store:
        start = os.times()
        for i in range(0, len(stored), args.batch):
            store.write(stored[i : i + args.batch])
        end = os.times()
        deliveries = store.count("deliveries")
    cpu = end.user + end.system - start.user - start.system
    print(f"{len(stored)} events, {deliveries} deliveries, batches of {args.batch}:"
          f" {cpu:.2f} CPU s ({end.system - start.system:.2f} system)")  # fmt: skip


if __name__ == "__main__":
    main()
