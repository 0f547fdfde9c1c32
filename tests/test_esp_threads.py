"""Thread headers in ESP webhook payloads: ``message_headers`` records, joined into threads.

The conversation: ticket ``t-1`` goes out through Mailgun (its webhook shows the Message-ID
and the subject); the answer ``t-2`` goes out through SES with In-Reply-To and References
naming ``t-1`` (a configuration set that includes the original headers).  The payloads are
the providers' documentation examples from the corpus, with these headers set.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from esp_http import served
from esp_payloads import WEBHOOKS, corpus_files
from prometheus_client import CollectorRegistry
from test_cli import mailmon

from monitor.collectors.esp.base import webhook
from monitor.collectors.source import NotUnderstood
from monitor.config import Config, WebhookSettings
from monitor.metrics import Metrics
from monitor.model import Event
from monitor.service.app import create_app
from monitor.store import Store
from monitor.threads.headers import MAX_VALUE, MessageHeader

KEY = "key-test-signing"
TOKEN = "esp-threads-token"
TABLE = MessageHeader.kind


def _corpus(name: str) -> dict[str, Any]:
    [path] = corpus_files(name)
    found: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return found


def _ses(name: str, headers: list[tuple[str, str]], sent: str = "2026-02-03T20:00:00.000Z",
         **parts: Any) -> dict[str, Any]:  # fmt: skip
    """A corpus SES event with these headers in ``mail.headers`` (as a configuration set
    with "include original headers" sends them), sent at ``sent``."""
    data = copy.deepcopy(_corpus(name))
    mail = data["mail"]
    mail["timestamp"] = sent
    mail["headers"] = [h for h in mail["headers"] if h["name"] not in ("Subject", "Message-ID")]
    mail["headers"] += [{"name": k, "value": v} for k, v in headers]
    for key, value in parts.items():
        data[key] = {**data[key], **value}
    return data


def _mailgun(headers: dict[str, Any], kind: str = "delivered") -> dict[str, Any]:
    event = copy.deepcopy(_corpus(f"mailgun_event-data_{kind}.json"))
    event["message"]["headers"] = headers
    return event


def _signed(event: dict[str, Any], token: str) -> bytes:
    stamp = int(time.time())
    signature = hmac.new(KEY.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    block = {"timestamp": str(stamp), "token": token, "signature": signature}
    return json.dumps({"signature": block, "event-data": event}).encode()


def _write(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", "utf-8")
    return path


def _headers(store: Store) -> list[tuple[str, str, str]]:
    return sorted((r.queue_id, r.name, r.value) for r in store.records(TABLE))


def _api(store: Store, path: str) -> httpx.Response:
    app = create_app(Metrics(CollectorRegistry()), store=store, api_token=TOKEN)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
            return await c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})

    return asyncio.run(get())


T1_HEADERS = {"message-id": "<t-1@app.test>", "from": "Support <support@app.test>",
              "to": "dave@ok.test", "subject": "Your ticket 7"}  # fmt: skip
T2_HEADERS = [("Message-ID", "<t-2@app.test>"), ("In-Reply-To", "<t-1@app.test>"),
              ("References", "<t-1@app.test>"), ("Subject", "Re: Your ticket 7")]  # fmt: skip


def test_an_ses_answer_joins_the_thread_of_a_message_mailgun_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mailgun's webhook (over HTTP, signed) gives t-1's Message-ID and subject; SES's Send
    and Delivery of t-2 (``mailmon ingest ses``) its In-Reply-To and References: ``threads
    show`` and ``GET /api/messages/{id}`` show both, t-2 under t-1, each delivered.  Retries
    and re-ingesting store nothing twice; a payload without thread headers adds none."""
    monkeypatch.setenv("MAILGUN_KEY", KEY)
    settings = WebhookSettings(secret_env="MAILGUN_KEY", tolerance_seconds=300)
    config = Config(webhooks={"mailgun": settings})
    raw = _signed(_mailgun(T1_HEADERS), "t1" + "a" * 48)
    with served(tmp_path, config) as app:
        first = app.post("mailgun", raw, {})
        assert first.status_code == 200, first.text
        assert first.json()["events"] == 1  # the answer counts events, not header records
        assert app.post("mailgun", raw, {}).status_code == 200  # Mailgun retrying
        assert _headers(app.store) == [("mailgun:t-1@app.test", "message-id", "<t-1@app.test>"),
                                       ("mailgun:t-1@app.test", "subject", "Your ticket 7")]
        # Mailgun gives no time the message's events share: another event of t-1 (its
        # ``accepted``, earlier) stores its own copy, which the thread reads as one message.
        accepted = app.post("mailgun", _signed(_mailgun(T1_HEADERS, "accepted"), "t1" + "b" * 48),
                            {})  # fmt: skip
        assert accepted.status_code == 200, accepted.text
        assert len(_headers(app.store)) == 4
    db = f"sqlite:///{tmp_path / 'm.db'}"
    answer = _write(tmp_path / "ses.jsonl", [
        _ses("ses_event_Send.json", T2_HEADERS),
        _ses("ses_event_Delivery.json", T2_HEADERS,
             delivery={"timestamp": "2026-02-03T20:00:03.000Z"}),
    ])  # fmt: skip
    for _ in range(2):  # the second time: all duplicates
        summary = json.loads(mailmon("ingest", "ses", str(answer), "--db", db, "--json").stdout)
        assert (summary["records"], summary["events"]) == (2, 2)
    plain = corpus_files("ses_event_Bounce.json")[0]  # SES's own Message-ID: no thread headers
    mailmon("ingest", "ses", str(plain), "--db", db)
    with Store.open(db) as store:
        ses = "ses:t-2@app.test"
        assert _headers(store) == sorted([
            *[("mailgun:t-1@app.test", "message-id", "<t-1@app.test>")] * 2,
            *[("mailgun:t-1@app.test", "subject", "Your ticket 7")] * 2,
            (ses, "message-id", "<t-2@app.test>"), (ses, "in-reply-to", "<t-1@app.test>"),
            (ses, "references", "<t-1@app.test>"), (ses, "subject", "Re: Your ticket 7"),
        ])  # fmt: skip
        got = _api(store, "/api/messages/t-1@app.test")
    assert got.status_code == 200, got.text
    api_thread = got.json()["thread"]
    shown = json.loads(mailmon("threads", "show", "<t-2@app.test>", "--json", "--db", db).stdout)
    for thread in (shown, api_thread):
        assert thread["thread_id"] == "t-1@app.test"
        assert [(m["message_id"], m["direction"], m["parent"], m["subject"], m["reply_prefix"],
                 [(d["recipient"], d["state"]) for d in m["deliveries"]])
                for m in thread["messages"]] == [
            ("t-1@app.test", "outbound", None, "your ticket 7", False,
             [("recipient@sample.mailgun.com", "delivered")]),
            ("t-2@app.test", "outbound", "t-1@app.test", "your ticket 7", True,
             [("recipient@example.com", "delivered")]),
        ]  # fmt: skip
        [_, reply] = thread["messages"]
        assert (reply["in_reply_to"], reply["references"]) == ("t-1@app.test", ["t-1@app.test"])
    text = mailmon("threads", "show", "t-1@app.test", "--db", db).stdout
    assert "thread <t-1@app.test>: 2 messages" in text
    check = json.loads(mailmon("threads", "check", "--json", "--db", db).stdout)
    assert [f for f in check["findings"] if "app.test" in f["message_id"]] == []  # intact


def test_bad_header_values_are_kept_bounded_and_named_by_threads_check(tmp_path: Path) -> None:
    """A malformed Message-ID, an In-Reply-To that names no id, an overlong References and a
    subject that is not text: the events are stored, the values cut at MAX_VALUE or left
    out, and ``threads check`` names the malformed Message-ID."""
    chain = " ".join(f"<r-{n}@app.test>" for n in range(400))  # ~6,000 characters
    bad = _ses("ses_event_Delivery.json", [("Message-ID", "<no-at-sign>"),
                                           ("In-Reply-To", "not an id at all"),
                                           ("References", chain), ("Subject", "Re: x")])
    odd = _mailgun({"message-id": "<m-9@app.test>", "subject": ["not", "text"],
                    "in-reply-to": {"an": "object"}})  # fmt: skip
    db = f"sqlite:///{tmp_path / 'm.db'}"
    mailmon("ingest", "ses", str(_write(tmp_path / "ses.jsonl", [bad])), "--db", db)
    mailmon("ingest", "mailgun", str(_write(tmp_path / "mg.jsonl", [odd])), "--db", db)
    with Store.open(db) as store:
        assert store.count("events") == 2
        rows = {(r.queue_id, r.name): r.value for r in store.records(TABLE)}
    assert set(rows) == {("ses:no-at-sign", n)
                         for n in ("message-id", "in-reply-to", "references", "subject")}
    assert len(rows["ses:no-at-sign", "references"]) == MAX_VALUE
    assert chain.startswith(rows["ses:no-at-sign", "references"])
    check = json.loads(mailmon("threads", "check", "--json", "--db", db).stdout)
    assert {(f["kind"], f["message_id"]) for f in check["findings"]
            if f["kind"] == "malformed_message_id"} == {("malformed_message_id", "no-at-sign")}
    shown = json.loads(mailmon("threads", "show", "no-at-sign", "--json", "--db", db).stdout)
    [message] = shown["messages"]
    whole = [f"r-{n}@app.test" for n in range(400)
             if chain.index(f"<r-{n}@app.test>") + len(f"<r-{n}@app.test>") <= MAX_VALUE]
    assert (message["in_reply_to"], message["references"]) == (None, whole)  # the cut one dropped
    assert message["parent_seen"] is False  # it names the last of them, which no source saw


def _records(name: str, files: list[Path]) -> list[MessageHeader]:
    hook = webhook(name)
    out: list[MessageHeader] = []
    for path in files:
        source = hook.source()
        for record in hook.split(path.read_text("utf-8")):
            try:
                items = source.feed(record, path.name)
            except NotUnderstood:
                continue
            events = [i for i in items if isinstance(i, Event)]
            assert items[: len(events)] == events  # the events first, then the records
            out += [i for i in items if isinstance(i, MessageHeader)]
    return out


@pytest.mark.parametrize("name", ["sendgrid", "postmark", "sparkpost", "resend"])
def test_payloads_without_an_rfc_message_id_or_thread_headers_add_no_records(name: str) -> None:
    """SendGrid shows the Message-ID (smtp-id) but no other header; Postmark and SparkPost
    name a message by their own id; Resend's corpus events list no headers."""
    assert _records(name, sorted(WEBHOOKS.glob(f"{name}_*.json"))) == []


def test_corpus_payloads_that_carry_headers() -> None:
    """Brevo's ``message-id`` and ``subject``, Mailgun's ``message.headers`` (opens and
    clicks list no subject), SES's ``mail.headers`` where the sender set the Message-ID."""
    brevo = _records("brevo", sorted(WEBHOOKS.glob("brevo_*.json")))
    assert {r.name for r in brevo} == {"message-id", "subject"}
    assert all(r.queue_id.startswith("brevo:") for r in brevo)
    mailgun = _records("mailgun", sorted(WEBHOOKS.glob("mailgun_*.json")))
    assert {r.name for r in mailgun} == {"message-id", "subject"}
    ses = _records("ses", sorted(WEBHOOKS.glob("ses_*.json")))
    assert ("ses:custom-message-ID", "message-id") in {(r.queue_id, r.name) for r in ses}
    assert {r.name for r in ses} == {"message-id", "subject"}


def test_resend_events_with_their_message_id_carry_the_subject_and_listed_headers() -> None:
    """Resend's email events name the Message-ID (``data.message_id``); a sent event may list
    the message's headers: the subject and those thread headers become records."""
    sent = copy.deepcopy(_corpus("resend_email_sent.json"))
    sent["data"]["message_id"] = "<r-2@app.test>"
    sent["data"]["headers"] = [{"name": "In-Reply-To", "value": "<r-1@app.test>"},
                               {"name": "X-Entity-Ref-ID", "value": "123"}]  # fmt: skip
    items = webhook("resend").source().feed(sent, "sent")
    [event] = [i for i in items if isinstance(i, Event)]
    assert event.message_id == "r-2@app.test"
    assert sorted((r.queue_id, r.name, r.value) for r in items if isinstance(r, MessageHeader)) \
        == [("resend:r-2@app.test", "in-reply-to", "<r-1@app.test>"),
            ("resend:r-2@app.test", "message-id", "<r-2@app.test>"),
            ("resend:r-2@app.test", "subject", sent["data"]["subject"])]  # fmt: skip
