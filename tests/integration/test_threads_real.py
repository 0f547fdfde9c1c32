"""Threads end to end: a real Postfix logs thread headers (header_checks WARN), a real
Dovecot holds the answers, and ``mailmon threads``, ``trace`` and the API show the thread.

The conversation: the application writes ticket ``t-1`` to dave; dave replies (``tr-1``,
In-Reply-To t-1); the application answers (``t-2``, In-Reply-To tr-1, References t-1
tr-1); dave answers again without ``Re:`` (``tr-2``). Around it, one of each broken-thread
finding: an outbound ``Re:`` without thread headers (``t-3``), a reply to a message never
seen (``tr-3``), a malformed Message-ID (``<no-at-sign>``), one Message-ID sent by two
people (``dup``), a reply to no-reply (``tr-4``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from servers.dovecot import DovecotInstance, free_port
from servers.smtp_sink import SmtpSink

from integration.test_mailbox_real import LmtpPostfix, _mail, _wait, mailmon
from monitor.metrics import Metrics
from monitor.service.app import create_app
from monitor.store import Store

pytestmark = pytest.mark.integration

APP, DAVE = "app@app.test", "dave@ok.test"
TOKEN = "threads-api-token"


class HeaderPostfix(LmtpPostfix):
    """Postfix logging the thread headers of every message (docs/threads.md)."""

    def _write_config(self) -> None:
        rules = self.config_dir / "thread_headers"
        self.settings["header_checks"] = f"regexp:{rules}"
        super()._write_config()
        rules.write_text("/^(Message-ID|In-Reply-To|References|Subject):/ WARN\n", "utf-8")
        rules.chmod(0o644)


@dataclass
class World:
    workdir: Path
    db_url: str
    url: str


def _serve(app: Any) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("threads")
    db_url = f"sqlite:///{workdir / 'mailmon.db'}"
    with ExitStack() as stack:
        users = {"support": "support-pw", "noreply": "noreply-pw"}
        dovecot = stack.enter_context(DovecotInstance(workdir, users=users, tls=False))
        sink = stack.enter_context(SmtpSink())
        out = HeaderPostfix(workdir / "out", free_port(), {
            "ok.test": f"smtp:[127.0.0.1]:{sink.port}",
            "app.test": f"lmtp:[127.0.0.1]:{dovecot.lmtp_port}"})  # fmt: skip
        stack.callback(out.stop)
        out.start()
        boxes = []
        for user, role in (("support", "replies"), ("noreply", "noreply")):
            secret = workdir / f"{user}.pw"
            secret.write_text(users[user], encoding="utf-8")
            boxes.append(f'[[mailboxes]]\nname = "{user}"\nrole = "{role}"\n'
                         f'host = "127.0.0.1"\nport = {dovecot.imap_port}\nsecurity = "none"\n'
                         f'username = "{user}"\npassword_file = "{secret}"\n')  # fmt: skip
        (workdir / "mailmon.toml").write_text("\n".join(boxes), encoding="utf-8")

        sent = [  # (message, envelope recipient), in conversation order
            (_mail("t-1@app.test", APP, DAVE, "Your ticket", "Ticket opened.",
                   Reply_To="support@app.test"), DAVE),
            (_mail("tr-1@ok.test", DAVE, "support@app.test", "Re: Your ticket", "When?",
                   later=1, In_Reply_To="<t-1@app.test>", References="<t-1@app.test>"),
             "support@app.test"),
            (_mail("t-2@app.test", APP, DAVE, "Re: Your ticket", "Tomorrow.", later=2,
                   In_Reply_To="<tr-1@ok.test>", References="<t-1@app.test> <tr-1@ok.test>",
                   Reply_To="support@app.test"), DAVE),
            (_mail("tr-2@ok.test", DAVE, "support@app.test", "ticket", "Thanks!", later=3,
                   In_Reply_To="<t-2@app.test>"), "support@app.test"),
            (_mail("t-3@app.test", APP, DAVE, "Re: something", "No headers.", later=4), DAVE),
            (_mail("tr-3@ok.test", DAVE, "support@app.test", "Re: old", "Hello?", later=5,
                   In_Reply_To="<gone@app.test>"), "support@app.test"),
            (_mail("no-at-sign", APP, DAVE, "Your invoice", "Malformed id.", later=6), DAVE),
            (_mail("dup@x.test", "a@ok.test", "support@app.test", "Re: x", "one", later=7),
             "support@app.test"),
            (_mail("dup@x.test", "b@ok.test", "support@app.test", "Re: x", "two", later=8),
             "support@app.test"),
            (_mail("tr-4@ok.test", DAVE, "noreply@app.test", "Re: Your ticket", "Here?",
                   later=9, References="<t-1@app.test>"), "noreply@app.test"),
        ]  # fmt: skip
        for message, rcpt in sent:
            out.submit(message, APP if rcpt == DAVE else DAVE, [rcpt])
        _wait("the deliveries", lambda: sum("status=sent" in x for x in out.log_lines()) == 10)
        mailmon(workdir, "ingest", "postfix", str(out.log_file), "--db", db_url)
        mailmon(workdir, "ingest", "postfix-headers", str(out.log_file), "--db", db_url)
        mailmon(workdir, "mailbox", "poll", "--db", db_url)
        store = stack.enter_context(Store.open(db_url, create=False))
        app = create_app(Metrics(CollectorRegistry()), store=store, api_token=TOKEN)
        url = next(stack.enter_context(_Gen(_serve(app))))
        yield World(workdir, db_url, url)


class _Gen:
    """A generator fixture as a context manager (its ``finally`` runs on exit)."""

    def __init__(self, gen: Iterator[str]) -> None:
        self.gen = gen

    def __enter__(self) -> Iterator[str]:
        return iter([next(self.gen)])

    def __exit__(self, *exc: object) -> None:
        for _ in self.gen:
            pass


def _cli(world: World, *args: str) -> Any:
    return json.loads(mailmon(world.workdir, *args, "--json", "--db", world.db_url))


def _shape(thread: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(m["message_id"], m["direction"], m["parent"],
             sorted(d["state"] for d in m["deliveries"])) for m in thread["messages"]]  # fmt: skip


EXPECTED = [
    ("t-1@app.test", "outbound", None, ["delivered"]),
    ("tr-1@ok.test", "inbound", "t-1@app.test", []),
    ("t-2@app.test", "outbound", "tr-1@ok.test", ["delivered"]),
    ("tr-2@ok.test", "inbound", "t-2@app.test", []),
    ("tr-4@ok.test", "inbound", "t-1@app.test", []),
]


def test_thread_shown_by_cli(world: World) -> None:
    """``threads show`` from any message of the conversation gives it whole, in order, with
    each outbound message's delivery state and each answer's parent."""
    thread = _cli(world, "threads", "show", "tr-2@ok.test")
    assert thread["thread_id"] == "t-1@app.test"
    assert _shape(thread) == EXPECTED
    by_id = {m["message_id"]: m for m in thread["messages"]}
    assert by_id["tr-4@ok.test"]["to_noreply"] is True
    assert by_id["t-2@app.test"]["subject"] == "your ticket"
    assert by_id["t-2@app.test"]["references"] == ["t-1@app.test", "tr-1@ok.test"]


def test_trace_and_api_show_the_thread(world: World) -> None:
    """``mailmon trace`` and ``GET /api/messages/{id}`` carry the thread;
    ``GET /api/threads/{id}`` is the thread alone."""
    traced = _cli(world, "trace", "t-2@app.test")
    assert [d["state"] for d in traced["deliveries"]] == ["delivered"]
    assert _shape(traced["thread"]) == EXPECTED
    auth = {"Authorization": f"Bearer {TOKEN}"}
    message = httpx.get(f"{world.url}/api/messages/t-1@app.test", headers=auth, timeout=5)
    assert message.status_code == 200 and _shape(message.json()["thread"]) == EXPECTED
    thread = httpx.get(f"{world.url}/api/threads/%3Ctr-1@ok.test%3E", headers=auth, timeout=5)
    assert thread.status_code == 200 and _shape(thread.json()) == EXPECTED
    missing = httpx.get(f"{world.url}/api/threads/nobody@x.test", headers=auth, timeout=5)
    assert missing.status_code == 404


def test_check_counts_and_lists_findings(world: World) -> None:
    """``threads check`` finds exactly one of each broken-thread kind the scenario made."""
    found = _cli(world, "threads", "check")
    assert found["counts"] == {"orphan_reply": 1, "unthreaded_reply": 1, "lost_re": 1,
                               "malformed_message_id": 1, "reused_message_id": 1,
                               "reply_to_noreply": 1}  # fmt: skip
    assert {(f["kind"], f["message_id"]) for f in found["findings"]} == {
        ("orphan_reply", "tr-3@ok.test"), ("unthreaded_reply", "t-3@app.test"),
        ("lost_re", "tr-2@ok.test"), ("malformed_message_id", "no-at-sign"),
        ("reused_message_id", "dup@x.test"), ("reply_to_noreply", "tr-4@ok.test"),
    }  # fmt: skip


def test_list_shows_answered_threads(world: World) -> None:
    """``threads list`` names the outbound messages that were answered, with the answers."""
    listed = {t["thread_id"]: t for t in _cli(world, "threads", "list")}
    assert listed["t-1@app.test"]["answers"] == {"reply": 2}
    assert listed["t-1@app.test"]["to_noreply"] == 1
    assert listed["t-2@app.test"]["answers"] == {"reply": 1}
