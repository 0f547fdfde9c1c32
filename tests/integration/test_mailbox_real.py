"""Inbound mailboxes end to end: a real Postfix delivers, bounces and relays into a real Dovecot.

One scenario for the module.  Postfix ``out`` (the application's relay) delivers three
messages: to ``ok.test`` (an SMTP sink that accepts) and to ``gw.test``, a second Postfix
``gw`` standing for a receiving gateway that accepts the message and only later finds
the mailbox unknown: it returns a real DSN to the VERP return path
``bounces+<token>@app.test``, delivered over LMTP into Dovecot's ``bounces`` mailbox.  The
recipients answer through ``out``: a reply to ``support@`` (In-Reply-To), a reply through a
plus-addressed Reply-To with no thread headers, a new message quoting the reference token,
a vacation auto-reply, a reply to ``noreply@`` (References only) and a newsletter that
answers nothing.  A feedback report from the Sisimai corpus is appended to the ``fbl``
mailbox.  Expected results come from the scenario's design, never from the collector.

The first read runs in this process (to see the metrics); the reads after it run
``mailmon mailbox poll`` in new processes, as a restarted service would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from servers.dovecot import DovecotInstance, free_port
from servers.postfix import PostfixInstance
from servers.smtp_sink import Behaviour, SmtpSink

from monitor.collectors.mail.dsn import parse
from monitor.collectors.mailbox import TrackedMessage, reader_for
from monitor.collectors.mailbox.tokens import token_for, with_token
from monitor.config import load_config
from monitor.driver import Driver
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.store import Store

pytestmark = pytest.mark.integration

CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"
ARF = CORPORA / "sisimai" / "set-of-emails" / "maildir" / "bsd" / "arf-01.eml"
USERS = ("bounces", "fbl", "support", "noreply")
FROM = "app@app.test"

GW_ID, OK_ID, OK2_ID = "gw-1@app.test", "ok-1@app.test", "ok-2@app.test"
CAROL, DAVE, ERIN = "carol@gw.test", "dave@ok.test", "erin@ok.test"
GW_TOKEN, OK2_TOKEN = token_for(GW_ID, CAROL), token_for(OK2_ID, ERIN)


class LmtpPostfix(PostfixInstance):
    """The fixture's Postfix with the LMTP client in master.cf (Dovecot's delivery agent)."""

    def _write_config(self) -> None:
        super()._write_config()
        with (self.config_dir / "master.cf").open("a", encoding="utf-8") as master:
            master.write("lmtp unix - - n - - lmtp\n")


def _mail(message_id: str, sender: str, to: str, subject: str, body: str, *,
          later: int = 0, **headers: str) -> EmailMessage:  # fmt: skip
    """A message dated now + ``later`` seconds (replies a second apart keep their order)."""
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    moment = datetime.now(UTC) + timedelta(seconds=later)
    m["Date"] = moment.strftime("%a, %d %b %Y %H:%M:%S +0000")
    m["Message-ID"] = f"<{message_id}>"
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    m.set_content(body)
    return m


def _wait(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.2)


def mailmon(workdir: Path, *args: str) -> str:
    """Run the installed ``mailmon`` with the scenario's config; return its stdout."""
    executable = Path(sys.executable).with_name("mailmon")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMON_")}
    env |= {"MAILMON_RESOLVE_MX": "0", "MAILMON_CONFIG": str(workdir / "mailmon.toml"),
            "MAILMON_DATA_DIR": str(workdir / "data")}  # fmt: skip
    done = subprocess.run([str(executable), *args], cwd=workdir, env=env, capture_output=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


@dataclass
class World:
    workdir: Path
    db_url: str
    dovecot: DovecotInstance
    first: dict[str, Any]  # mailbox -> PollResult of the in-process read
    registry: CollectorRegistry
    second: list[dict[str, Any]]  # `mailmon mailbox poll --json` in a new process
    dsn: bytes  # the DSN the gateway sent, as Dovecot holds it

    def store(self) -> Store:
        return Store.open(self.db_url, create=False)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def _config(workdir: Path, dovecot: DovecotInstance) -> None:
    boxes = []
    for user in USERS:
        secret = workdir / f"{user}.password"
        secret.write_text(dovecot.users[user], encoding="utf-8")
        role = {"support": "replies"}.get(user, user)
        extra = 'processed_folder = "Processed"\n' if user == "bounces" else ""
        extra += 'folder = "Reports"\n' if user == "fbl" else ""
        boxes.append(f'[[mailboxes]]\nname = "{user}"\nrole = "{role}"\nhost = "127.0.0.1"\n'
                     f'port = {dovecot.imap_port}\nsecurity = "none"\nusername = "{user}"\n'
                     f'password_file = "{secret}"\n{extra}')  # fmt: skip
    (workdir / "mailmon.toml").write_text("\n".join(boxes), encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("inbound")
    db_url = f"sqlite:///{workdir / 'mailmon.db'}"
    with ExitStack() as stack:
        dovecot = stack.enter_context(DovecotInstance(
            workdir, users={u: f"{u}-pw" for u in USERS}, tls=False))  # fmt: skip
        for user in USERS:
            dovecot.append(user, _mail(f"seed-{user}@x.test", "x@x.test", user, "hi", "x"),
                           folder="Trash")  # each user's maildir exists before LMTP  # fmt: skip
        dovecot.create_folder("fbl", "Reports")
        sink = stack.enter_context(SmtpSink())
        lmtp = f"lmtp:[127.0.0.1]:{dovecot.lmtp_port}"
        # The gateway takes the message, then its own next hop refuses the mailbox (550
        # 5.1.1); its smtp transport waits for a flush, so the bounce comes later.
        behind = stack.enter_context(SmtpSink({"*@gw.test": Behaviour.USER_UNKNOWN}))
        gw = LmtpPostfix(workdir / "gw", free_port(),
                         {"gw.test": f"smtp:[127.0.0.1]:{behind.port}", "app.test": lmtp},
                         settings={"defer_transports": "smtp", "myhostname": "gw.test"})
        stack.callback(gw.stop)
        gw.start()
        out = LmtpPostfix(workdir / "out", free_port(), {
            "ok.test": f"smtp:[127.0.0.1]:{sink.port}",
            "gw.test": f"smtp:[127.0.0.1]:{gw.port}", "app.test": lmtp})  # fmt: skip
        stack.callback(out.stop)
        out.start()
        _config(workdir, dovecot)

        # The application records the tokens it put in its return paths (as `mailmon send` does).
        store = Store.open(db_url)
        pipeline = Pipeline(store)
        now = datetime.now(UTC)
        pipeline.put_record(TrackedMessage("app", now, token=GW_TOKEN, message_id=GW_ID,
                                           recipient=CAROL))  # fmt: skip
        pipeline.put_record(TrackedMessage("app", now, token=OK2_TOKEN, message_id=OK2_ID,
                                           recipient=ERIN))  # fmt: skip
        pipeline.flush()

        out.submit(_mail(GW_ID, FROM, CAROL, "Your receipt", "Thanks."),
                   with_token("bounces@app.test", GW_TOKEN), [CAROL])  # fmt: skip
        out.submit(_mail(OK_ID, FROM, DAVE, "Your receipt", "Thanks.",
                         Reply_To="support@app.test"), "bounces@app.test", [DAVE])  # fmt: skip
        out.submit(_mail(OK2_ID, FROM, ERIN, "Your order", f"Thanks.\n[ref:{OK2_TOKEN}]\n",
                         Reply_To=with_token("support@app.test", OK2_TOKEN)),
                   "bounces@app.test", [ERIN])  # fmt: skip
        out.wait_for_log(lambda lines: sum("status=sent" in x for x in lines) >= 3)
        mailmon(workdir, "ingest", "postfix", str(out.log_file), "--db", db_url)

        # The gateway gives up a second later: an asynchronous bounce of a delivered message.
        time.sleep(1.2)
        gw.flush()
        _wait("the gateway's DSN", lambda: dovecot.messages("bounces"))

        replies = [
            ("support@app.test", _mail("r1@ok.test", DAVE, "support@app.test",
                                       "Re: Your receipt", "> Thanks.\nWhere is it?", later=1,
                                       In_Reply_To=f"<{OK_ID}>", References=f"<{OK_ID}>")),
            (with_token("support@app.test", OK2_TOKEN),
             _mail("r2@ok.test", ERIN, with_token("support@app.test", OK2_TOKEN),
                   "about my order", "It never came.", later=2)),
            ("support@app.test", _mail("r3@ok.test", ERIN, "support@app.test", "order again",
                                       f"You wrote:\n> [ref:{OK2_TOKEN}]\nStill nothing.", later=3)),
            ("support@app.test", _mail("v1@ok.test", DAVE, "support@app.test",
                                       "Out of office", "I am away until Monday.", later=4,
                                       Auto_Submitted="auto-replied",
                                       In_Reply_To=f"<{OK_ID}>")),
            ("noreply@app.test", _mail("r4@ok.test", DAVE, "noreply@app.test", "Re: receipt",
                                       "Can I answer here?", later=5,
                                       References=f"<{OK_ID}>")),
            ("support@app.test", _mail("news@list.test", "news@list.test", "support@app.test",
                                       "Weekly digest", "Nothing to do with you.")),
        ]  # fmt: skip
        for rcpt, message in replies:
            out.submit(message, "someone@ok.test", [rcpt])
        _wait("the replies", lambda: len(dovecot.messages("support")) == 5
              and len(dovecot.messages("noreply")) == 1)  # fmt: skip
        dovecot.append("fbl", ARF.read_bytes(), folder="Reports")

        config = load_config(workdir / "mailmon.toml")
        registry = CollectorRegistry()
        metrics = Metrics(registry=registry)
        driver = Driver(Pipeline(store, metrics=metrics), metrics)
        first = {}
        for settings in config.mailboxes:
            reader = reader_for(settings, driver)
            try:
                first[settings.name] = reader.poll()
            finally:
                reader.close()
        driver.pipeline.close()
        pipeline.close()
        store.close()
        second = json.loads(mailmon(workdir, "mailbox", "poll", "--json", "--db", db_url))
        dsn = dovecot.messages("bounces", "Processed")[0].as_bytes()
        yield World(workdir, db_url, dovecot, first, registry, second, dsn)


def _trace(world: World, query: str) -> dict[str, Any]:
    out = mailmon(world.workdir, "trace", query, "--json", "--db", world.db_url)
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def _inbound(world: World) -> dict[str, Any]:
    rows = json.loads(mailmon(world.workdir, "mailbox", "list", "--json", "--db", world.db_url))
    return {r["message_id"]: r for r in rows}


def test_each_mailbox_read_once(world: World) -> None:
    """The first read takes every message of each mailbox; a new process reads nothing again."""
    assert {n: r.messages for n, r in world.first.items()} == {
        "bounces": 1, "fbl": 1, "support": 5, "noreply": 1}
    assert {n: r.categories for n, r in world.first.items()} == {
        "bounces": {"bounce": 1}, "fbl": {"complaint": 1},
        "support": {"reply": 3, "auto_reply": 1, "unmatched": 1}, "noreply": {"reply": 1},
    }  # fmt: skip
    assert [(r["mailbox"], r["messages"], r["events_stored"], r["rescan"])
            for r in world.second] == [(u, 0, 0, False) for u in USERS]  # fmt: skip


def test_async_bounce_ends_the_timeline_bounced(world: World) -> None:
    """The gateway accepted the message (delivered), then its DSN moved it to bounced
    with the DSN's reason, found through the VERP token's original headers."""
    report = parse(world.dsn)
    assert report.kind == "dsn" and [r.recipient for r in report.recipients] == [CAROL]
    [found] = _trace(world, GW_ID)["deliveries"]
    assert found["recipient"] == CAROL
    assert [e["type"] for e in found["events"]] == ["submitted", "delivered", "bounced"]
    assert found["state"] == "bounced"
    assert found["reason"] == report.recipients[0].reason == "userunknown"
    assert found["hard"] is True
    assert found["events"][-1]["enhanced_status"] == "5.1.1"
    bounce = next(r for r in _inbound(world).values() if r["category"] == "bounce")
    assert (bounce["linked_message_id"], bounce["link"]) == (GW_ID, "report")


def test_processed_mail_moved(world: World) -> None:
    """The bounces mailbox moves what it read to its processed folder; the others keep it."""
    assert world.dovecot.messages("bounces") == []
    assert len(world.dovecot.messages("bounces", "Processed")) == 1
    assert world.first["bounces"].moved == 1
    assert len(world.dovecot.messages("support")) == 5


def test_replies_linked_in_their_thread(world: World) -> None:
    """Each reply joins its original: by In-Reply-To, by the plus-addressed Reply-To, by the
    token quoted in its text; the auto-reply is auto_replied; the newsletter stays unmatched."""
    inbound = _inbound(world)
    assert {k: (v["category"], v["link"], v["linked_message_id"]) for k, v in inbound.items()
            if k.endswith("@ok.test") or k.endswith("@list.test")} == {
        "r1@ok.test": ("reply", "in-reply-to", OK_ID),
        "r2@ok.test": ("reply", "verp", OK2_ID),
        "r3@ok.test": ("reply", "token", OK2_ID),
        "v1@ok.test": ("auto_reply", "in-reply-to", OK_ID),
        "r4@ok.test": ("reply", "references", OK_ID),
        "news@list.test": ("unmatched", "none", None),
    }  # fmt: skip
    [dave] = _trace(world, OK_ID)["deliveries"]
    assert dave["state"] == "delivered"
    assert [e["type"] for e in dave["events"]] == [
        "submitted", "delivered", "replied", "auto_replied", "replied"]
    [erin] = _trace(world, OK2_ID)["deliveries"]
    assert [e["type"] for e in erin["events"]] == ["submitted", "delivered", "replied", "replied"]


def test_reply_to_noreply_flagged(world: World) -> None:
    """The reply that reached no-reply is flagged and counted apart."""
    inbound = _inbound(world)
    assert [k for k, v in inbound.items() if v["to_noreply"]] == ["r4@ok.test"]
    assert world.metric("mailmon_replies_total", linked="true", to_noreply="true") == 1
    assert world.metric("mailmon_replies_total", linked="true", to_noreply="false") == 3
    assert world.metric("mailmon_inbound_messages_total", mailbox="support",
                        category="unmatched") == 1  # fmt: skip
    assert world.metric("mailmon_engagement_total", provider="other", domain="other",
                        kind="reply") == 4  # fmt: skip


def test_feedback_report_becomes_complaint(world: World) -> None:
    """The corpus ARF report is a complaint for the recipient it names."""
    report = parse(ARF.read_bytes())
    [who] = [r.recipient for r in report.recipients]
    found = _trace(world, who)["deliveries"]
    assert [e["type"] for d in found for e in d["events"]] == ["complained"]
    assert world.metric("mailmon_complaints_total", provider="other", domain="other",
                        source="mailbox") == 1  # fmt: skip


def test_uidvalidity_change_reads_again_without_double_counting(world: World) -> None:
    """A folder recreated (new UIDVALIDITY) is read from the start; what was stored before
    is not stored again, and a new message in it is."""
    with world.dovecot.client("fbl") as imap:
        imap.delete_folder("Reports")
        imap.create_folder("Reports")
    world.dovecot.append("fbl", ARF.read_bytes(), folder="Reports")
    with world.store() as store:
        before = (store.count("events"), len(store.records("inbound_messages")))
    [again] = json.loads(mailmon(world.workdir, "mailbox", "poll", "--name", "fbl", "--json",
                                 "--db", world.db_url))  # fmt: skip
    assert (again["rescan"], again["messages"], again["events_stored"]) == (True, 1, 0)
    with world.store() as store:
        assert (store.count("events"), len(store.records("inbound_messages"))) == before
    world.dovecot.append("support", _mail("r5@ok.test", DAVE, "support@app.test", "Re: x",
                                          "again", In_Reply_To=f"<{OK_ID}>"))  # fmt: skip
    [support] = json.loads(mailmon(world.workdir, "mailbox", "poll", "--name", "support",
                                   "--json", "--db", world.db_url))  # fmt: skip
    assert (support["rescan"], support["messages"], support["events_stored"]) == (False, 1, 1)
