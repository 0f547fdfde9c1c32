"""The command line as a user runs it: ingest (file, gzip, stdin), stats, trace."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_service import BSD_FLOW

DEFERRED_THEN_EXPIRED = """\
Mar  4 11:00:00 mx1 postfix/qmgr[102]: 7C8D9E0F1A: from=<noreply@app.example>, size=900, nrcpt=2 (queue active)
Mar  4 11:00:00 mx1 postfix/cleanup[101]: 7C8D9E0F1A: message-id=<m2@app.example>
Mar  4 11:00:02 mx1 postfix/smtp[103]: 7C8D9E0F1A: to=<dave@yahoo.com>, relay=mta5.am0.yahoodns.net[67.195.204.72]:25, delay=2, delays=0/0/1/1, dsn=4.7.0, status=deferred (host mta5.am0.yahoodns.net[67.195.204.72] said: 421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints (in reply to MAIL FROM command))
Mar  4 11:00:02 mx1 postfix/smtp[103]: 7C8D9E0F1A: to=<erin@outlook.com>, relay=outlook-com.olc.protection.outlook.com[52.101.1.1]:25, delay=2, delays=0/0/1/1, dsn=2.0.0, status=sent (250 2.6.0 <m2@app.example> Queued mail for delivery)
Mar  4 12:00:02 mx1 postfix/smtp[103]: 7C8D9E0F1A: to=<dave@yahoo.com>, relay=mta5.am0.yahoodns.net[67.195.204.72]:25, delay=3602, delays=3600/0/1/1, dsn=4.7.0, status=deferred (host mta5.am0.yahoodns.net[67.195.204.72] said: 421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints (in reply to MAIL FROM command))
Mar  9 11:00:05 mx1 postfix/qmgr[102]: 7C8D9E0F1A: from=<noreply@app.example>, status=expired, returned to sender
Mar  9 11:00:05 mx1 postfix/qmgr[102]: 7C8D9E0F1A: removed
"""


def mailmon(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would (a subprocess, nothing shared with the test)."""
    proc = subprocess.run([sys.executable, "-m", "monitor", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"mailmon {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def logs(tmp_path: Path) -> tuple[Path, Path]:
    plain = tmp_path / "mail.log"
    plain.write_text(BSD_FLOW)
    rotated = tmp_path / "mail.log.1.gz"  # content, not the name, says gzip
    rotated.write_bytes(gzip.compress(DEFERRED_THEN_EXPIRED.encode()))
    return plain, rotated


def test_ingest_stats_and_trace(tmp_path: Path, logs: tuple[Path, Path]) -> None:
    """A plain and a gzip log ingest into per-domain numbers, provider rows and timelines."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    out = mailmon("ingest", "postfix", *map(str, logs), "--db", db, "--json")
    summary = json.loads(out.stdout)
    assert summary["lines"] == 13 and summary["unparsed_lines"] == 0 and summary["failed"] == []
    rows = {r["domain"]: r for r in json.loads(mailmon("stats", "--json", "--db", db).stdout)}
    assert {k: rows["gmail.com"][k] for k in ("submitted", "delivered", "bounced", "deferred")} \
        == {"submitted": 2, "delivered": 1, "bounced": 1, "deferred": 0}
    assert (rows["yahoo.com"]["deferred"], rows["yahoo.com"]["expired"]) == (2, 1)
    assert rows["yahoo.com"]["delivery_rate"] == 0.0 and rows["outlook.com"]["delivered"] == 1
    providers = {r["provider"] for r in json.loads(
        mailmon("stats", "--by", "provider", "--json", "--db", db).stdout)}
    assert providers == {"google", "yahoo", "microsoft"}
    trace = json.loads(mailmon("trace", "<m2@app.example>", "--json", "--db", db).stdout)
    dave = next(d for d in trace["deliveries"] if d["recipient"] == "dave@yahoo.com")
    assert [e["type"] for e in dave["events"]] == ["submitted", "deferred", "deferred", "expired"]
    assert dave["state"] == "expired" and dave["events"][1]["reply_code"] == 421
    human = mailmon("trace", "7C8D9E0F1A", "--db", db).stdout
    assert "dave@yahoo.com: expired" in human and "TSS04" in human
    table = mailmon("stats", "--db", db).stdout
    assert "gmail.com" in table and "yahoo.com" in table


def test_stats_by_sender_side(tmp_path: Path, logs: tuple[Path, Path]) -> None:
    """--by sender-domain, sending-ip and stream print the same row shape as --by domain."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    mailmon("ingest", "postfix", *map(str, logs), "--db", db)
    by_domain = json.loads(mailmon("stats", "--json", "--db", db).stdout)
    rows = json.loads(mailmon("stats", "--by", "sender-domain", "--json", "--db", db).stdout)
    assert [r["sender_domain"] for r in rows] == ["app.example"]
    assert set(rows[0]) - {"sender_domain"} == set(by_domain[0]) - {"domain"}
    for field in ("submitted", "delivered", "deferred", "bounced", "expired"):
        assert rows[0][field] == sum(r[field] for r in by_domain)
    # Postfix logs do not say which of the host's addresses sent; no tag names a stream.
    for flag, key in (("sending-ip", "sending_ip"), ("stream", "stream")):
        (row,) = json.loads(mailmon("stats", "--by", flag, "--json", "--db", db).stdout)
        assert row[key] == "" and row["delivered"] == rows[0]["delivered"]
    table = mailmon("stats", "--by", "sender-domain", "--db", db).stdout
    assert "sender_domain" in table and "app.example" in table


def test_stats_by_blame(tmp_path: Path, logs: tuple[Path, Path]) -> None:
    """--by blame prints --by reason's row shape and counts every failure once."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    mailmon("ingest", "postfix", *map(str, logs), "--db", db)
    by_reason = json.loads(mailmon("stats", "--by", "reason", "--json", "--db", db).stdout)
    rows = json.loads(mailmon("stats", "--by", "blame", "--json", "--db", db).stdout)
    assert rows and set(rows[0]) - {"blame"} == set(by_reason[0]) - {"reason"}
    for field in ("deferred", "bounced", "expired"):
        assert sum(r[field] for r in rows) == sum(r[field] for r in by_reason)
    assert sum(r["bounced"] + r["deferred"] for r in rows) > 0
    assert "blame" in mailmon("stats", "--by", "blame", "--db", db).stdout


def test_ingest_twice_changes_nothing(tmp_path: Path, logs: tuple[Path, Path]) -> None:
    """Re-reading the same files stores nothing new and leaves the stats as they were."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    mailmon("ingest", "postfix", *map(str, logs), "--db", db)
    before = mailmon("stats", "--json", "--db", db).stdout
    again = json.loads(mailmon("ingest", "postfix", *map(str, logs), "--db", db, "--json").stdout)
    assert again["stored"] == 0 and again["duplicates"] == again["events"] > 0
    assert mailmon("stats", "--json", "--db", db).stdout == before


def test_ingest_from_stdin(tmp_path: Path) -> None:
    """`-` reads the log from standard input."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    summary = json.loads(mailmon("ingest", "postfix", "-", "--db", db, "--json",
                                 stdin=BSD_FLOW).stdout)
    assert summary["stored"] == 4


def test_missing_file_does_not_lose_the_others(tmp_path: Path, logs: tuple[Path, Path]) -> None:
    """A missing input is reported and fails the command, but the other files are ingested."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    proc = mailmon("ingest", "postfix", str(tmp_path / "absent.log"), str(logs[0]), "--db", db,
                   check=False)
    assert proc.returncode == 1 and "absent.log" in proc.stderr
    assert "No such file" in proc.stderr
    rows = json.loads(mailmon("stats", "--json", "--db", db).stdout)
    assert rows[0]["domain"] == "gmail.com"


def test_db_from_environment(tmp_path: Path, logs: tuple[Path, Path],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command honours MAILMON_DB_URL when --db is not given."""
    monkeypatch.setenv("MAILMON_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    mailmon("ingest", "postfix", str(logs[0]))
    assert (tmp_path / "env.db").exists()
    assert json.loads(mailmon("stats", "--json").stdout)[0]["delivered"] == 1


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    """An invalid config file stops the command with exit code 2 and one line naming the key."""
    config = tmp_path / "bad.toml"
    config.write_text("[database]\nurll = 'x'\n")
    proc = mailmon("stats", "--config", str(config), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mailmon: error:") and "urll" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_trace_of_unknown_message_says_so(tmp_path: Path, logs: tuple[Path, Path]) -> None:
    """trace of something never seen in a store exits 1 with a message."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    mailmon("ingest", "postfix", str(logs[0]), "--db", db)
    proc = mailmon("trace", "<nope@x>", "--db", db, check=False)
    assert proc.returncode == 1 and "nothing found" in proc.stdout
