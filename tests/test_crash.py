"""Crash safety: `serve` killed with SIGKILL at random points ends with the same store and /metrics."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from monitor.collectors.checkpoints import file_key
from monitor.config import default_instance

REPO = Path(__file__).resolve().parents[1]
LINES = 40_000


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A realistic Postfix log with deferrals, expiries, interleaved messages and some junk."""
    path = tmp_path_factory.mktemp("crash") / "mail.log"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gen_postfix_log.py"), "--lines", str(LINES),
         "--out", str(path), "--seed", "7"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
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
    """Serve until the whole log is stored; its /metrics once every line is counted."""
    proc = _serve(config)
    lines = log.read_bytes().count(b"\n")
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


#: Series that belong to one process and so differ between any two runs: the rollup
#: gauges (``RollupGauges``: every ``mailmon_domain_*``, ``mailmon_provider_*``,
#: ``mailmon_sending_ip_*``, ``mailmon_sender_domain_*`` and ``mailmon_stream_*`` series,
#: and nothing else is named so) show the engine's last evaluation, which the wall clock paces (every [rollup]
#: interval_seconds, the first at start-up), so each process has evaluated at different
#: points of the log (tests/test_rollup.py checks that the same events give the same
#: evaluations).  serve exports no ``*_created`` series (the counters carry the store's
#: history, not the process's).
PROCESS_SPECIFIC = re.compile(
    r"^mailmon_(domain|provider|sending_ip|sender_domain|stream)_[a-z_]+\{"
)


def _samples(text: str) -> list[str]:
    """The /metrics sample lines, sorted (a restarted process creates series in another order)."""
    return sorted(
        line for line in text.splitlines()
        if line and not line.startswith("#") and not PROCESS_SPECIFIC.match(line)
    )  # fmt: skip


# 100: several batches per poll go to the background writer, so kills land mid-batch too.
@pytest.mark.parametrize("batch_size", [3000, 100])
def test_sigkill_at_random_points_changes_nothing(
    big_log: Path, tmp_path: Path, batch_size: int
) -> None:
    """Killed with SIGKILL several times while catching up, then restarted: same store and /metrics as one clean run.

    The labelled domains are fixed in the config: the top-N domains are chosen from what
    the store holds when a process starts and refreshed hourly on the wall clock, so which
    domains had a series of their own differs between a process started once and one
    started six times; the counts under a fixed set of labels must not.
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
    crashed_metrics = _run_to_end(_config(crash_dir, big_log, port), db, big_log, port)

    lines = big_log.read_bytes().count(b"\n")
    assert _lines_counted(clean_metrics) == lines
    clean, crashed = _contents(clean_dir / "m.db"), _contents(db)
    assert len(clean["events"]) > LINES // 3
    for table in ("events", "deliveries", "counters"):
        assert crashed[table] == clean[table], f"{table} differ after {kills} kills"
    assert _samples(crashed_metrics) == _samples(clean_metrics), f"/metrics differ after {kills} kills"
    # What the comparison covers: every counter family, per labelled domain.
    for family in ("deliveries", "bounces", "events_ingested", "source_lines", "events_rejected"):
        assert f"mailmon_{family}_total{{" in clean_metrics
    assert 'mailmon_deliveries_total{domain="gmail.com",outcome="delivered",provider="google"}' \
        in clean_metrics
    assert "mailmon_delivery_delay_seconds_sum{" in clean_metrics
    assert "_created" not in clean_metrics + crashed_metrics
