"""Crash safety: `serve` killed with SIGKILL at random points ends with the same store."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINES = 40_000


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A realistic Postfix log with deferrals, expiries and interleaved messages."""
    path = tmp_path_factory.mktemp("crash") / "mail.log"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gen_postfix_log.py"), "--lines", str(LINES),
         "--out", str(path), "--seed", "7"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return path


def _config(workdir: Path, log: Path, batch_size: int) -> Path:
    config = workdir / "mailmon.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{workdir / "m.db"}"\nbatch_size = {batch_size}\n'
        "[service]\nlisten_port = 0\n"
        f'[[logs]]\npath = "{log}"\npoll_interval_seconds = 0.05\nmax_bytes_per_poll = 131072\n'
    )
    return config


def _serve(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def _offset(db: Path, log: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            row = conn.execute(
                "SELECT state FROM checkpoints WHERE source = ?", (f"postfix:{log}",)
            ).fetchone()
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    return int(json.loads(row[0])["position"]["offset"]) if row else 0


def _run_to_end(config: Path, db: Path, log: Path) -> None:
    proc = _serve(config)
    try:
        deadline = time.monotonic() + 240
        while _offset(db, log) < log.stat().st_size:
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not catch up in time"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _contents(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(db) as conn:
        return {
            "events": conn.execute(
                "SELECT id, type, occurred_at, message_id, queue_id, recipient, reason, attempt"
                " FROM events ORDER BY id").fetchall(),
            "deliveries": conn.execute("SELECT * FROM deliveries ORDER BY key").fetchall(),
            "counters": conn.execute(
                "SELECT * FROM counters ORDER BY bucket, recipient_domain, provider, outcome,"
                " reason, stream").fetchall(),
        }  # fmt: skip


# 100: several batches per poll go to the background writer, so kills land mid-batch too.
@pytest.mark.parametrize("batch_size", [3000, 100])
def test_sigkill_at_random_points_changes_nothing(
    big_log: Path, tmp_path: Path, batch_size: int
) -> None:
    """Killed with SIGKILL several times while catching up, then restarted: same store as one clean run."""
    clean_dir, crash_dir = tmp_path / "clean", tmp_path / "crash"
    clean_dir.mkdir()
    crash_dir.mkdir()
    _run_to_end(_config(clean_dir, big_log, 3000), clean_dir / "m.db", big_log)

    config, db = _config(crash_dir, big_log, batch_size), crash_dir / "m.db"
    rng = random.Random(20261124)
    kills = 0
    while kills < 5 and _offset(db, big_log) < big_log.stat().st_size * 0.9:
        proc = _serve(config)
        before = _offset(db, big_log)
        deadline = time.monotonic() + 60
        while _offset(db, big_log) <= before and time.monotonic() < deadline:
            time.sleep(0.05)  # wait until this run has committed something
        time.sleep(rng.uniform(0.0, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
    assert kills >= 3, "the log was read too fast to be interrupted"
    _run_to_end(config, db, big_log)

    clean, crashed = _contents(clean_dir / "m.db"), _contents(db)
    assert len(clean["events"]) > LINES // 3
    for table in ("events", "deliveries", "counters"):
        assert crashed[table] == clean[table], f"{table} differ after {kills} kills"
