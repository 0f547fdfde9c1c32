"""Tracked sending end to end: ``mailmon send`` through a real Postfix, delivery and bounce
joined, the reply threaded under the customer's question.

Dave's question ``q-1`` waits in the support mailbox (a real Dovecot).  ``mailmon send
--in-reply-to q-1`` answers him and bob (whose server refuses him, 550 5.1.1) through
Postfix with DKIM and List-Unsubscribe; Postfix's DSN for bob goes to the VERP return path
(LMTP into the bounces mailbox).  The sink that accepts dave's copy holds what was sent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CollectorRegistry
from servers.dovecot import DovecotInstance, free_port
from servers.smtp_sink import Behaviour, SmtpSink

from integration.test_mailbox_real import LmtpPostfix, _mail, _wait, mailmon
from integration.test_threads_real import _Gen, _serve
from monitor.config import load_config
from monitor.metrics import Metrics
from monitor.service.app import create_app
from monitor.store import Store

pytestmark = pytest.mark.integration

DAVE, BOB = "dave@ok.test", "bob@bad.test"


@dataclass
class World:
    workdir: Path
    db_url: str
    sent: dict[str, Any]
    received: bytes  # dave's copy as the receiving server got it
    public_key: bytes
    sink: SmtpSink


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("send")
    db_url = f"sqlite:///{workdir / 'mailmon.db'}"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (workdir / "dkim.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))  # fmt: skip
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    with ExitStack() as stack:
        users = {"support": "support-pw", "bounces": "bounces-pw"}
        dovecot = stack.enter_context(DovecotInstance(workdir, users=users, tls=False))
        sink = stack.enter_context(SmtpSink({"*@bad.test": Behaviour.USER_UNKNOWN}))
        out = LmtpPostfix(workdir / "out", free_port(), {
            "ok.test": f"smtp:[127.0.0.1]:{sink.port}", "bad.test": f"smtp:[127.0.0.1]:{sink.port}",
            "app.test": f"lmtp:[127.0.0.1]:{dovecot.lmtp_port}"})  # fmt: skip
        stack.callback(out.stop)
        out.start()
        boxes = []
        for user, role in (("support", "replies"), ("bounces", "bounces")):
            (workdir / f"{user}.pw").write_text(users[user], encoding="utf-8")
            boxes.append(f'[[mailboxes]]\nname = "{user}"\nrole = "{role}"\nhost = "127.0.0.1"\n'
                         f'port = {dovecot.imap_port}\nsecurity = "none"\nusername = "{user}"\n'
                         f'password_file = "{workdir / (user + ".pw")}"\n')  # fmt: skip
        (workdir / "mailmon.toml").write_text("\n".join(boxes) + f"""
[send]
relay_host = "127.0.0.1"
relay_port = {out.port}
from_address = "support@app.test"
return_path = "bounces@app.test"
list_unsubscribe_url = "https://app.test/unsubscribe/{{token}}"
list_unsubscribe_mailto = "unsubscribe@app.test"
one_click = true
dkim_selector = "s1"
dkim_domain = "app.test"
dkim_key_file = "{workdir / 'dkim.pem'}"
""", encoding="utf-8")
        dovecot.append("support", _mail("q-1@ok.test", DAVE, "support@app.test",
                                        "Question about my invoice", "Is it paid?"))
        mailmon(workdir, "mailbox", "poll", "--name", "support", "--db", db_url)
        sent = json.loads(mailmon(workdir, "send", "--to", DAVE, "--to", BOB, "--in-reply-to",
                                  "<q-1@ok.test>", "--text", "Yes, it is paid.", "--tag",
                                  "stream:support", "--json", "--db", db_url))  # fmt: skip
        _wait("dave's copy", lambda: sink.accepted)
        _wait("bob's DSN", lambda: dovecot.messages("bounces"))
        out.wait_for_log(lambda lines: any("status=bounced" in x for x in lines))
        mailmon(workdir, "ingest", "postfix", str(out.log_file), "--db", db_url)
        mailmon(workdir, "mailbox", "poll", "--name", "bounces", "--db", db_url)
        [copy] = [a for a in sink.accepted if DAVE in a.rcpt_tos]
        yield World(workdir, db_url, sent, copy.content, public, sink)


def _cli(world: World, *args: str) -> Any:
    return json.loads(mailmon(world.workdir, *args, "--json", "--db", world.db_url))


def test_message_composed_as_a_threaded_reply(world: World) -> None:
    """dave's copy answers his question: its own Message-ID, In-Reply-To and References,
    Re: subject, the quoted token, List-Unsubscribe with one-click, a DKIM signature that
    verifies with the selector's key."""
    message = message_from_bytes(world.received)
    mid = world.sent["message_id"]
    assert message["Message-ID"] == f"<{mid}>" and mid.endswith("@app.test")
    assert message["In-Reply-To"] == "<q-1@ok.test>"
    assert message["References"] == "<q-1@ok.test>"
    assert message["Subject"].startswith("Re: ")
    [dave] = [r for r in world.sent["recipients"] if r["recipient"] == DAVE]
    assert f"[ref:{dave['token']}]" in message.get_payload(decode=True).decode()
    unfolded = " ".join(message["List-Unsubscribe"].split())  # RFC 5322 §2.2.3
    assert unfolded == (f"<https://app.test/unsubscribe/{dave['token']}>, "
                                           f"<mailto:unsubscribe@app.test?subject={dave['token']}>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(world.public_key)
    assert dkim.verify(world.received, dnsfunc=lambda name, timeout=5: record)


def test_submitted_joined_by_delivery_and_bounce(world: World) -> None:
    """Both copies were submitted; the MTA log delivers dave's, bob's bounces and its DSN
    (to the VERP return path) joins the same message."""
    mid = world.sent["message_id"]
    assert {(r["recipient"], r["status"]) for r in world.sent["recipients"]} == {
        (DAVE, "submitted"), (BOB, "submitted")}
    by = {d["recipient"]: d for d in _cli(world, "trace", mid)["deliveries"]}
    assert by[DAVE]["state"] == "delivered" and by[BOB]["state"] == "bounced"
    assert by[BOB]["reason"] == "userunknown"
    submitted = {e["source"]: e for e in by[DAVE]["events"] if e["type"] == "submitted"}
    assert sorted(submitted) == ["postfix:mta", "send"]
    assert submitted["send"]["tags"] == ["stream:support"]
    bounce_sources = {e["source"] for e in by[BOB]["events"] if e["type"] == "bounced"}
    assert bounce_sources == {"postfix:mta", "mailbox:bounces"}
    [bounce] = [r for r in _cli(world, "mailbox", "list") if r["category"] == "bounce"]
    assert bounce["linked_message_id"] == mid


def test_reply_threaded_under_the_question(world: World) -> None:
    """The thread of dave's question holds the answer with its delivery states."""
    thread = _cli(world, "threads", "show", "q-1@ok.test")
    shape = [(m["message_id"], m["direction"], m["parent"],
              sorted(d["state"] for d in m["deliveries"])) for m in thread["messages"]]
    assert shape == [("q-1@ok.test", "inbound", None, []),
                     (world.sent["message_id"], "outbound", "q-1@ok.test",
                      ["bounced", "delivered"])]  # fmt: skip


def test_post_api_messages(world: World) -> None:
    """POST /api/messages sends and records as `mailmon send` does (202, the relay's answer
    per recipient); a bad body is 400, no token 401, no [send] configured 404."""
    config = load_config(world.workdir / "mailmon.toml")
    with Store.open(world.db_url, create=False) as store, ExitStack() as stack:
        app = create_app(Metrics(CollectorRegistry()), store=store, api_token="t0k",
                         send=config.send)  # fmt: skip
        url = next(stack.enter_context(_Gen(_serve(app))))
        auth = {"Authorization": "Bearer t0k"}
        before = len(world.sink.accepted)
        answer = httpx.post(f"{url}/api/messages", headers=auth, timeout=30, json={
            "to": [DAVE], "in_reply_to": "q-1@ok.test", "text": "One more thing.",
            "tags": ["stream:support"]})  # fmt: skip
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert [(r["recipient"], r["status"]) for r in body["recipients"]] == [(DAVE, "submitted")]
        _wait("the API's copy", lambda: len(world.sink.accepted) == before + 1)
        copy = message_from_bytes(world.sink.accepted[-1].content)
        assert copy["Message-ID"] == f"<{body['message_id']}>"
        assert copy["In-Reply-To"] == "<q-1@ok.test>"
        bad = httpx.post(f"{url}/api/messages", headers=auth, json={"to": "x"}, timeout=5)
        assert bad.status_code == 400
        injected = httpx.post(f"{url}/api/messages", headers=auth, timeout=5,
                              json={"to": [DAVE], "subject": "a\r\nBcc: x@y.test"})
        assert injected.status_code == 400
        assert httpx.post(f"{url}/api/messages", json={"to": [DAVE]}, timeout=5).status_code \
            == 401
        off = create_app(Metrics(CollectorRegistry()), store=store, api_token="t0k")
        url_off = next(stack.enter_context(_Gen(_serve(off))))
        assert httpx.post(f"{url_off}/api/messages", headers=auth, timeout=5,
                          json={"to": [DAVE], "subject": "x"}).status_code == 404
    traced = _cli(world, "trace", body["message_id"])
    assert [e["type"] for d in traced["deliveries"] for e in d["events"]][:1] == ["submitted"]
