"""``mailmon ingest`` bounds what one input costs and refuses input that is not what it says."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from test_cli import DEFERRED_THEN_EXPIRED, mailmon
from test_service import BSD_FLOW

from monitor.collectors.limits import MAX_LINE_BYTES

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
POSTFIX_LOG = CORPORA / "mta-logs" / "sergeymakinen_postfix_exporter_mail.log"
A_BOUNCE = CORPORA / "sisimai" / "set-of-emails" / "maildir" / "bsd" / "lhost-postfix-01.eml"

#: Runs ``mailmon`` and prints its peak resident set size (KiB) last on stderr.
# VmHWM, not getrusage's ru_maxrss: the latter keeps the high-water mark from before exec,
# that is of the forked test worker, whose size grows with the tests it ran before.
_WITH_RSS = """
import re, sys
from monitor.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as status:
    peak = re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)
print(f"maxrss_kib={peak}", file=sys.stderr)
sys.exit(code)
"""


def _ingest_measured(*args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    proc = subprocess.run([sys.executable, "-c", _WITH_RSS, "ingest", *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    rss = int(proc.stderr.rpartition("maxrss_kib=")[2])
    return proc, rss


def test_an_overlong_line_is_dropped_and_counted(tmp_path: Path) -> None:
    """A line over 4 MiB is counted as too long, never parsed; the lines around it are."""
    log = tmp_path / "mail.log"
    with log.open("w") as out:
        out.write(BSD_FLOW)
        out.write("Mar  4 11:00:00 mx1 postfix/smtp[1]: " + "x" * (MAX_LINE_BYTES + 10) + "\n")
        out.write(DEFERRED_THEN_EXPIRED)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    summary = json.loads(mailmon("ingest", "postfix", str(log), "--db", db, "--json").stdout)
    assert summary["too_long_lines"] == 1
    assert summary["lines"] == 13 and summary["unparsed_lines"] == 0
    assert summary["stored"] > 0 and summary["failed"] == []


def test_gzip_of_zeros_is_refused_as_a_bomb(tmp_path: Path) -> None:
    """A gzip that expands like a bomb is refused by name, in bounded memory; the log lines
    read before it are stored."""
    bomb = tmp_path / "mail.log.1.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as out:
        out.write(BSD_FLOW.encode())
        zeros = bytes(1 << 20)
        for _ in range(512):  # 512 MiB of zeros in about half a megabyte
            out.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    db = f"sqlite:///{tmp_path / 'm.db'}"
    proc, rss_kib = _ingest_measured("postfix", str(bomb), "--db", db, "--json")
    assert proc.returncode == 1, proc.stderr
    assert f"{bomb}: " in proc.stderr and "decompression bomb" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["failed"] == [str(bomb)] and summary["stored"] > 0
    assert rss_kib < 400 * 1024, f"peak RSS {rss_kib / 1024:.0f} MiB"


def test_a_binary_file_is_refused(tmp_path: Path) -> None:
    """A file that is mostly not understood (here: random bytes) exits 1 and says so."""
    junk = tmp_path / "core.bin"
    junk.write_bytes(os.urandom(256 * 1024))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    proc = mailmon("ingest", "postfix", str(junk), "--db", db, "--json", check=False)
    assert proc.returncode == 1
    assert f"{junk}: " in proc.stderr and "not understood" in proc.stderr
    assert json.loads(proc.stdout)["not_understood"] == [str(junk)]


def test_good_lines_next_to_mostly_junk_are_kept(tmp_path: Path) -> None:
    """A log more than half junk exits 1, but the events of its good lines are stored."""
    log = tmp_path / "mail.log"
    junk = "".join(f"garbage line {i}\n" for i in range(40))
    log.write_text(BSD_FLOW + junk)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    proc = mailmon("ingest", "postfix", str(log), "--db", db, "--json", check=False)
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary["not_understood"] == [str(log)] and summary["stored"] > 0
    rows = json.loads(mailmon("stats", "--json", "--db", db).stdout)
    assert sum(r["delivered"] for r in rows) > 0


def test_a_log_with_some_junk_is_accepted(tmp_path: Path) -> None:
    """A log whose lines are mostly understood exits 0 and counts the rest."""
    log = tmp_path / "mail.log"
    log.write_text(BSD_FLOW + "garbage line\n")
    db = f"sqlite:///{tmp_path / 'm.db'}"
    summary = json.loads(mailmon("ingest", "postfix", str(log), "--db", db, "--json").stdout)
    assert summary["unparsed_lines"] == 1 and summary["not_understood"] == []


def test_a_log_given_as_email_is_refused(tmp_path: Path) -> None:
    """``ingest eml`` of a Postfix log makes up no events and exits 1 saying it is no email."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    proc = mailmon("ingest", "eml", str(POSTFIX_LOG), "--db", db, "--json", check=False)
    assert proc.returncode == 1
    assert f"{POSTFIX_LOG}" in proc.stderr and "not an email" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["events"] == 0 and summary["not_mail"] == 1
    proc = mailmon("ingest", "mbox", str(POSTFIX_LOG), "--db", db, "--json", check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["events"] == 0


def test_an_email_next_to_a_log_is_still_read(tmp_path: Path) -> None:
    """A real bounce given beside a non-mail file is stored; only the other is refused."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    proc = mailmon("ingest", "eml", str(A_BOUNCE), str(POSTFIX_LOG), "--db", db, "--json",
                   check=False)  # fmt: skip
    summary = json.loads(proc.stdout)
    assert proc.returncode == 1 and summary["messages"] == 1 and summary["events"] >= 1
    assert summary["not_mail"] == 1
