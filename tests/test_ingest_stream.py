"""`mailmon ingest SOURCE -` and a named pipe: a live stream is stored while it runs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

FLOW = """\
2026-03-04T10:00:00+0000 mx1 postfix/smtpd[100]: 1A2B3C4D5E: client=app.example[192.0.2.10]
2026-03-04T10:00:00+0000 mx1 postfix/cleanup[101]: 1A2B3C4D5E: message-id=<m1@app.example>
2026-03-04T10:00:00+0000 mx1 postfix/qmgr[102]: 1A2B3C4D5E: from=<noreply@app.example>, size=1200, nrcpt=1 (queue active)
2026-03-04T10:00:01+0000 mx1 postfix/smtp[103]: 1A2B3C4D5E: to=<alice@gmail.com>, relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 OK)
"""
LATE = (
    "2026-03-04T10:05:00+0000 mx1 postfix/smtp[103]: 9F8E7D6C5B: to=<bob@gmail.com>, "
    "relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, delay=1, delays=0/0/0.5/0.5, "
    "dsn=2.0.0, status=sent (250 2.0.0 OK)\n"
)


def _events(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def _wait_for(want: int, db: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while _events(db) < want:
        assert proc.poll() is None, f"ingest exited early: {proc.communicate()}"
        if time.monotonic() > deadline:
            pytest.fail(f"{want} events not stored while the stream stays open")
        time.sleep(0.1)


def _ingest(path: str, db: Path, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "ingest", "postfix", path, "--db", f"sqlite:///{db}",
         "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MAILMON_RESOLVE_MX": "0"}, **kw,  # type: ignore[call-overload]
    )  # fmt: skip


def _stream(proc: subprocess.Popen[str], db: Path, out: IO[str], close: Callable[[], None]) -> None:
    """Lines arrive, the writer pauses with the stream open, more lines, then the end."""
    out.write(FLOW)
    out.flush()
    _wait_for(2, db, proc)  # stored while the writer still holds the stream open
    out.write(LATE)
    out.flush()
    _wait_for(3, db, proc)
    close()
    assert proc.wait(timeout=30) == 0
    assert proc.stdout is not None
    assert "read 5 lines" in proc.stdout.read()
    assert _events(db) == 3


def test_stdin_stream_is_stored_while_it_runs(tmp_path: Path) -> None:
    """`journalctl -f -o short-iso | mailmon ingest postfix -`: events are stored before the pipe closes."""
    db = tmp_path / "m.db"
    proc = _ingest("-", db, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    stdin = proc.stdin
    _stream(proc, db, stdin, stdin.close)


def test_named_pipe_is_read_as_a_stream(tmp_path: Path) -> None:
    """A FIFO given as the path is read as it is written, and the end of the writer ends ingest."""
    db, fifo = tmp_path / "m.db", tmp_path / "postfix.pipe"
    os.mkfifo(fifo)
    proc = _ingest(str(fifo), db)
    with fifo.open("w") as writer:  # blocks until ingest has opened the FIFO
        _stream(proc, db, writer, writer.close)
