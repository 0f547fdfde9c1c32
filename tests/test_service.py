"""`mailmon serve` over a real socket: /metrics, /healthz, and following a configured log."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

BSD_FLOW = """\
Mar  4 10:00:00 mx1 postfix/smtpd[100]: 1A2B3C4D5E: client=app.example[192.0.2.10]
Mar  4 10:00:00 mx1 postfix/cleanup[101]: 1A2B3C4D5E: message-id=<m1@app.example>
Mar  4 10:00:00 mx1 postfix/qmgr[102]: 1A2B3C4D5E: from=<noreply@app.example>, size=1200, nrcpt=2 (queue active)
Mar  4 10:00:01 mx1 postfix/smtp[103]: 1A2B3C4D5E: to=<alice@gmail.com>, relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 OK  1709546401 a1si123 - gsmtp)
Mar  4 10:00:01 mx1 postfix/smtp[103]: 1A2B3C4D5E: to=<bob@gmail.com>, relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=5.1.1, status=bounced (host gmail-smtp-in.l.google.com[142.250.1.26] said: 550-5.1.1 The email account that you tried to reach does not exist. (in reply to RCPT TO command))
Mar  4 10:00:01 mx1 postfix/qmgr[102]: 1A2B3C4D5E: removed
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A `mailmon serve` subprocess following one log file; stopped afterwards."""
    log = tmp_path / "mail.log"
    log.write_text(BSD_FLOW)
    config = tmp_path / "mailmon.toml"
    port = _free_port()
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "m.db"}"\n'
        f'[service]\nlisten_port = {port}\n'
        f'[[logs]]\npath = "{log}"\npoll_interval_seconds = 0.1\n'
        '[metrics]\ndomains = ["gmail.com"]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            proc.kill()
            pytest.fail(f"serve did not answer: {proc.communicate()[0]}")
        yield base, log
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert proc.returncode == 0, "serve did not shut down cleanly on SIGTERM"


def _sample(text: str, line_start: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait_metric(base: str, line_start: str, want: float) -> str:
    deadline = time.monotonic() + 15
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"{base}/metrics", timeout=2).text
        if _sample(text, line_start) == want:
            return text
        time.sleep(0.1)
    pytest.fail(f"{line_start} never reached {want}:\n{text}")


def test_metrics_and_health_over_a_socket(served: tuple[str, Path]) -> None:
    """/healthz answers ok and /metrics counts the followed log's outcomes."""
    base, _ = served
    health = httpx.get(f"{base}/healthz", timeout=2)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    text = _wait_metric(
        base,
        'mailmon_deliveries_total{domain="gmail.com",outcome="delivered",provider="google"}',
        1.0,
    )
    assert 'mailmon_bounces_total{domain="gmail.com",hard="true",provider="google",' \
           'reason="userunknown"} 1.0' in text
    assert "mailmon_build_info{" in text


def test_appended_lines_are_followed(served: tuple[str, Path]) -> None:
    """Lines appended to the followed log show up in /metrics; a partial line waits."""
    base, log = served
    key = 'mailmon_deliveries_total{domain="gmail.com",outcome="delivered",provider="google"}'
    _wait_metric(base, key, 1.0)
    line = ("Mar  4 10:05:00 mx1 postfix/smtp[103]: 9F8E7D6C5B: to=<carol@gmail.com>, "
            "relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, delay=1, delays=0/0/0.5/0.5, "
            "dsn=2.0.0, status=sent (250 2.0.0 OK)")
    with log.open("a") as f:
        f.write(line[:40])
        f.flush()
        time.sleep(0.5)
        assert _sample(httpx.get(f"{base}/metrics").text, key) == 1.0
        f.write(line[40:] + "\n")
    _wait_metric(base, key, 2.0)


def _delivered_line(qid: str, rcpt: str, second: int) -> str:
    return (f"Mar  4 11:{second // 60:02d}:{second % 60:02d} mx1 postfix/smtp[103]: {qid}: "
            f"to=<{rcpt}>, relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, delay=1, "
            "delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 OK)\n")


def test_rotation_while_following_loses_nothing(served: tuple[str, Path]) -> None:
    """A writer appends, the log is renamed away and re-created mid-stream: every line counts once."""
    base, log = served
    key = 'mailmon_deliveries_total{domain="gmail.com",outcome="delivered",provider="google"}'
    _wait_metric(base, key, 1.0)
    with log.open("a") as f:
        for i in range(20):
            f.write(_delivered_line(f"A{i:09X}", f"user{i}@gmail.com", i))
    log.rename(log.with_name("mail.log.1"))
    with log.open("w") as f:
        for i in range(20, 40):
            f.write(_delivered_line(f"A{i:09X}", f"user{i}@gmail.com", i))
    _wait_metric(base, key, 41.0)


#: A process that appends one delivered line every few milliseconds and reopens its log
#: on SIGHUP, as syslog daemons do after logrotate.
WRITER = """
import signal, sys, time
path, count, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
reopen = False
def hup(signum, frame):
    global reopen
    reopen = True
signal.signal(signal.SIGHUP, hup)
out = open(path, "a")
for i in range(count):
    if reopen:
        out.close()
        out = open(path, "a")
        reopen = False
    out.write(
        f"Mar  4 12:{i // 60 % 60:02d}:{i % 60:02d} mx1 postfix/smtp[104]: C{i:09X}: "
        f"to=<live{i}@gmail.com>, relay=gmail-smtp-in.l.google.com[142.250.1.26]:25, delay=1, "
        "delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 OK)\\n")
    out.flush()
    time.sleep(pause)
out.close()
"""


def test_live_writer_with_logrotate_in_the_middle(served: tuple[str, Path], tmp_path: Path) -> None:
    """A separate process writes the log while serve follows it; logrotate renames it half way."""
    base, log = served
    key = 'mailmon_deliveries_total{domain="gmail.com",outcome="delivered",provider="google"}'
    _wait_metric(base, key, 1.0)
    count = 600
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(count), "0.004"])
    conf = tmp_path / "logrotate.conf"
    conf.write_text(
        f"{log} {{\n  rotate 2\n  create\n  nocompress\n"
        f"  postrotate\n    kill -HUP {writer.pid}\n  endscript\n}}\n"
    )
    try:
        deadline = time.monotonic() + 30
        while log.read_bytes().count(b"\n") < len(BSD_FLOW.splitlines()) + count // 2:
            assert writer.poll() is None and time.monotonic() < deadline, "writer stopped early"
            time.sleep(0.01)
        # serve is following the writer, not reading a finished file afterwards
        read = _sample(httpx.get(f"{base}/metrics").text, 'mailmon_source_lines_total{source="postfix"}')
        assert read is not None and read > len(BSD_FLOW.splitlines())
        assert writer.poll() is None
        rotated = subprocess.run(
            ["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert rotated.returncode == 0, rotated.stderr
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    old, new = log.with_name("mail.log.1").read_text(), log.read_text()
    assert "live0@" in old and f"live{count - 1}@" in new, "the rotation was not mid-stream"
    text = _wait_metric(base, key, 1.0 + count)
    lines = len(old.splitlines()) + len(new.splitlines())
    assert lines == len(BSD_FLOW.splitlines()) + count
    assert _sample(text, 'mailmon_source_lines_total{source="postfix"}') == lines


def test_restart_resumes_without_repeating(tmp_path: Path) -> None:
    """Stopping serve, appending, and starting it again stores every line exactly once."""
    log = tmp_path / "mail.log"
    log.write_text(BSD_FLOW)
    db = tmp_path / "m.db"
    config = tmp_path / "mailmon.toml"

    def run_once(lines: int) -> None:
        port = _free_port()
        config.write_text(f'[database]\nurl = "sqlite:///{db}"\n[service]\nlisten_port = {port}\n'
                          f'[[logs]]\npath = "{log}"\npoll_interval_seconds = 0.1\n')
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
                    # Counters start at zero with the process: this run's lines only.
                    if _sample(body, "mailmon_source_lines_total") == lines:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=15)

    run_once(len(BSD_FLOW.splitlines()))
    with log.open("a") as f:
        f.write(_delivered_line("B000000001", "late@gmail.com", 30))
    run_once(1)  # read from the checkpoint on: the one new line
    from monitor.store import Store

    with Store.open(f"sqlite:///{db}") as store:
        (gmail,) = [r for r in store.stats("domain") if r["domain"] == "gmail.com"]
        assert (gmail["delivered"], gmail["bounced"]) == (2, 1)
        assert store.count("events") == 5


def test_kumomta_log_hook(served: tuple[str, Path]) -> None:
    """POST /ingest/kumomta stores KumoMTA records and counts the bad ones, over a real socket."""
    base, _ = served
    records = (Path(__file__).parent / "data" / "kumomta" / "records.jsonl").read_text()
    answer = httpx.post(f"{base}/ingest/kumomta", content=records + "{broken\n", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"records": 9, "events": 7, "rejected": 1,
                             "problems": {"not JSON": 1}}
    one = records.splitlines()[2]
    again = httpx.post(f"{base}/ingest/kumomta", content=f"[{one}]", timeout=10)
    assert again.json()["events"] == 1
    text = _wait_metric(
        base, 'mailmon_deliveries_total{domain="other",outcome="bounced",provider="microsoft"}', 1.0
    )
    assert 'mailmon_events_rejected_total{reason="unparsed",source="kumomta"} 1.0' in text
    assert 'mailmon_events_ingested_total{source="kumomta"} 7.0' in text


def test_counters_of_several_followed_files_add_up_per_source(tmp_path: Path) -> None:
    """Two followed files count under one source label; another process's events are its own.

    Counters start at zero with the process (docs/metrics.md): what `mailmon ingest` stores
    in the same database meanwhile is counted by that process, not by this one.
    """
    from prometheus_client import CollectorRegistry

    from monitor.collectors.registry import line_source
    from monitor.config import LogSource
    from monitor.metrics import Metrics
    from monitor.pipeline import Pipeline
    from monitor.service.follow import Follower
    from monitor.store import Store

    (tmp_path / "a.log").write_text(BSD_FLOW + "garbage that is no log line\n")
    (tmp_path / "b.log").write_text(_delivered_line("C000000001", "x@gmail.com", 5))
    sources = (LogSource(path=str(tmp_path / "*.log")),)
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        live = Metrics(CollectorRegistry())
        follower = Follower(sources, Pipeline(store, metrics=live), live)
        assert follower.poll_once() == 8
        with (tmp_path / "b.log").open("a") as f:
            f.write(_delivered_line("C000000002", "y@gmail.com", 6))
        assert follower.poll_once() == 1
        other = Pipeline(store)
        other.put_many(line_source("postfix").feed(
            _delivered_line("D000000001", "z@gmail.com", 7).rstrip("\n"), "other"))
        other.flush()
        assert store.count("events") > 0
    value = live.registry.get_sample_value
    assert value("mailmon_source_lines_total", {"source": "postfix"}) == 9
    assert value("mailmon_events_rejected_total", {"source": "postfix", "reason": "unparsed"}) == 1
    delivered = {"provider": "other", "domain": "other", "outcome": "delivered"}
    assert value("mailmon_deliveries_total", delivered) == 3


def test_unparsed_lines_are_logged_by_service_at_a_bounded_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines not understood are counted and logged with where they came from, one line per
    report interval with counts by service, never one log line per bad line."""
    from prometheus_client import CollectorRegistry

    from monitor.config import LogSource
    from monitor.metrics import Metrics
    from monitor.pipeline import Pipeline
    from monitor.service import follow
    from monitor.service.follow import Follower
    from monitor.store import Store

    log_file = tmp_path / "mail.log"
    junk = "Mar  4 10:00:00 mx postfix/smtp[1]: something new in Postfix 9\n"
    log_file.write_text(BSD_FLOW + junk * 3 + "garbage that is no log line\n")
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        follower = Follower((LogSource(path=str(log_file)),), Pipeline(store, metrics=metrics),
                            metrics)
        with caplog.at_level(logging.WARNING, logger="monitor.service.follow"):
            follower.poll_once()
            (first,) = [r.getMessage() for r in caplog.records]
            assert str(log_file) in first and "smtp: 3" in first
            with log_file.open("a") as f:
                f.write(junk)
            follower.poll_once()  # inside the interval: counted, not logged again
            assert len(caplog.records) == 1
            monkeypatch.setattr(follow, "UNPARSED_LOG_INTERVAL_SECONDS", 0.0)
            with log_file.open("a") as f:
                f.write(junk)
            follower.poll_once()
            assert "smtp: 2" in caplog.records[-1].getMessage()  # only what is new since
        assert metrics.registry.get_sample_value(
            "mailmon_events_rejected_total", {"source": "postfix", "reason": "unparsed"}) == 6
