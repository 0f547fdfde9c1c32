"""Amazon SES through SNS: every SES event and notification mapped, SNS envelopes verified."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from esp_payloads import WEBHOOKS, Fetcher, corpus_files, feed_body, golden_corpus, self_signed
from factories import Clock
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.collectors.esp import base
from monitor.collectors.esp.base import Refused, Webhook, register_webhook, webhook
from monitor.collectors.esp.ses import SesEvents
from monitor.collectors.esp.sns import SnsSignature, canonical
from monitor.collectors.jsonbody import split_records
from monitor.collectors.mail.report import Report
from monitor.collectors.mail.sesjson import from_ses
from monitor.config import Config, WebhookSettings
from monitor.errors import ConfigError
from monitor.metrics import Metrics
from monitor.model import Event, EventType
from monitor.pipeline import Pipeline
from monitor.service.app import create_app
from monitor.service.webhooks import webhook_endpoints
from monitor.store import Store

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
NOT_SES = "not a ses event"


def _events(name: str) -> list[Event]:
    events, problems = feed_body(SesEvents(), split_records((WEBHOOKS / name).read_text()))
    assert not problems
    return events


def test_every_corpus_payload_gives_its_golden_events() -> None:
    """Each SES event, notification and SNS envelope of the corpus maps to the committed events."""
    files = corpus_files("ses_*.json", "sns_*.json")
    out = golden_corpus("ses", files, SesEvents, split_records, not_understood={
        "sns_envelope_Notification.json": NOT_SES})  # its Message is "Hello world!"
    assert sorted(k for k, v in out.items() if not v) == [
        "sns_envelope_Notification.json", "sns_envelope_SubscriptionConfirmation.json"]


@pytest.mark.parametrize(("name", "kind"), [
    ("ses_event_Send.json", EventType.SUBMITTED), ("ses_event_Reject.json", EventType.REJECTED),
    ("ses_event_Bounce.json", EventType.BOUNCED), ("ses_event_Complaint.json", EventType.COMPLAINED),
    ("ses_event_Delivery.json", EventType.DELIVERED), ("ses_event_Open.json", EventType.OPENED),
    ("ses_event_Click.json", EventType.CLICKED), ("ses_event_RenderingFailure.json", EventType.REJECTED),
    ("ses_event_DeliveryDelay.json", EventType.DEFERRED),
    ("ses_event_Subscription.json", EventType.UNSUBSCRIBED),
])
def test_each_event_type(name: str, kind: EventType) -> None:
    """Each eventType of SES event publishing becomes its event, with SES's id and the stream."""
    (event,) = _events(name)
    assert event.type is kind and event.source == "ses"
    assert event.provider_message_id == event.queue_id and event.queue_id.startswith("EXAMPLE")
    assert "stream:ConfigSet" in event.tags  # the configuration set
    assert event.sender == "sender@example.com"  # "Sender Name <sender@example.com>" read too


def test_event_fields() -> None:
    """Bounce, delay, delivery, complaint, reject, rendering failure: their own fields kept."""
    (bounce,) = _events("ses_event_Bounce.json")
    assert (bounce.recipient, bounce.reply_code, bounce.enhanced_status) == ("recipient@example.com", 550, "5.1.1")
    assert bounce.diagnostic == "550 5.1.1 user unknown"  # without "smtp; "
    assert {"bounce_type:Permanent", "bounce_subtype:General"} <= set(bounce.tags) and bounce.reason is None
    (delay,) = _events("ses_event_DeliveryDelay.json")
    assert (delay.reply_code, delay.enhanced_status) == (421, "4.4.1")
    assert "delay_type:TransientCommunicationFailure" in delay.tags
    (delivery,) = _events("ses_event_Delivery.json")
    assert (delivery.reply_code, delivery.enhanced_status, delivery.delay_seconds) == (250, "2.6.0", 11.893)
    assert delivery.sending_ip == "192.0.2.0" and "meta:myCustomTag1=myCustomTagValue1" in delivery.tags
    assert delivery.occurred_at == datetime(2016, 10, 19, 23, 21, 4, 133000, tzinfo=UTC)
    (complaint,) = _events("ses_event_Complaint.json")
    assert (complaint.reason, complaint.blame) == ("feedback", "reputation") and "feedback:abuse" in complaint.tags
    (reject,) = _events("ses_event_Reject.json")
    assert (reject.reason, reject.diagnostic) == ("virusdetected", "Bad content")
    (failure,) = _events("ses_event_RenderingFailure.json")
    assert failure.reason == "contenterror" and "template:MyTemplate" in failure.tags
    (unsubscribed,) = _events("ses_event_Subscription.json")
    assert {"contact_list:ContactListName", "topic:ExampleTopicName"} <= set(unsubscribed.tags)


def test_notifications_per_recipient_with_the_senders_message_id() -> None:
    """Identity notifications: one event per recipient; a custom Message-ID is the message id."""
    events = _events("ses_notification_Bounce_no_dsn.json")
    assert [e.recipient for e in events] == ["jane@example.com", "richard@example.com"]
    assert {e.message_id for e in events} == {"custom-message-ID"} and len({e.id for e in events}) == 2
    (delivery,) = _events("ses_notification_Delivery.json")
    assert (delivery.type, delivery.reply_code, delivery.delay_seconds) == (EventType.DELIVERED, 250, 0.546)


def test_the_envelope_and_the_bare_event_are_the_same_event() -> None:
    """The SNS-wrapped bounce and the bare SES object give the same event id (export or webhook)."""
    assert _events("ses_sns_wrapped_Bounce_COMPOSED.json")[0].id == _events("ses_event_Bounce.json")[0].id


@pytest.mark.parametrize("name", ["ses_notification_Bounce_with_dsn.json", "ses_notification_Bounce_no_dsn.json",
                                  "ses_notification_Complaint_with_feedback.json", "ses_notification_Delivery.json"])
def test_mailed_and_posted_notifications_read_alike(name: str) -> None:
    """The mail collector and the webhook read one notification the same way (ses_records)."""
    data = json.loads((WEBHOOKS / name).read_text())
    report = from_ses(data, Report(kind="dsn"))
    events = _events(name)
    assert [r.recipient for r in report.recipients] == [e.recipient for e in events]
    assert [r.status for r in report.recipients] == [e.enhanced_status for e in events]
    assert report.original.message_id == events[0].message_id == "custom-message-ID"
    assert report.original.sender == events[0].sender == "john@example.com"


def test_suppressed_bounces_opens_of_many_and_resubscribes() -> None:
    """A suppression-list bounce is suppressed; an open of a many-recipient message names none."""
    data = json.loads((WEBHOOKS / "ses_event_Bounce.json").read_text())
    data["bounce"]["bounceSubType"] = "OnAccountSuppressionList"
    (suppressed,) = SesEvents().feed(data)
    assert (suppressed.type, suppressed.reason) == (EventType.SUPPRESSED, "suppressed")
    opened = json.loads((WEBHOOKS / "ses_event_Open.json").read_text())
    opened["mail"]["destination"] = ["a@example.com", "b@example.com"]
    assert SesEvents().feed(opened)[0].recipient is None
    change = json.loads((WEBHOOKS / "ses_event_Subscription.json").read_text())
    change["subscription"]["newTopicPreferences"] = change["subscription"]["oldTopicPreferences"] | {
        "unsubscribeAll": False}
    source = SesEvents()
    assert source.feed(change) == [] and source.stats.ignored == 1


def test_an_export_with_a_bad_record_keeps_the_others() -> None:
    """NDJSON of SES objects (a Firehose export): unknown events and junk counted, the rest mapped."""
    lines = [json.dumps(json.loads((WEBHOOKS / f"ses_event_{k}.json").read_text())) for k in ("Send", "Delivery")]
    bad = [json.dumps({"eventType": "Exploded", "mail": {}}), "{cut", json.dumps({"eventType": "Bounce"})]
    events, problems = feed_body(SesEvents(), split_records("\n".join([lines[0], *bad, lines[1]])))
    assert [e.type for e in events] == [EventType.SUBMITTED, EventType.DELIVERED]
    assert sum(problems.values()) == len(bad)


# --- SNS signatures ---------------------------------------------------------------------------

def _certificate(key: rsa.RSAPrivateKey, *, days: int = 30) -> bytes:
    return self_signed(key, NOW, days)


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _sign(envelope: dict[str, Any], version: str = "1", key: rsa.RSAPrivateKey = KEY) -> dict[str, Any]:
    envelope = envelope | {"SignatureVersion": version, "SigningCertURL": envelope.get("SigningCertURL", CERT_URL)}
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(canonical(envelope), padding.PKCS1v15(), digest)
    return envelope | {"Signature": base64.b64encode(signature).decode()}


def _envelope(**changes: Any) -> dict[str, Any]:
    """The corpus's SNS-wrapped bounce, sent now, with its cert URL and ``changes``."""
    envelope = json.loads((WEBHOOKS / "ses_sns_wrapped_Bounce_COMPOSED.json").read_text())
    return envelope | {"Timestamp": NOW.isoformat().replace("+00:00", "Z"), "SigningCertURL": CERT_URL} | changes


def _verifier(fetch: Fetcher | None = None, **settings: Any) -> SnsSignature:
    fetch = fetch or Fetcher({CERT_URL: _certificate(KEY)})
    return SnsSignature(WebhookSettings(topic_arns=(TOPIC,), **settings), fetch=fetch,
                        clock=Clock(NOW.timestamp() + 30))


def _body(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope).encode()


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_envelopes_pass_and_the_certificate_is_fetched_once(version: str) -> None:
    """SignatureVersion 1 (SHA1withRSA) and 2 (SHA256withRSA) verify; the certificate is cached."""
    fetch = Fetcher({CERT_URL: _certificate(KEY)})
    verifier = _verifier(fetch)
    verifier.verify({}, _body(_sign(_envelope(), version)))
    verifier.verify({}, _body(_sign(_envelope(Subject="with a subject"), version)))
    assert fetch.fetched == [CERT_URL]


@pytest.mark.parametrize("change", ["message", "subject", "timestamp", "other_key", "version"])
def test_a_tampered_envelope_is_a_bad_signature(change: str) -> None:
    """A changed Message, an added Subject, a changed Timestamp, another key's signature: 403."""
    signed = _sign(_envelope(), key=rsa.generate_private_key(65537, 2048) if change == "other_key" else KEY)
    if change == "message":
        signed["Message"] = signed["Message"].replace("recipient@example.com", "victim@example.com")
    elif change == "subject":
        signed["Subject"] = "added"
    elif change == "timestamp":
        signed["Timestamp"] = (NOW + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    elif change == "version":
        signed["SignatureVersion"] = "2"  # a SHA-1 signature checked as SHA-256
    with pytest.raises(Refused) as refused:
        _verifier().verify({}, _body(signed))
    assert (refused.value.reason, refused.value.status) == ("bad_signature", 403)


@pytest.mark.parametrize("url", [
    "http://sns.us-east-1.amazonaws.com/cert.pem", "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem", "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
    "https://user@sns.us-east-1.amazonaws.com/cert.pem", "https://sns.us-east-1.amazonaws.com/cert.txt",
    "https://s3.us-east-1.amazonaws.com/cert.pem", "not a url",
])
def test_a_certificate_from_anywhere_else_is_never_fetched(url: str) -> None:
    """Only https://sns.<region>.amazonaws.com/....pem: any other SigningCertURL is refused unfetched."""
    fetch = Fetcher({url: _certificate(KEY)})
    with pytest.raises(Refused) as refused:
        _verifier(fetch).verify({}, _body(_sign(_envelope(SigningCertURL=url))))
    assert (refused.value.reason, refused.value.status) == ("bad_signature", 401)
    assert fetch.fetched == []


def test_an_unexpected_topic_is_refused_before_anything_is_fetched() -> None:
    """A correctly signed envelope from a topic not in topic_arns: 403 bad_topic."""
    fetch = Fetcher({CERT_URL: _certificate(KEY)})
    other = _sign(_envelope(TopicArn="arn:aws:sns:us-east-1:999999999999:attacker"))
    with pytest.raises(Refused) as refused:
        _verifier(fetch).verify({}, _body(other))
    assert (refused.value.reason, refused.value.status, fetch.fetched) == ("bad_topic", 403, [])


def test_an_old_envelope_is_stale() -> None:
    """A signed envelope replayed after tolerance_seconds is refused as stale."""
    old = _sign(_envelope(Timestamp=(NOW - timedelta(seconds=600)).isoformat().replace("+00:00", "Z")))
    with pytest.raises(Refused) as refused:
        _verifier().verify({}, _body(old))
    assert refused.value.reason == "stale"
    _verifier(tolerance_seconds=3600).verify({}, _body(old))


def test_an_unreachable_certificate_is_retried_not_remembered() -> None:
    """A failed fetch is 503 unverifiable (SNS retries); the next request fetches again."""
    fetch = Fetcher({})
    verifier = _verifier(fetch)
    with pytest.raises(Refused) as refused:
        verifier.verify({}, _body(_sign(_envelope())))
    assert (refused.value.reason, refused.value.status) == ("unverifiable", 503)
    fetch.pages[CERT_URL] = _certificate(KEY)
    verifier.verify({}, _body(_sign(_envelope())))
    assert fetch.fetched == [CERT_URL, CERT_URL]


def test_a_pinned_certificate_is_used_and_nothing_fetched(tmp_path: Path) -> None:
    """certificate_file pins the signing certificate: its key verifies, another key's
    signature is refused, and no certificate URL is ever fetched."""
    pem = tmp_path / "sns.pem"
    pem.write_bytes(_certificate(KEY))
    fetch = Fetcher({})
    verifier = _verifier(fetch, certificate_file=str(pem))
    verifier.verify({}, _body(_sign(_envelope(), "2")))
    with pytest.raises(Refused) as refused:
        verifier.verify({}, _body(_sign(_envelope(), key=rsa.generate_private_key(65537, 2048))))
    assert (refused.value.reason, refused.value.status, fetch.fetched) == ("bad_signature", 403, [])


def test_only_a_pinned_certificate_without_subscriptions_to_confirm_is_offline(tmp_path: Path) -> None:
    """Offline (checked on the event loop) only when nothing can be fetched: a certificate
    to fetch, or a SubscribeURL to confirm, keeps the check on a thread."""
    pem = tmp_path / "sns.pem"
    pem.write_bytes(_certificate(KEY))
    assert _verifier(certificate_file=str(pem)).offline
    assert not _verifier().offline
    assert not _verifier(certificate_file=str(pem), confirm_subscriptions=True).offline


@pytest.mark.parametrize("content", [None, b"not a certificate"])
def test_an_unreadable_pinned_certificate_is_a_config_error(tmp_path: Path, content: bytes | None) -> None:
    pem = tmp_path / "sns.pem"
    if content is not None:
        pem.write_bytes(content)
    with pytest.raises(ConfigError, match="certificate_file"):
        _verifier(certificate_file=str(pem))


@pytest.mark.parametrize("page", [b"garbage", b"x" * (70 << 10)])
def test_a_certificate_that_is_not_one_is_unverifiable(page: bytes) -> None:
    """Garbage or an oversized answer at the certificate URL: refused, nothing trusted."""
    with pytest.raises(Refused) as refused:
        _verifier(Fetcher({CERT_URL: page})).verify({}, _body(_sign(_envelope())))
    assert refused.value.reason == "unverifiable"


def test_an_expired_certificate_is_refused() -> None:
    """A signing certificate outside its validity is not trusted."""
    expired = Fetcher({CERT_URL: _certificate(KEY, days=1)})
    verifier = SnsSignature(WebhookSettings(topic_arns=(TOPIC,)), fetch=expired,
                            clock=Clock(NOW.timestamp() + 5 * 86400))
    late = _sign(_envelope(Timestamp=(NOW + timedelta(days=5)).isoformat().replace("+00:00", "Z")))
    with pytest.raises(Refused) as refused:
        verifier.verify({}, _body(late))
    assert refused.value.reason == "bad_signature"


@pytest.mark.parametrize("body", [b"{cut", b"[]", b'{"Type": "Notification"}', b'"text"',
                                  json.dumps({"eventType": "Bounce"}).encode()])
def test_what_is_not_a_signed_envelope_is_refused(body: bytes) -> None:
    """Garbage, other JSON, an unsigned SES object (raw message delivery): 401 or 403, never accepted."""
    with pytest.raises(Refused) as refused:
        _verifier().verify({}, body)
    assert refused.value.reason in ("bad_signature", "bad_topic")


def test_topic_arns_are_required() -> None:
    """Without topic_arns any AWS account's topic would be taken: a configuration error."""
    with pytest.raises(ConfigError, match=r"webhooks\.ses\.topic_arns"):
        SnsSignature(WebhookSettings())


def _confirmation(kind: str = "SubscriptionConfirmation", url: str | None = None) -> dict[str, Any]:
    envelope = json.loads((WEBHOOKS / "sns_envelope_SubscriptionConfirmation.json").read_text())
    envelope |= {"Type": kind, "TopicArn": TOPIC, "Timestamp": NOW.isoformat().replace("+00:00", "Z"),
                 "SigningCertURL": CERT_URL}
    if url:
        envelope["SubscribeURL"] = url
    return _sign(envelope)


def test_a_subscription_is_confirmed_only_when_configured(caplog: pytest.LogCaptureFixture) -> None:
    """confirm_subscriptions: GET of the SubscribeURL; without it only a log line; never another host."""
    subscribe = _confirmation()["SubscribeURL"]
    caplog.set_level(logging.INFO, "monitor.collectors.esp.sns")
    off = Fetcher({CERT_URL: _certificate(KEY)})
    _verifier(off).verify({}, _body(_confirmation()))
    assert off.fetched == [CERT_URL] and "not confirmed (confirm_subscriptions is off)" in caplog.text
    on = Fetcher({CERT_URL: _certificate(KEY), subscribe: b"<ConfirmSubscriptionResponse/>"})
    _verifier(on, confirm_subscriptions=True).verify({}, _body(_confirmation()))
    assert on.fetched == [CERT_URL, subscribe] and "confirmed the SNS subscription" in caplog.text
    elsewhere = Fetcher({CERT_URL: _certificate(KEY)})
    _verifier(elsewhere, confirm_subscriptions=True).verify(
        {}, _body(_confirmation(url="https://evil.example/?Action=ConfirmSubscription")))
    assert elsewhere.fetched == [CERT_URL]
    _verifier().verify({}, _body(_confirmation("UnsubscribeConfirmation")))
    assert "unsubscribed this endpoint" in caplog.text
    assert SesEvents().feed(_confirmation()) == []  # no events either way


# --- over HTTP and from files ------------------------------------------------------------------

def test_posts_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /webhooks/ses (no secret needed): a signed bounce stored once, a tampered one 403, counted."""
    monkeypatch.setattr(base, "_WEBHOOKS", dict(base._WEBHOOKS))
    fetch = Fetcher({CERT_URL: _certificate(KEY)})
    register_webhook(Webhook("ses", SesEvents, split_records, secret=False, verifier=lambda s: SnsSignature(
        s, fetch=fetch, clock=Clock(NOW.timestamp()))))
    config = Config(webhooks={"ses": WebhookSettings(topic_arns=(TOPIC,))})
    signed = _body(_sign(_envelope()))
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        pipeline = Pipeline(store, metrics=metrics)
        app = create_app(metrics, endpoints=webhook_endpoints(config, pipeline, metrics))

        async def post(content: bytes) -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
                return await c.post("/webhooks/ses", content=content,
                                    headers={"x-amz-sns-message-type": "Notification"})

        forged = asyncio.run(post(signed.replace(b"recipient@example.com", b"victim@example.com")))
        assert (forged.status_code, forged.json()) == (403, {"error": "bad_signature"})
        assert store.count("events") == 0
        for _ in range(2):
            ok = asyncio.run(post(signed))
            assert ok.status_code == 200 and ok.json()["events"] == 1, ok.text
        assert store.count("events") == 1
        [row] = store.trace("recipient@example.com")
        assert row["delivery"]["state"] == "bounced"
    value = metrics.registry.get_sample_value
    assert value("mailmon_events_rejected_total", {"source": "ses", "reason": "bad_signature"}) == 1
    assert value("mailmon_events_duplicate_total", {"source": "ses"}) == 1


def test_exported_events_are_ingested(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mailmon ingest ses FILE`: SES objects one per line, every event stored once."""
    export = tmp_path / "ses.ndjson"
    export.write_text("\n".join(json.dumps(json.loads(p.read_text()))
                                for p in sorted(WEBHOOKS.glob("ses_event_*.json"))))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["ingest", "ses", str(export), "--db", db, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["records"], summary["events"], summary["stored"]) == (10, 10, 10)


def test_registered_without_a_secret() -> None:
    """``ses`` is registered with the SNS verifier, and needs no secret."""
    hook = webhook("ses")
    assert (hook.source, hook.verifier, hook.secret) == (SesEvents, SnsSignature, False)
