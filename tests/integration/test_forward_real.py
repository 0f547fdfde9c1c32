"""Forwarding inbound events to the application's webhook: signed, retried, dead letters.

A real Dovecot holds dave's replies; ``mailmon mailbox poll`` reads them and POSTs each new
event to an HTTP receiver on 127.0.0.1 that checks the signature as the README shows and
answers as the test scripts it (fail, then succeed; or always fail).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from servers.dovecot import DovecotInstance, free_port

from integration.test_mailbox_real import _mail, mailmon
from monitor.model import Event, EventType
from monitor.pipeline import Pipeline
from monitor.store import Store

pytestmark = pytest.mark.integration

SECRET = "forward-secret"
DAVE = "dave@ok.test"


class Receiver:
    """An HTTP webhook receiver: answers the scripted statuses, keeps what it got."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.otherwise = 200
        self.got: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers["X-Mailmon-Timestamp"]
                # The README's verification, as an application would do it.
                expected = "v1=" + hmac.new(SECRET.encode(), f"{stamp}.".encode() + body,
                                            hashlib.sha256).hexdigest()  # fmt: skip
                valid = hmac.compare_digest(expected, self.headers["X-Mailmon-Signature"])
                fresh = abs(time.time() - int(stamp)) < 300
                receiver.got.append({"id": self.headers["X-Mailmon-Event-Id"], "valid": valid,
                                     "fresh": fresh, "event": json.loads(body)})  # fmt: skip
                status = receiver.script.pop(0) if receiver.script else receiver.otherwise
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, DovecotInstance,
                                                                      Receiver]]:
    workdir = tmp_path_factory.mktemp("forward")
    db_url = f"sqlite:///{workdir / 'mailmon.db'}"
    receiver = Receiver()
    with DovecotInstance(workdir, users={"support": "support-pw"}, tls=False) as dovecot:
        (workdir / "support.pw").write_text("support-pw", encoding="utf-8")
        (workdir / "forward.key").write_text(SECRET, encoding="utf-8")
        (workdir / "mailmon.toml").write_text(f"""
[[mailboxes]]
name = "support"
host = "127.0.0.1"
port = {dovecot.imap_port}
security = "none"
username = "support"
password_file = "{workdir / 'support.pw'}"

[forward]
url = "{receiver.url}"
secret_file = "{workdir / 'forward.key'}"
max_attempts = 3
backoff_seconds = 0.1
""", encoding="utf-8")
        with Store.open(db_url) as store:
            pipeline = Pipeline(store)
            for n in (1, 2):
                pipeline.put(Event(type=EventType.SUBMITTED, occurred_at=datetime.now(UTC),
                                   source="postfix:mta", message_id=f"o-{n}@app.test",
                                   recipient=DAVE))  # fmt: skip
            pipeline.close()
        try:
            yield workdir, db_url, dovecot, receiver
        finally:
            receiver.close()


def test_forwarded_signed_retried_dead_lettered_and_replayed(setup: Any) -> None:
    """A reply's event is POSTed signed and retried past a 500; one the webhook keeps
    refusing becomes a dead letter, which `webhooks retry` delivers and deletes; a stored
    event is sent again by its id."""
    workdir, db_url, dovecot, receiver = setup
    dovecot.append("support", _mail("r-1@ok.test", DAVE, "support@app.test", "Re: o",
                                    "yes", In_Reply_To="<o-1@app.test>"))  # fmt: skip
    receiver.script = [500]
    mailmon(workdir, "mailbox", "poll", "--db", db_url)
    assert [(g["event"]["type"], g["event"]["message_id"]) for g in receiver.got] == [
        ("replied", "o-1@app.test")] * 2
    assert all(g["valid"] and g["fresh"] for g in receiver.got)
    first_id = receiver.got[0]["id"]
    assert receiver.got[1]["id"] == first_id == receiver.got[0]["event"]["id"]
    assert json.loads(mailmon(workdir, "webhooks", "dead", "--json", "--db", db_url)) == []

    receiver.otherwise = 503
    dovecot.append("support", _mail("r-2@ok.test", DAVE, "support@app.test", "Re: o2",
                                    "no", In_Reply_To="<o-2@app.test>"))  # fmt: skip
    mailmon(workdir, "mailbox", "poll", "--db", db_url)
    assert len(receiver.got) == 5  # three attempts
    [dead] = json.loads(mailmon(workdir, "webhooks", "dead", "--json", "--db", db_url))
    assert dead["attempts"] == 3 and dead["error"] == "HTTP 503"
    assert dead["event_id"] == receiver.got[-1]["id"] != first_id

    receiver.otherwise = 200
    retried = json.loads(mailmon(workdir, "webhooks", "retry", "--json", "--db", db_url))
    assert retried == {"retried": {dead["event_id"]: True}, "replayed": {}}
    assert receiver.got[-1]["id"] == dead["event_id"] and receiver.got[-1]["valid"]
    assert json.loads(mailmon(workdir, "webhooks", "dead", "--json", "--db", db_url)) == []

    replay = json.loads(mailmon(workdir, "webhooks", "retry", "--replay", first_id, "--json",
                                "--db", db_url))  # fmt: skip
    assert replay == {"retried": {}, "replayed": {first_id: True}}
    assert receiver.got[-1]["id"] == first_id
    assert receiver.got[-1]["event"] == receiver.got[0]["event"]

    mailmon(workdir, "mailbox", "poll", "--db", db_url)  # nothing new: nothing sent
    assert len(receiver.got) == 7


def test_serve_watches_and_forwards(setup: Any) -> None:
    """``mailmon serve`` runs a watcher per mailbox (IDLE) and forwards what it reads."""
    workdir, db_url, dovecot, receiver = setup
    receiver.otherwise = 200
    before = len(receiver.got)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMON_")}
    env |= {"MAILMON_RESOLVE_MX": "0", "MAILMON_CONFIG": str(workdir / "mailmon.toml"),
            "MAILMON_DATA_DIR": str(workdir / "data")}  # fmt: skip
    serve = subprocess.Popen([str(Path(sys.executable).with_name("mailmon")), "serve", "--db",
                              db_url, "--port", str(free_port())], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        time.sleep(2)  # connected and idling
        dovecot.deliver(_mail("r-3@ok.test", DAVE, "support@app.test", "Re: o", "again",
                              In_Reply_To="<o-1@app.test>"), "support@app.test")  # fmt: skip
        deadline = time.monotonic() + 20
        while len(receiver.got) == before and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=30)
    assert serve.returncode == 0, err.decode(errors="replace")[-2000:]
    [got] = receiver.got[before:]
    assert got["valid"] and (got["event"]["type"], got["event"]["message_id"]) == (
        "replied", "o-1@app.test")
