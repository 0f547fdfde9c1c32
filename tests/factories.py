"""Small builders for events in tests, and helpers several test files share."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from monitor.model import Event, EventType
from monitor.store import Store
from monitor.store.migrations import LATEST

T0 = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]

#: The tables an ingest fills, each with the order its rows are compared in.
STORE_TABLES = {
    "events": "id",
    "deliveries": "key",
    "counters": "bucket, recipient_domain, provider, outcome, reason, stream",
    "failure_counters": "bucket, recipient_domain, provider, outcome, reason, hard, blame, stream",
    "sender_counters": "bucket, dimension, value, provider, outcome, reason, hard, blame, ndr",
}


class Clock:
    """A settable clock for code under test that takes ``clock=``."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ev(kind: str, minutes: float = 0, **fields: Any) -> Event:
    """An event ``minutes`` after T0 with sensible defaults for one Postfix message."""
    defaults: dict[str, Any] = {
        "source": "postfix:mx1",
        "queue_id": "4B1C2D3E4F",
        "message_id": "abc123@app.example",
        "sender": "noreply@app.example",
        "recipient": "alice@gmail.com",
    }
    defaults.update(fields)
    return Event(type=EventType(kind), occurred_at=T0 + timedelta(minutes=minutes), **defaults)


#: What each schema step added, undone: a test builds an older store from a new one.
_OLD_SENDER_KEY = "bucket, dimension, value, provider, outcome, reason, ndr"
_UNDO = {
    11: ("DROP INDEX ix_deliveries_deferred_final",),
    10: ("DROP TABLE jobs",),
    9: ("ALTER TABLE provider_cache DROP COLUMN expires_at",),
    8: ("CREATE TABLE sender_counters_7 (bucket INTEGER NOT NULL, dimension VARCHAR(16) NOT NULL,"
        " value VARCHAR(255) NOT NULL, provider VARCHAR(32) NOT NULL, outcome VARCHAR(16)"
        " NOT NULL, reason VARCHAR(32) NOT NULL, ndr INTEGER NOT NULL, count INTEGER NOT NULL,"
        f" PRIMARY KEY ({_OLD_SENDER_KEY}))",
        f"INSERT INTO sender_counters_7 SELECT {_OLD_SENDER_KEY}, SUM(count)"
        f" FROM sender_counters GROUP BY {_OLD_SENDER_KEY}",
        "DROP TABLE sender_counters",
        "ALTER TABLE sender_counters_7 RENAME TO sender_counters",
        "CREATE INDEX ix_sender_counters_dimension_bucket ON sender_counters (dimension, bucket)"),
    7: ("ALTER TABLE deliveries DROP COLUMN sending_ip",
        "ALTER TABLE deliveries DROP COLUMN stream_tag"),
    6: ("DROP TABLE failure_counters",),
    5: ("DROP TABLE sender_counters",),
    4: ("DROP INDEX ix_deliveries_delivered_final",),
    3: ("DROP TABLE incidents",),
    2: tuple(f"ALTER TABLE {t} DROP COLUMN {c}"
             for t in ("events", "deliveries") for c in ("blame", "rule")),
}  # fmt: skip


def downgrade(db_url: str, version: int) -> None:
    """Turn the (closed) store at ``db_url`` into one at schema ``version``, data kept."""
    assert set(_UNDO) == set(range(2, LATEST + 1)), "a schema step has no undo here"
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        for step in range(LATEST, version, -1):
            for statement in _UNDO[step]:
                conn.execute(sa.text(statement))
        conn.execute(
            sa.text("UPDATE mailmon_meta SET value = :v WHERE key = 'schema_version'"),
            {"v": str(version)},
        )
    engine.dispose()


def refuse_checkpoints(store: Store) -> None:
    """The database fails every checkpoint write as a full disk would (a transient error)."""
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            # The trigger is compiled with the checkpoint's INSERT: "no such function" is an
            # OperationalError, what a locked or full database raises.
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON checkpoints"
                                 " BEGIN SELECT mailmon_disk_full(); END")  # fmt: skip
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'disk full' USING ERRCODE = '53100'; END $$"
            )
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON checkpoints"
                                 " FOR EACH ROW EXECUTE FUNCTION refuse()")  # fmt: skip


def writer_processes(parent: int) -> set[int]:
    """The children of ``parent`` that run the store's writer (monitor.store.process)."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue  # ended meanwhile
            # the command name may hold spaces and parens: the fields follow the last ')'
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent and \
                    b"monitor.store.process" in cmdline:  # fmt: skip
                found.add(int(entry.name))
    return found


def generated_log(path: Path, lines: int, seed: int) -> Path:
    """``path``: the benchmark's Postfix log (``bench/gen_postfix_log.py``) of ``lines`` lines."""
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gen_postfix_log.py"), "--lines", str(lines),
         "--out", str(path), "--seed", str(seed)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return path


def store_contents(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of :data:`STORE_TABLES` in the SQLite store at ``db``, in a fixed order."""
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {o}").fetchall()
                for t, o in STORE_TABLES.items()}  # fmt: skip
