"""A bulk load into SQLite builds the secondary indexes of events and deliveries after it.

A back-fill inserts every row into each index as it goes.  The keys of these indexes
(delivery keys, Message-IDs, queue ids, recipients) are spread over the whole key space,
so each batch's commit rewrites most of each index's pages, and the WAL copies them once
more: at 1M lines these seven indexes cost about an eighth of ``mailmon ingest``'s CPU.
``CREATE INDEX`` over the finished table sorts the keys once and writes each page once.

So :func:`indexes_deferred` drops them (in one transaction with a note of their
definitions in ``meta``) when the input is large beside what the store already holds,
and builds them again from that note when the load ends, however it ends.  If the
process dies first, the next :meth:`~monitor.store.Store.open` builds them (see
:func:`recover`); a lock file beside the database (held by the loading process, freed by
the kernel when it dies) tells a load still running from one that died.

Only SQLite: PostgreSQL keeps its indexes (and nothing here runs).  Results never
depend on an index: a query without one is slower, not different.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.exc import SQLAlchemyError

from monitor.store.schema import deliveries, events, meta
from monitor.store.wal import sqlite_file

__all__ = [
    "BYTES_PER_DELIVERY",
    "DEFERRED_KEY",
    "Deferral",
    "deferred_indexes",
    "indexes_deferred",
    "input_bytes",
    "left_dropped",
    "recover",
]

log = logging.getLogger(__name__)

#: ``meta`` key of the note: ``[name, CREATE INDEX statement]`` of each index dropped.
DEFERRED_KEY = "deferred_indexes"

#: Log bytes per delivery row, about (the 1M-line benchmark log: 160 MB, 257k deliveries):
#: the input is weighed against the rows already stored in these units.
BYTES_PER_DELIVERY = 600

#: A gzipped log (``ingest`` knows it by its magic bytes) holds about this many times its
#: size in text: MTA logs compress 10-15x; the lower figure errs towards keeping indexes.
_GZIP_RATIO = 5

_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?"


def deferred_indexes() -> list[str]:
    """The indexes a bulk load builds after it: every secondary index of the two tables
    that grow with each line (their primary keys stay: the load looks rows up by them)."""
    return sorted(i.name for t in (events, deliveries) for i in t.indexes if i.name)


@dataclass
class Deferral:
    """What :func:`indexes_deferred` did: ``indexes`` dropped (empty: none), and the
    seconds their build took at the end."""

    indexes: list[str]
    build_seconds: float | None = None


def _lock_path(db: Path) -> Path:
    return db.with_name(db.name + "-bulk.lock")


def _try_lock(db: Path) -> IO[bytes] | None:
    """The bulk-load lock of ``db``, held; None when another process holds it."""
    try:
        handle = open(_lock_path(db), "ab")  # noqa: SIM115 - held until the load ends
    except OSError as exc:  # a read-only directory: nobody loads in bulk there
        log.debug("no bulk-load lock beside %s: %s", db, exc)
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def input_bytes(paths: Sequence[str]) -> int | None:
    """The text the logs at ``paths`` hold, about; None when one is not a regular file
    (stdin, a pipe: a stream may go on for days, and the store is read meanwhile)."""
    total = 0
    for path in paths:
        if path == "-":
            return None
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return None
            with open(path, "rb") as f:
                gzipped = f.read(2) == b"\x1f\x8b"
        except OSError:
            continue  # ingest says why it cannot read it; it adds nothing here
        total += st.st_size * (_GZIP_RATIO if gzipped else 1)
    return total


@contextmanager
def indexes_deferred(engine: Engine, text_bytes: int | None) -> Iterator[Deferral]:
    """Within: the indexes :func:`deferred_indexes` names are dropped if the store is
    SQLite, ``text_bytes`` (:func:`input_bytes`) is known and outweighs the rows stored
    (:data:`BYTES_PER_DELIVERY` each), and no other load holds them dropped; built again
    on the way out, however the block ends."""
    done = Deferral([])
    db = sqlite_file(engine)
    if db is None or text_bytes is None:
        yield done
        return
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT max(rowid) FROM deliveries").scalar() or 0
    if stored * BYTES_PER_DELIVERY >= text_bytes:
        yield done
        return
    lock = _try_lock(db)
    if lock is None:
        yield done  # another load has them dropped: it builds them when it ends
        return
    try:
        done.indexes = _drop(engine)
        try:
            yield done
        finally:
            if done.indexes:
                started = time.monotonic()
                try:
                    _build(engine)
                except SQLAlchemyError as exc:  # every row is stored: only the indexes wait
                    log.warning(
                        "the indexes put off during the load of %s are not built yet (%s); "
                        "the next command to open the store builds them", db, exc,
                    )  # fmt: skip
                else:
                    done.build_seconds = time.monotonic() - started
    finally:
        lock.close()


def _drop(engine: Engine) -> list[str]:
    names = deferred_indexes()
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        if conn.execute(select(meta.c.value).where(meta.c.key == DEFERRED_KEY)).first():
            conn.rollback()  # a load that died left them dropped: recover() builds them
            return []
        marks = ", ".join("?" * len(names))
        found = sorted(
            (str(name), str(sql))
            for name, sql in conn.exec_driver_sql(
                f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name IN ({marks})",
                tuple(names),
            )
        )
        if not found:
            conn.rollback()
            return []
        conn.execute(meta.insert().values(key=DEFERRED_KEY, value=json.dumps(found)))
        for name, _ in found:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
        conn.commit()
    return [name for name, _ in found]


#: While building: SQLite's sorter keeps at most its connection's page cache of keys in
#: memory; past that it sorts runs on worker threads and merges them.  Measured on the
#: benchmark's 1M-line store (seven indexes): 0.89-0.98 s with the store's 32 MiB cache,
#: 0.87-0.91 with 4 MiB, 0.81 with 4 MiB and two sorter threads (0.25 s more CPU, on a
#: core the load has left idle by then); a 200 MiB cache took 1.33 s.
_BUILD_CACHE_KIB = 4096
_BUILD_THREADS = min(2, (os.cpu_count() or 1) - 1)


def _build(engine: Engine) -> None:
    """Build the indexes the note names, one transaction each (each holds the write lock
    as briefly as it can), then remove the note."""
    with engine.connect() as conn:
        row = conn.execute(select(meta.c.value).where(meta.c.key == DEFERRED_KEY)).first()
        conn.rollback()
        (cache,) = conn.exec_driver_sql("PRAGMA cache_size").one()
        (threads,) = conn.exec_driver_sql("PRAGMA threads").one()
        conn.exec_driver_sql(f"PRAGMA cache_size=-{_BUILD_CACHE_KIB}")
        conn.exec_driver_sql(f"PRAGMA threads={_BUILD_THREADS}")
        try:
            for name, sql in json.loads(row[0]) if row else []:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                if not conn.exec_driver_sql(_EXISTS, (name,)).first():  # a recovery built it
                    conn.exec_driver_sql(sql)
                conn.commit()
            conn.execute(delete(meta).where(meta.c.key == DEFERRED_KEY))
            conn.commit()
        finally:  # the connection goes back to the pool: as it was
            conn.rollback()
            conn.exec_driver_sql(f"PRAGMA cache_size={int(cache)}")
            conn.exec_driver_sql(f"PRAGMA threads={int(threads)}")


def left_dropped(conn: Connection) -> bool:
    """Whether a load's note of dropped indexes is in ``meta`` (one indexed read)."""
    return conn.execute(select(meta.c.key).where(meta.c.key == DEFERRED_KEY)).first() is not None


def recover(engine: Engine) -> bool:
    """Build the indexes a load left dropped, unless that load is still running; True
    when it built them (:meth:`Store.open` calls this when the note is there)."""
    db = sqlite_file(engine)
    if db is None:
        return False
    lock = _try_lock(db)
    if lock is None:
        return False  # the load is running: it builds them at its end
    try:
        started = time.monotonic()
        try:
            _build(engine)
        except SQLAlchemyError as exc:  # a read-only store: answers stay right, only slower
            log.warning("indexes that a bulk load of %s put off are still missing: %s", db, exc)
            return False
        log.warning(
            "indexes that a bulk load of %s had put off (it ended before building them) "
            "built again in %.1f s", db, time.monotonic() - started,
        )  # fmt: skip
        return True
    finally:
        lock.close()
