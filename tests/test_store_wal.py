"""WAL checkpoints on a thread of their own: the writer's commits do not copy the log into
the database, a long read's backlog is copied once it ends, and the log starts over."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from factories import ev

from monitor.model import Event
from monitor.store import Store
from monitor.store.process import WriterProcess
from monitor.store.wal import SAFETY_BYTES, WalCheckpointer


def _batch(n: int, first: int) -> list[Event]:
    return [ev("delivered", i / 100, recipient=f"u{i}@d{i % 7}.example", queue_id=f"Q{i:07d}",
               message_id=f"<m{i}@app.example>") for i in range(first, first + n)]  # fmt: skip


def _wal(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def _wait(what: str, done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _settled(path: Path) -> Callable[[], bool]:
    """True once the database file kept its size for half a second."""
    seen: list[int] = []

    def check() -> bool:
        seen.append(path.stat().st_size)
        return len(seen) >= 10 and len(set(seen[-10:])) == 1

    return check


def test_only_sqlite_files_get_one(postgres_url: str) -> None:
    """PostgreSQL and an in-memory SQLite have no WAL file to copy."""
    with Store.open(postgres_url) as store:
        assert WalCheckpointer.for_engine(store.engine) is None
    with Store.open("sqlite://") as store:
        assert WalCheckpointer.for_engine(store.engine) is None


def test_the_writer_commits_without_copying_the_log_and_the_checkpointer_rewinds_it(
    tmp_path: Path,
) -> None:
    """With the checkpointer's engine, commits leave the log to it (the automatic
    checkpoint only past SAFETY_BYTES): without its rounds the log grows past the default
    1,000 pages; with a round after each commit it starts over and stays short."""
    sizes = {}
    for name in ("alone", "rounds"):
        path = tmp_path / f"{name}.db"
        with Store.open(f"sqlite:///{path}") as store:
            wal = WalCheckpointer.for_engine(store.engine, restart_pages=50)
            assert wal is not None
            with store.engine.connect() as conn:
                page = conn.exec_driver_sql("PRAGMA page_size").scalar()
                bound = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
            assert bound == SAFETY_BYTES // page > 1000
            db = sqlite3.connect(path, timeout=0, isolation_level=None)
            for i in range(40):
                store.write(_batch(500, i * 500))
                if name == "rounds":
                    pages, copied = wal.checkpoint(db)
                    assert copied == pages  # nobody reads: all of it copied
            db.close()
            sizes[name] = _wal(path) // page
    assert sizes["alone"] > 1000  # the writer did not checkpoint at 1,000 pages
    assert sizes["rounds"] < sizes["alone"] // 4  # rewound, so the file stopped growing


def test_a_long_reads_backlog_is_copied_by_the_thread_not_a_commit(tmp_path: Path) -> None:
    """The writer process commits while a reader holds its snapshot (nothing can be
    copied meanwhile); once the reader is done, the pages reach the database file with no
    commit after it: the writer's checkpoint thread copied them."""
    path = tmp_path / "mailmon.db"
    url = f"sqlite:///{path}"
    with Store.open(url) as store:
        store.write(_batch(10, 0))
    reader = sqlite3.connect(path, isolation_level=None)
    with WriterProcess(url) as writer:
        writer.write(_batch(10, 10))
        _wait("that batch copied", _settled(path))
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # the snapshot is held
        before = path.stat().st_size
        for i in range(10):
            writer.write(_batch(500, 1000 + i * 500))
        assert path.stat().st_size == before  # the reader keeps every page in the log
        reader.execute("COMMIT")
        _wait("the log copied into the database", lambda: path.stat().st_size > before)
    reader.close()
    with Store.open(url) as store:
        assert store.count("events") == 20 + 5000


def test_a_failing_checkpoint_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A round that fails (here: the database file is not one) is logged once, not on
    every round, and the thread goes on."""
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"x" * 4096)
    wal = WalCheckpointer(str(path), every=0.01, spacing=0.01)
    with caplog.at_level("WARNING", logger="monitor.store.wal"), wal:
        time.sleep(0.3)
        assert wal._thread is not None and wal._thread.is_alive()
    failures = [r for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert len(failures) == 1
