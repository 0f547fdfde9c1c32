"""SendGrid Event Webhook: every documented event to the right event, ECDSA-signed bodies only."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from esp_payloads import WEBHOOKS, corpus_files, feed_body, golden_corpus, settings
from factories import Clock
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.collectors.esp.base import Refused, webhook
from monitor.collectors.esp.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridEvents,
    SendGridSignature,
)
from monitor.collectors.jsonbody import split_records
from monitor.config import Config, WebhookSettings
from monitor.driver import Driver
from monitor.errors import ConfigError
from monitor.metrics import Metrics
from monitor.model import EventType
from monitor.pipeline import Pipeline
from monitor.service.app import create_app
from monitor.service.webhooks import webhook_endpoints
from monitor.store import Store

NOW = 1_700_000_000


def _events(name: str) -> list:
    events, problems = feed_body(SendGridEvents(), split_records((WEBHOOKS / name).read_text()))
    assert not problems
    return events


def test_every_corpus_payload_gives_its_golden_events() -> None:
    """Each SendGrid corpus file (docs and django-anymail fixtures) maps to the committed events."""
    files = corpus_files("sendgrid_*.json", "anymail_fixtures/sendgrid__*.json")
    out = golden_corpus("sendgrid", files, SendGridEvents, split_records)
    assert [k for k, v in out.items() if not v] == ["sendgrid_group_resubscribe.json"]


def test_the_documented_batch_maps_each_event_type() -> None:
    """The doc's all-events batch: one event per SendGrid event, in Mailmon's vocabulary."""
    events = _events("sendgrid_batch_all_event_types.json")
    assert [e.type for e in events] == [
        EventType.SUBMITTED, EventType.DEFERRED, EventType.DELIVERED, EventType.OPENED,
        EventType.CLICKED, EventType.BOUNCED, EventType.SUPPRESSED, EventType.COMPLAINED,
        EventType.UNSUBSCRIBED, EventType.UNSUBSCRIBED,
    ]  # group_resubscribe changes nothing tracked
    assert len({e.id for e in events}) == len(events)  # one placeholder sg_event_id, ten events
    assert {e.recipient for e in events} == {"example@test.com"}
    assert {e.message_id for e in events} == {"14c5d75ce93.dfd.64b469@ismtpd-555"}
    assert all("category:cat facts" in e.tags for e in events)
    deferred, delivered, bounced = events[1], events[2], events[5]
    assert (deferred.reply_code, deferred.attempt, deferred.diagnostic) == (400, 5, "400 try again later")
    assert (delivered.reply_code, delivered.diagnostic) == (250, "250 OK")
    assert (bounced.reply_code, bounced.enhanced_status) == (500, "5.0.0")
    assert bounced.diagnostic == "500 unknown recipient" and "bounce_type:bounce" in bounced.tags
    assert (events[6].reason, events[6].diagnostic) == ("suppressed", "Bounced Address")
    assert events[7].reason == "feedback" and "asm_group:10" in events[9].tags
    assert all(e.diagnostic is None for e in events if e.type in (EventType.OPENED, EventType.CLICKED))


def test_bounce_and_blocked_are_both_bounces_blocked_not_hard() -> None:
    """type=bounce and type=blocked are told apart by tag; a block is not a hard address failure."""
    bounce = _events("sendgrid_bounce_type_bounce.json")[0]
    blocked = _events("sendgrid_bounce_type_blocked.json")[0]
    assert bounce.type is blocked.type is EventType.BOUNCED
    assert "bounce_type:bounce" in bounce.tags and bounce.hard is None  # the classifier decides
    assert "bounce_type:blocked" in blocked.tags and blocked.hard is False
    assert bounce.id != blocked.id  # same sg_event_id in the docs, not the same event


def test_real_traffic_fields() -> None:
    """anymail's captured events: smtp-id, X-Message-Id, sending IP, status and categories/args."""
    bounce = _events("anymail_fixtures/sendgrid__test_bounce_event.json")[0]
    assert bounce.message_id == "wrfRRvF7Q0GgwUo2CvDmEA@ismtpd0006p1sjc2.sendgrid.net"
    assert bounce.provider_message_id == "Lli-03HcQ5-JLybO9fXsJg.filter0077p1las1.21536.5717FC482.0"
    assert bounce.queue_id == "Lli-03HcQ5-JLybO9fXsJg"
    assert (bounce.reply_code, bounce.enhanced_status, bounce.sending_ip) == (550, "5.1.1", "167.89.17.173")
    assert bounce.diagnostic == "550 5.1.1 The email account that you tried to reach does not exist."
    processed = _events("anymail_fixtures/sendgrid__test_processed_event.json")[0]
    assert {"category:tag1", "category:tag2", "meta:custom1=value1", "meta:custom2=value2"} <= set(processed.tags)
    invalid = _events("anymail_fixtures/sendgrid__test_dropped_invalid_event.json")[0]
    assert (invalid.type, invalid.reason, invalid.queue_id) == (EventType.DROPPED, "userunknown", None)
    unsub = _events("anymail_fixtures/sendgrid__test_dropped_unsubscribed_event.json")[0]
    assert (unsub.type, unsub.reason) == (EventType.SUPPRESSED, "suppressed")
    opened = _events("sendgrid_extra_06_open_singlesend_fields.json")[0]
    assert opened.occurred_at.timestamp() == 1591726752.372  # milliseconds, as that example sends
    assert "campaign:Example Single Send" in opened.tags
    ab = _events("sendgrid_extra_08_processed_ab_test.json")[0]
    assert ab.queue_id == "5lFl7Fr1Rjme_EyzNNB_5A" and "campaign:unique args ab" in ab.tags


def test_unique_args_named_stream_name_the_stream() -> None:
    """A unique arg called stream or campaign is that tag; commas cannot split a stored tag."""
    record = {"event": "delivered", "email": "a@Example.COM", "timestamp": NOW, "stream": "billing",
              "campaign": "q4", "note": "a,b", "sg_event_id": "e1", "category": ["x", {"no": 1}]}
    (event,) = SendGridEvents().feed(record)
    assert event.recipient == "a@example.com"
    assert set(event.tags) == {"stream:billing", "campaign:q4", "meta:note=a b", "category:x"}


# --- a batch: bad records, duplicates, order --------------------------------------------------

def _good(n: int, event: str = "delivered") -> dict:
    return {"event": event, "email": f"r{n}@example.org", "timestamp": NOW + n,
            "smtp-id": f"<m{n}@app.example>", "sg_event_id": f"ev{n}", "sg_message_id": f"x{n}.filter1.0",
            "response": "250 2.0.0 OK"}


def test_a_bad_record_is_refused_and_its_neighbours_kept() -> None:
    """Unknown event, bad time, no event name, not an object: each counted; the others map."""
    bad = [{"event": "nope", "timestamp": NOW}, {"event": "open", "timestamp": "yesterday"},
           {"email": "x@example.org"}, [1, 2], "text"]
    body = json.dumps([_good(1), *bad, _good(2)])
    events, problems = feed_body(SendGridEvents(), split_records(body))
    assert [e.recipient for e in events] == ["r1@example.org", "r2@example.org"]
    assert sum(problems.values()) == len(bad)


def test_truncated_json_keeps_the_records_before_the_cut() -> None:
    """A body cut mid-record: the whole records before it map, the cut one is not understood."""
    body = json.dumps([_good(1), _good(2)])
    events, problems = feed_body(SendGridEvents(), split_records(body[:-30]))
    assert [e.recipient for e in events] == ["r1@example.org"] and sum(problems.values()) == 1


def test_the_same_event_twice_has_the_same_id_and_distinct_events_do_not() -> None:
    """At-least-once delivery: a retried event is the same id; two opens a second apart are two."""
    first = SendGridEvents().feed(_good(1))[0]
    again = SendGridEvents().feed(json.loads(json.dumps(_good(1))))[0]
    assert first.id == again.id
    open_a = {**_good(1, "open"), "sg_event_id": "o1"}
    open_b = {**_good(1, "open"), "sg_event_id": "o2"}  # same second, another open
    assert SendGridEvents().feed(open_a)[0].id != SendGridEvents().feed(open_b)[0].id


def test_duplicate_and_reordered_batches_store_once(tmp_path: Path) -> None:
    """A batch posted twice stores each event once; posted in reverse, the state is the same."""
    batch = [_good(1, "processed"), _good(1, "delivered"), _good(1, "open"), _good(2, "processed")]
    for name, posts in (("twice", [batch, batch]), ("reversed", [batch[::-1], batch])):
        with Store.open(f"sqlite:///{tmp_path / name}.db") as store:
            driver, source = Driver(Pipeline(store)), SendGridEvents()
            for records in posts:
                driver.run(source, split_records(json.dumps(records)), "body")
                driver.commit(source)
            assert store.count("events") == len(batch)
            with store.engine.connect() as conn:
                states = dict(conn.execute(sa.text("SELECT recipient, state FROM deliveries")).all())
            assert states == {"r1@example.org": "delivered", "r2@example.org": "submitted"}, name


# --- the signature -------------------------------------------------------------------------

def _key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def _signed(private: ec.EllipticCurvePrivateKey, body: bytes, stamp: int = NOW) -> dict[str, str]:
    signature = private.sign(str(stamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: str(stamp)}


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, SendGridSignature]:
    private, public = _key_pair()
    return private, SendGridSignature(settings(tmp_path, public), clock=Clock(NOW + 60))


def test_a_signed_corpus_body_passes(keyed) -> None:
    """The documented batch, signed with a throw-away key, is accepted byte for byte."""
    private, verifier = keyed
    body = (WEBHOOKS / "sendgrid_batch_all_event_types.json").read_bytes()
    verifier.verify(_signed(private, body), body)
    lower = {k.lower(): v for k, v in _signed(private, body).items()}
    verifier.verify(lower, body)  # header names are case-insensitive


def test_a_pem_key_works_too(tmp_path: Path) -> None:
    """The secret may be the PEM form of the key."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    body = b'[{"event":"open"}]'
    SendGridSignature(settings(tmp_path, pem), clock=Clock(NOW)).verify(_signed(private, body), body)


@pytest.mark.parametrize("change", ["body", "key", "timestamp", "reserialised"])
def test_a_tampered_request_is_a_bad_signature(keyed, change: str) -> None:
    """A changed body, another key, a changed timestamp or re-serialised JSON: 403 bad_signature."""
    private, verifier = keyed
    body = b'[{"event": "delivered", "email": "a@example.org", "timestamp": 1700000000}]'
    headers = _signed(ec.generate_private_key(ec.SECP256R1()) if change == "key" else private, body)
    if change == "timestamp":
        headers[TIMESTAMP_HEADER] = str(NOW + 1)
    sent = {"body": body.replace(b"delivered", b"bounce   "),
            "reserialised": json.dumps(json.loads(body), separators=(",", ":")).encode()}.get(change, body)
    with pytest.raises(Refused) as refused:
        verifier.verify(headers, sent)
    assert (refused.value.reason, refused.value.status) == ("bad_signature", 403)


@pytest.mark.parametrize("headers", [{}, {SIGNATURE_HEADER: "AAAA"}, {TIMESTAMP_HEADER: "1"},
                                     {SIGNATURE_HEADER: "not base64!", TIMESTAMP_HEADER: "1"},
                                     {SIGNATURE_HEADER: "AAAA", TIMESTAMP_HEADER: "nan"}])
def test_missing_or_unreadable_headers_are_refused(keyed, headers: dict[str, str]) -> None:
    """No signature, no timestamp, or values that do not decode: 401 bad_signature."""
    with pytest.raises(Refused) as refused:
        keyed[1].verify(headers, b"[]")
    assert (refused.value.reason, refused.value.status) == ("bad_signature", 401)


def test_an_old_signed_request_is_stale(keyed) -> None:
    """A correctly signed body replayed after the tolerance (300 s) is refused as stale."""
    private, verifier = keyed
    body = b"[]"
    verifier.verify(_signed(private, body, NOW - 200), body)
    for stamp in (NOW - 300, NOW + 400):
        with pytest.raises(Refused) as refused:
            verifier.verify(_signed(private, body, stamp), body)
        assert (refused.value.reason, refused.value.status) == ("stale", 403)


@pytest.mark.parametrize("secret", [None, "not a key", "rsa"])
def test_a_missing_or_wrong_kind_of_key_is_a_config_error(tmp_path: Path, secret: str | None) -> None:
    """No key, garbage, or a key that is not ECDSA P-256: the service does not start unprotected."""
    if secret == "rsa":
        der = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        secret = base64.b64encode(der).decode()
    with pytest.raises(ConfigError):
        SendGridSignature(settings(tmp_path, secret))


def test_registered() -> None:
    """``sendgrid`` is a registered webhook with this source and verifier."""
    hook = webhook("sendgrid")
    assert (hook.source, hook.split, hook.verifier) == (SendGridEvents, split_records, SendGridSignature)


def test_signed_batches_over_http_are_stored_and_forged_ones_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /webhooks/sendgrid: a signed batch is stored, a tampered one is 403, counted, stores nothing."""
    private, public = _key_pair()
    monkeypatch.setenv("SENDGRID_KEY", public)
    config = Config(webhooks={"sendgrid": WebhookSettings(secret_env="SENDGRID_KEY")})
    body = json.dumps([_good(1, "processed"), _good(1, "delivered"), {"event": "nope"}]).encode()
    stamp = int(time.time())
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        pipeline = Pipeline(store, metrics=metrics)
        app = create_app(metrics, endpoints=webhook_endpoints(config, pipeline, metrics))

        async def post(content: bytes, headers: dict[str, str]) -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
                return await c.post("/webhooks/sendgrid", content=content, headers=headers)

        forged = asyncio.run(post(body.replace(b"r1@", b"r9@"), _signed(private, body, stamp)))
        assert (forged.status_code, forged.json()) == (403, {"error": "bad_signature"})
        assert store.count("events") == 0
        for _ in range(2):  # delivered twice: stored once
            ok = asyncio.run(post(body, _signed(private, body, stamp)))
            assert ok.status_code == 200, ok.text
            assert (ok.json()["events"], ok.json()["rejected"]) == (2, 1)
        assert store.count("events") == 2
        [row] = store.trace("r1@example.org")
        assert row["delivery"]["state"] == "delivered"
    value = metrics.registry.get_sample_value
    assert value("mailmon_events_rejected_total", {"source": "sendgrid", "reason": "bad_signature"}) == 1
    assert value("mailmon_events_ingested_total", {"source": "sendgrid"}) == 2
    assert value("mailmon_events_duplicate_total", {"source": "sendgrid"}) == 2


def test_an_exported_payload_file_is_ingested(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mailmon ingest sendgrid FILE` takes a saved batch: every event stored, the second run duplicates."""
    path = WEBHOOKS / "sendgrid_batch_all_event_types.json"
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["ingest", "sendgrid", str(path), "--db", db, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["records"], summary["events"], summary["stored"]) == (11, 10, 10)
    assert main(["ingest", "sendgrid", str(path), "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicates"] == 10


def test_newer_bounce_fields_and_machine_opens_are_tags() -> None:
    """bounce_classification (added to SendGrid's payload after 2021) and sg_machine_open are kept as tags."""
    bounce = {"event": "bounce", "email": "a@example.org", "timestamp": NOW, "type": "blocked",
              "bounce_classification": "Reputation", "reason": "554 5.7.1 blocked", "sg_event_id": "b1"}
    (event,) = SendGridEvents().feed(bounce)
    assert {"bounce_type:blocked", "bounce_classification:Reputation"} <= set(event.tags)
    (opened,) = SendGridEvents().feed({"event": "open", "email": "a@example.org", "timestamp": NOW,
                                       "sg_machine_open": True, "sg_event_id": "o1"})
    assert "machine_open:true" in opened.tags
