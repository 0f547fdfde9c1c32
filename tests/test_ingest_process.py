"""`mailmon ingest` through its writer process: the same store as writing in-process, and a
killed process (the writer or ingest itself) loses nothing once ingest is run again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from factories import generated_log, store_contents, writer_processes

from monitor.cli import main
from monitor.store import process

REPO = Path(__file__).resolve().parents[1]
LINES = 30_000


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_log(tmp_path_factory.mktemp("ingest-process") / "mail.log", LINES, seed=11)


def _config(tmp_path: Path, name: str, batch_size: int) -> tuple[Path, Path]:
    db = tmp_path / f"{name}.db"
    config = tmp_path / f"{name}.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{db}"\nbatch_size = {batch_size}\n')
    return config, db


@pytest.fixture(scope="module")
def expected(log: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    """The store of one ingest that never fills a batch: every write in-process."""
    config, db = _config(tmp_path_factory.mktemp("in-process"), "whole", 100_000)
    with pytest.MonkeyPatch.context() as env:  # as conftest's per-test fixture sets it
        env.setenv("MAILMON_RESOLVE_MX", "0")
        assert main(["ingest", "postfix", str(log), "--config", str(config)]) == 0
    return store_contents(db)


def test_ingest_through_the_writer_process_stores_what_in_process_writing_stores(
    log: Path, tmp_path: Path, expected: dict[str, list[tuple]], monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[int] = []
    send = process.WriterProcess.send  # every batch, handed off or written at a checkpoint

    def counted(self: process.WriterProcess, batch: list, **kwargs: object) -> process.Sent:
        batch = list(batch)
        written.append(len(batch))
        return send(self, batch, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(process.WriterProcess, "send", counted)
    config, db = _config(tmp_path, "split", 500)
    assert main(["ingest", "postfix", str(log), "--config", str(config)]) == 0
    assert len(written) > 10 and sum(written) == len(expected["events"])
    assert not writer_processes(os.getpid())  # stopped with the command
    got = store_contents(db)
    assert len(got["events"]) > LINES // 3
    for table, rows in expected.items():
        assert got[table] == rows, table


def test_the_end_of_the_input_goes_in_smaller_batches(
    log: Path, tmp_path: Path, expected: dict[str, list[tuple]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within about two batches of the end, batches are a quarter the size, so the command
    waits for a small last batch; the store is the same."""
    from monitor.cli import ingest

    written: list[int] = []
    send = process.WriterProcess.send

    def counted(self: process.WriterProcess, batch: list, **kwargs: object) -> process.Sent:
        batch = list(batch)
        written.append(len(batch))
        return send(self, batch, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(process.WriterProcess, "send", counted)
    monkeypatch.setattr(ingest, "_FLUSH_SECONDS", 3600.0)  # no batch cut short by the clock
    config, db = _config(tmp_path, "tail", 2000)
    assert main(["ingest", "postfix", str(log), "--config", str(config)]) == 0
    small = 2000 // ingest._TAIL_DIVISOR
    # full batches, then the one pending when the tail began, then small ones
    first = next(i for i, n in enumerate(written) if n < 2000)
    assert first >= 3 and set(written[:first]) == {2000}
    assert all(n <= small for n in written[first + 1 :]) and len(written) - first >= 4
    assert 2000 <= sum(written[first:]) <= 3 * 2000  # about two batches' worth
    assert sum(written) == len(expected["events"])
    assert store_contents(db) == expected


@pytest.mark.parametrize("early_bytes", [1, None])
def test_the_writer_process_starts_with_a_large_input(
    log: Path, tmp_path: Path, expected: dict[str, list[tuple]], monkeypatch: pytest.MonkeyPatch,
    early_bytes: int | None,
) -> None:
    """An input of several batches starts the writer process before its first line is
    parsed (it imports while parsing goes on); a small one never needs it, and both store
    what writing in-process stores."""
    from monitor.cli import ingest
    from monitor.pipeline import Pipeline

    if early_bytes is not None:
        monkeypatch.setattr(ingest, "_EARLY_WRITER_BYTES", early_bytes)
    started: list[int] = []  # events pending when the writer was asked to start
    start = Pipeline.start_writer

    def spied(self: Pipeline) -> None:
        started.append(len(self._pending))
        start(self)

    monkeypatch.setattr(Pipeline, "start_writer", spied)
    config, db = _config(tmp_path, "early", 100_000)  # one batch: never handed off
    assert main(["ingest", "postfix", str(log), "--config", str(config)]) == 0
    assert started == ([0] if early_bytes else [])
    assert not writer_processes(os.getpid())
    assert store_contents(db) == expected


def _ingest(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "ingest", "postfix", str(log), "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def _events(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # no schema yet
        return 0


def _writer_once_storing(proc: subprocess.Popen[bytes], db: Path) -> int:
    """The ingest's writer process, once it has committed a batch."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        writers = writer_processes(proc.pid)
        if writers and _events(db) > 0:
            return min(writers)
        time.sleep(0.02)
    raise AssertionError("no writer process stored anything in time")


@pytest.mark.parametrize("victim", ["writer", "ingest"])
def test_a_killed_process_loses_nothing_once_ingest_runs_again(
    log: Path, tmp_path: Path, expected: dict[str, list[tuple]], victim: str
) -> None:
    """The writer killed: ingest stops with a clear error; ingest killed: its writer does
    not outlive it. Either way, what is stored is whole batches, and ingesting the log
    again gives the store of an uninterrupted run."""
    config, db = _config(tmp_path, victim, 500)
    proc = _ingest(config, log)
    writer = _writer_once_storing(proc, db)
    if victim == "writer":
        os.kill(writer, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2
        assert b"mailmon: error: the store's writer process stopped" in err
    else:
        proc.kill()
        proc.communicate(timeout=120)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{writer}") and time.monotonic() < deadline:
            time.sleep(0.05)  # it reads end-of-file from its pipe and exits
        assert not os.path.exists(f"/proc/{writer}"), "the writer outlived ingest"
    stored = _events(db)
    assert 0 < stored < len(expected["events"])
    again = _ingest(config, log)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    got = store_contents(db)
    for table, rows in expected.items():
        assert got[table] == rows, table
