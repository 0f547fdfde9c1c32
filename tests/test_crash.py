"""Crash safety: `serve` killed with SIGKILL at random points ends with the same store."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from factories import generated_log

from monitor.collectors.checkpoints import file_key
from monitor.config import default_instance

REPO = Path(__file__).resolve().parents[1]
LINES = 40_000


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A realistic Postfix log with deferrals, expiries, interleaved messages and some junk."""
    path = generated_log(tmp_path_factory.mktemp("crash") / "mail.log", LINES, seed=7)
    # Lines no parser understands, so the unparsed count goes through the kills too.
    lines = path.read_text().splitlines(keepends=True)
    for at in range(len(lines) - 1, 0, -997):
        lines.insert(at, f"{lines[at][:16]}mx-out1 postfix/smtp[1]: not a line we know {at}\n")
    path.write_text("".join(lines))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(workdir: Path, log: Path, port: int = 0, batch_size: int = 3000) -> Path:
    """The service's config; the labelled domains are fixed (see test_sigkill_...)."""
    config = workdir / "mailmon.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{workdir / "m.db"}"\nbatch_size = {batch_size}\n'
        f"[service]\nlisten_port = {port}\n"
        '[metrics]\ndomains = ["gmail.com", "yahoo.com", "outlook.com"]\ntop_domains = 0\n'
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
                "SELECT state FROM checkpoints WHERE source = ?",
                (file_key(default_instance(), "postfix", str(log)),),
            ).fetchone()
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    return int(json.loads(row[0])["position"]["offset"]) if row else 0


def _lines_counted(text: str) -> float:
    for line in text.splitlines():
        if line.startswith('mailmon_source_lines_total{source="postfix"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _run_to_end(config: Path, db: Path, log: Path, port: int) -> str:
    """Serve until the whole log is stored; its /metrics once every line it read is counted."""
    lines = log.read_bytes()[_offset(db, log):].count(b"\n")  # from its checkpoint on
    proc = _serve(config)
    try:
        deadline = time.monotonic() + 240
        while _offset(db, log) < log.stat().st_size:
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not catch up in time"
            time.sleep(0.1)
        # The last batch is counted just after its commit: give the scrape a moment.
        deadline = time.monotonic() + 20
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.TransportError:  # not listening yet
                text = ""
            if _lines_counted(text) == lines or time.monotonic() > deadline:
                return text
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
    """Killed with SIGKILL several times while catching up, then restarted: the same store
    as one clean run, and the last process counts each line it read once.

    Counters start at zero with each process (docs/metrics.md), so the last process's
    /metrics count what it read from its checkpoint on: a line counted twice, or one
    skipped, would show there as the store's difference would.
    """
    clean_dir, crash_dir = tmp_path / "clean", tmp_path / "crash"
    clean_dir.mkdir()
    crash_dir.mkdir()
    port = _free_port()
    clean_metrics = _run_to_end(
        _config(clean_dir, big_log, port), clean_dir / "m.db", big_log, port
    )

    config, db = _config(crash_dir, big_log, batch_size=batch_size), crash_dir / "m.db"
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
    resumed_at = _offset(db, big_log)
    crashed_metrics = _run_to_end(_config(crash_dir, big_log, port), db, big_log, port)

    data = big_log.read_bytes()
    lines = data.count(b"\n")
    assert _lines_counted(clean_metrics) == lines
    assert 0 < _lines_counted(crashed_metrics) == data[resumed_at:].count(b"\n") < lines
    clean, crashed = _contents(clean_dir / "m.db"), _contents(db)
    assert len(clean["events"]) > LINES // 3
    for table in ("events", "deliveries", "counters"):
        assert crashed[table] == clean[table], f"{table} differ after {kills} kills"
    for family in ("deliveries", "bounces", "events_ingested", "source_lines", "events_rejected"):
        assert f"mailmon_{family}_total{{" in clean_metrics
    assert 'mailmon_deliveries_total{domain="gmail.com",outcome="delivered",provider="google"}' \
        in clean_metrics
    assert "mailmon_delivery_delay_seconds_sum{" in clean_metrics
    assert "_created" not in clean_metrics + crashed_metrics
