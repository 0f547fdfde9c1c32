"""The mailbox reader against a real Dovecot: IDLE, polling, reconnecting, and bad input.

IDLE is proved by a poll interval of an hour: a message delivered while the reader
waits is read within seconds only if the server woke it.  A connection the server kicks
(``doveadm kick``) is made again and the reader goes on from its checkpoint.  Bad input
(a 50 MB attachment, broken MIME, bytes that are not mail, 10,000 messages at once) is
read with bounded memory and one clear error per message.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from servers.dovecot import DovecotInstance, find_command

from monitor.collectors.mailbox import InboundMessage, reader_for
from monitor.collectors.mailbox.imap import MailboxReader
from monitor.config import MailboxSettings
from monitor.driver import Driver
from monitor.pipeline import Pipeline
from monitor.store import Store

pytestmark = pytest.mark.integration


def _mail(n: int, subject: str = "Re: your order", body: str = "thanks") -> EmailMessage:
    m = EmailMessage()
    m["From"] = f"customer{n}@ok.test"
    m["To"] = "support@app.test"
    m["Subject"] = subject
    m["Date"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    m["Message-ID"] = f"<m{n}@ok.test>"
    m["In-Reply-To"] = "<never-seen@app.test>"
    m.set_content(body)
    return m


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotInstance]:
    users = {"idle": "idle-pw", "poll": "poll-pw", "kick": "kick-pw", "bad": "bad-pw",
             "bomb": "bomb-pw"}  # fmt: skip
    with DovecotInstance(tmp_path_factory.mktemp("watch"), users=users, tls=False) as instance:
        yield instance


def _reader(dovecot: DovecotInstance, user: str, tmp_path: Path, **extra: Any) -> MailboxReader:
    secret = tmp_path / f"{user}.pw"
    secret.write_text(dovecot.users[user], encoding="utf-8")
    settings = MailboxSettings(name=user, host=dovecot.host, port=dovecot.imap_port,
                               security="none", username=user, password_file=str(secret),
                               **extra)  # fmt: skip
    store = Store.open(f"sqlite:///{tmp_path / 'mailmon.db'}")
    return reader_for(settings, Driver(Pipeline(store)))


def _inbound(reader: MailboxReader) -> list[InboundMessage]:
    return [r for r in reader.driver.pipeline.store.records(InboundMessage.kind)
            if isinstance(r, InboundMessage)]  # fmt: skip


def _until(what: str, check: Any, timeout: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def _watching(reader: MailboxReader) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=reader.watch, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def _stop(reader: MailboxReader, stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    reader.driver.pipeline.close()
    reader.driver.pipeline.store.close()


def test_idle_wakes_the_reader(dovecot: DovecotInstance, tmp_path: Path) -> None:
    """With an hour between polls, a delivered message is read within seconds: IDLE woke it."""
    reader = _reader(dovecot, "idle", tmp_path, poll_interval_seconds=3600)
    stop, thread = _watching(reader)
    try:
        _until("the first pass", lambda: reader.client is not None, 10)
        time.sleep(0.5)  # in IDLE now
        dovecot.deliver(_mail(1), "idle@app.test")
        seconds = _until("the IDLE read", lambda: len(_inbound(reader)) == 1, 10)
    finally:
        _stop(reader, stop, thread)
    assert seconds < 5
    [record] = _inbound(reader)
    assert (record.category, record.link, record.message_id) == ("reply", "none", "m1@ok.test")


def test_polling_without_idle(dovecot: DovecotInstance, tmp_path: Path) -> None:
    """``idle = false``: the reader polls at its interval and finds the new message."""
    reader = _reader(dovecot, "poll", tmp_path, idle=False, poll_interval_seconds=1)
    stop, thread = _watching(reader)
    try:
        _until("the first pass", lambda: reader.client is not None, 10)
        dovecot.deliver(_mail(2), "poll@app.test")
        _until("the polled read", lambda: len(_inbound(reader)) == 1, 10)
    finally:
        _stop(reader, stop, thread)


def test_kicked_connection_resumes_from_checkpoint(dovecot: DovecotInstance,
                                                   tmp_path: Path) -> None:  # fmt: skip
    """The server drops the connection; the reader connects again and reads what came
    meanwhile, and nothing twice."""
    dovecot.deliver(_mail(3), "kick@app.test")
    reader = _reader(dovecot, "kick", tmp_path, poll_interval_seconds=3600)
    stop, thread = _watching(reader)
    try:
        _until("the first message", lambda: len(_inbound(reader)) == 1, 10)
        subprocess.run([find_command("doveadm"), "-c", str(dovecot.config_file), "kick", "kick"],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
        dovecot.deliver(_mail(4), "kick@app.test")
        _until("the message after the kick", lambda: len(_inbound(reader)) == 2, 20)
    finally:
        _stop(reader, stop, thread)
    assert reader.source.stats.lines == 2
    assert sorted(r.message_id for r in _inbound(reader)) == ["m3@ok.test", "m4@ok.test"]


def test_bad_input_read_with_clear_errors(dovecot: DovecotInstance, tmp_path: Path) -> None:
    """A 50 MB attachment is fetched only up to max_message_bytes and recorded as cut;
    broken MIME is recorded with its defects; bytes that are not mail are counted."""
    big = _mail(5)
    big.add_attachment(b"\0" * (50 << 20), maintype="application", subtype="octet-stream")
    dovecot.append("bad", big.as_bytes())
    del big
    dovecot.append("bad", b"From: x@ok.test\r\nMessage-ID: <broken@ok.test>\r\nSubject: Re: hi\r\n"
                   b"Content-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\n"
                   b"Content-Type: text/plain; charset=no-such-charset\r\n\r\n\xff\xfe hi\r\n")
    dovecot.append("bad", b"\x00\x01\x02 this is not mail \x03" * 10 + b"\r\n\r\n")
    reader = _reader(dovecot, "bad", tmp_path, max_message_bytes=1 << 20)
    tracemalloc.start()
    try:
        result = reader.poll()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        reader.close()
    assert result.messages == 3
    assert peak < 32 << 20, f"peak {peak / 2**20:.1f} MiB reading a 50 MB message"
    records = {r.message_id: r for r in _inbound(reader)}
    assert records["m5@ok.test"].error is not None
    assert records["m5@ok.test"].error.startswith("cut at 1048576")
    assert "CloseBoundaryNotFoundDefect" in (records["broken@ok.test"].error or "")
    assert records["broken@ok.test"].category == "reply"
    assert dict(reader.source.stats.unparsed) == {"not an email": 1}
    assert reader.driver.pipeline.store.checkpoint("mailbox:bad:INBOX")["uid"] == 3  # type: ignore[index]


_BOMB = (b"From: customer%d@ok.test\r\nTo: support@app.test\r\nSubject: Re: your order\r\n"
         b"Date: Sun, 06 Dec 2026 18:00:00 +0000\r\nMessage-ID: <bomb%d@ok.test>\r\n"
         b"In-Reply-To: <never-seen@app.test>\r\n\r\nthanks\r\n")


def test_mail_bomb_bounded(dovecot: DovecotInstance, tmp_path: Path) -> None:
    """10,000 messages at once are read by ``mailmon mailbox poll`` in chunks: every one
    once, the process's peak memory bounded."""
    n = 10_000
    with dovecot.client("bomb") as imap:
        imap.select_folder("INBOX")  # makes the maildir
    # Written straight into the maildir (as a delivery agent does): IMAP APPEND of 10,000
    # messages costs a minute of fsyncs; Dovecot indexes them on the reader's SELECT.
    new = dovecot.home("bomb") / "Maildir" / "new"
    nobody = pwd.getpwnam("nobody")
    for i in range(n):
        path = new / f"{1_700_000_000 + i}.bomb{i}.dovecot.test"
        path.write_bytes(_BOMB % (i, i))
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    secret = tmp_path / "bomb.pw"
    secret.write_text(dovecot.users["bomb"], encoding="utf-8")
    (tmp_path / "mailmon.toml").write_text(
        f'[[mailboxes]]\nname = "bomb"\nhost = "127.0.0.1"\nport = {dovecot.imap_port}\n'
        f'security = "none"\nusername = "bomb"\npassword_file = "{secret}"\n', "utf-8")
    db_url = f"sqlite:///{tmp_path / 'mailmon.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMON_")}
    env |= {"MAILMON_RESOLVE_MX": "0", "MAILMON_CONFIG": str(tmp_path / "mailmon.toml")}
    started = time.monotonic()
    process = subprocess.Popen([str(Path(sys.executable).with_name("mailmon")), "mailbox",
                                "poll", "--json", "--db", db_url], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    peak_kib = 0
    while process.poll() is None:  # the process's own peak (VmHWM), read until it exits
        peak_kib = max(peak_kib, _peak_kib(process.pid))
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=600)
    seconds = time.monotonic() - started
    assert process.returncode == 0, stderr.decode(errors="replace")
    peak_mib = peak_kib / 1024
    print(f"mail bomb: {n} messages in {seconds:.1f} s ({n / seconds:.0f}/s), "
          f"peak RSS {peak_mib:.0f} MiB")
    [result] = json.loads(stdout)
    assert (result["messages"], result["categories"]) == (n, {"reply": n})
    with Store.open(db_url, create=False) as store:
        assert len(store.records(InboundMessage.kind)) == n
    assert peak_mib < 256


def _peak_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has just exited
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
