"""A bulk load into SQLite builds the secondary indexes of events and deliveries at its end:
the same rows and the same indexes as a load that kept them, and a load that died leaves
them to the next open of the store, never to a load still running."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from factories import generated_log, store_contents
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from monitor.cli import main
from monitor.store import Store, bulk

REPO = Path(__file__).resolve().parents[1]

LINES = 20_000
DEFERRED = bulk.deferred_indexes()


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_log(tmp_path_factory.mktemp("bulk") / "mail.log", LINES, seed=5)


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[Path, str, dict[str, str]]:
    """An empty store: its file, its URL and its indexes as the schema declares them."""
    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    Store.open(url).close()
    return db, url, _indexes(db)


def _indexes(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))


def _note(db: Path) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT value FROM mailmon_meta WHERE key = ?", (bulk.DEFERRED_KEY,)
        ).fetchone()
    return row[0] if row else None


def _ingest(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> dict:
    capsys.readouterr()
    assert main(["ingest", "postfix", *args, "--db", f"sqlite:///{db}", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_deferred_indexes_are_the_secondary_indexes_of_events_and_deliveries() -> None:
    assert DEFERRED == [
        "ix_deliveries_deferred_final", "ix_deliveries_delivered_final",
        "ix_deliveries_domain_state", "ix_deliveries_message_id", "ix_deliveries_queue_id",
        "ix_deliveries_recipient", "ix_events_delivery_key",
    ]  # fmt: skip


def test_a_bulk_load_builds_the_indexes_at_its_end_and_stores_the_same_rows(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    kept, deferred = tmp_path / "kept.db", tmp_path / "deferred.db"
    summary = _ingest(capsys, kept, str(log), "--keep-indexes")
    assert summary["indexes_built_after_load"] is None

    at_build: list[dict[str, str]] = []
    build = bulk._build

    def spied(engine: object) -> None:
        at_build.append(_indexes(deferred))  # every batch written, nothing built yet
        build(engine)  # type: ignore[arg-type]

    monkeypatch.setattr(bulk, "_build", spied)
    summary = _ingest(capsys, deferred, str(log))
    built = summary["indexes_built_after_load"]
    assert built["indexes"] == DEFERRED and built["seconds"] >= 0
    assert len(at_build) == 1 and not set(DEFERRED) & set(at_build[0])
    assert summary["stored"] == len(store_contents(kept)["events"]) > 5_000

    built_sql, kept_sql = _indexes(deferred), _indexes(kept)
    assert [built_sql[n] for n in DEFERRED] == [kept_sql[n] for n in DEFERRED]  # as declared
    assert _note(deferred) is None
    assert store_contents(deferred) == store_contents(kept)
    with sqlite3.connect(deferred) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_load_small_beside_the_store_keeps_its_indexes(
    log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store.db"
    assert _ingest(capsys, db, str(log))["indexes_built_after_load"] is not None
    small = tmp_path / "small.log"
    small.write_text("".join(log.read_text().splitlines(keepends=True)[:2_000]))
    assert _ingest(capsys, db, str(small))["indexes_built_after_load"] is None
    assert set(DEFERRED) <= set(_indexes(db))


def test_the_input_is_weighed_as_text_and_a_stream_keeps_the_indexes(tmp_path: Path) -> None:
    plain = tmp_path / "mail.log"
    plain.write_bytes(b"x" * 10_000)
    packed = tmp_path / "mail.log.1.gz"
    packed.write_bytes(gzip.compress(os.urandom(1_000), mtime=0))
    assert bulk.input_bytes([str(plain)]) == 10_000
    assert bulk.input_bytes([str(plain), str(packed)]) == 10_000 + 5 * packed.stat().st_size
    assert bulk.input_bytes([str(tmp_path / "missing.log"), str(plain)]) == 10_000
    assert bulk.input_bytes([str(plain), "-"]) is None
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert bulk.input_bytes([str(fifo)]) is None


def test_postgresql_keeps_its_indexes(postgres_url: str) -> None:
    store = Store.open(postgres_url)
    try:
        with bulk.indexes_deferred(store.engine, 10**12) as deferral:
            assert deferral.indexes == []
        assert deferral.build_seconds is None
    finally:
        store.close()


def test_an_error_inside_the_load_still_builds_the_indexes(fresh: tuple) -> None:
    db, url, before = fresh
    store = Store.open(url)
    with pytest.raises(RuntimeError), bulk.indexes_deferred(store.engine, 10**9) as deferral:
        assert deferral.indexes == DEFERRED
        assert not set(DEFERRED) & set(_indexes(db))
        assert json.loads(_note(db) or "[]") == [[n, before[n]] for n in DEFERRED]
        raise RuntimeError("the load failed")
    store.close()
    assert _indexes(db) == before and _note(db) is None


def test_the_build_sorts_on_threads_and_hands_the_connection_back_as_it_was(
    fresh: tuple,
) -> None:
    """The indexes are built with a small sorter cache and sorter threads (faster: see
    bulk.py); the pooled connection that built them keeps the store's own settings after."""
    db, url, before = fresh
    store = Store.open(url)
    with store.engine.connect() as conn:
        settings = conn.exec_driver_sql("PRAGMA cache_size").scalar(), conn.exec_driver_sql(
            "PRAGMA threads"
        ).scalar()
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    with bulk.indexes_deferred(store.engine, 10**9):
        event.listen(store.engine, "before_cursor_execute", seen)
    event.remove(store.engine, "before_cursor_execute", seen)
    assert _indexes(db) == before
    creates = [i for i, s in enumerate(statements) if s.startswith("CREATE INDEX")]
    assert len(creates) == len(DEFERRED)
    cache = statements.index(f"PRAGMA cache_size=-{bulk._BUILD_CACHE_KIB}")
    threads = statements.index(f"PRAGMA threads={bulk._BUILD_THREADS}")
    assert max(cache, threads) < creates[0]
    with store.engine.connect() as conn:
        assert settings == (-32768, 0)
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -32768
        assert conn.exec_driver_sql("PRAGMA threads").scalar() == 0
    store.close()


def test_another_open_during_the_load_leaves_its_indexes_to_it(fresh: tuple) -> None:
    db, url, before = fresh
    store = Store.open(url)
    with bulk.indexes_deferred(store.engine, 10**9) as deferral:
        assert deferral.indexes == DEFERRED
        Store.open(url).close()  # serve, or the writer process, opening meanwhile
        assert not set(DEFERRED) & set(_indexes(db))
        with bulk.indexes_deferred(store.engine, 10**9) as second:  # a second load
            assert second.indexes == []
    store.close()
    assert _indexes(db) == before and _note(db) is None


def test_a_load_that_died_leaves_its_indexes_to_the_next_open(
    fresh: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    db, url, before = fresh
    died = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os
            from monitor.store import Store, bulk
            store = Store.open({url!r})
            with bulk.indexes_deferred(store.engine, 10**9) as deferral:
                assert deferral.indexes
                os._exit(3)  # killed in the middle of the load
        """)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert died.returncode == 3, died.stderr
    assert not set(DEFERRED) & set(_indexes(db)) and _note(db) is not None

    Store.open(url, create=False).close()
    assert _indexes(db) == before and _note(db) is None
    assert "built again" in caplog.text


def test_an_index_that_cannot_be_built_again_does_not_stop_the_store_opening(
    fresh: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    db, url, _ = fresh
    with sqlite3.connect(db) as conn:  # a note no build can follow (a disk full, read-only)
        conn.execute("INSERT INTO mailmon_meta VALUES (?, ?)", (bulk.DEFERRED_KEY, json.dumps(
            [["ix_gone", "CREATE INDEX ix_gone ON no_such_table (x)"]])))  # fmt: skip
    Store.open(url, create=False).close()
    assert "still missing" in caplog.text and _note(db) is not None


def test_a_build_that_fails_at_the_end_of_the_load_is_left_to_the_next_open(
    fresh: tuple, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, url, before = fresh
    store = Store.open(url)
    build = bulk._build

    def locked(engine: object) -> None:
        raise OperationalError("CREATE INDEX", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(bulk, "_build", locked)
    with bulk.indexes_deferred(store.engine, 10**9) as deferral:
        assert deferral.indexes == DEFERRED
    assert deferral.build_seconds is None and "not built yet" in caplog.text
    assert _note(db) is not None
    monkeypatch.setattr(bulk, "_build", build)
    Store.open(url).close()
    store.close()
    assert _indexes(db) == before and _note(db) is None


def test_ingest_killed_in_the_middle_leaves_its_indexes_to_the_next_command(
    log: Path, tmp_path: Path, fresh: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    db, url, before = fresh
    env = {**os.environ, "MAILMON_RESOLVE_MX": "0"}
    ingest = subprocess.Popen(
        [sys.executable, "-m", "monitor", "ingest", "postfix", str(log), "--db", url,
         "--no-progress"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _note(db) is None:  # the indexes are dropped: the load has begun
            assert ingest.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        ingest.send_signal(signal.SIGKILL)
    finally:
        ingest.wait(timeout=30)
    assert not set(DEFERRED) & set(_indexes(db))

    # The next command opens the store, builds them, then goes on: all stored, once.
    summary = _ingest(capsys, db, str(log))
    assert _indexes(db) == before and _note(db) is None
    kept = tmp_path / "kept.db"
    _ingest(capsys, kept, str(log), "--keep-indexes")
    assert store_contents(db) == store_contents(kept)
    assert summary["stored"] + summary["duplicates"] == summary["events"]
