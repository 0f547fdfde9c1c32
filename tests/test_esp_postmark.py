"""Postmark webhooks: every record type to the right event, HTTP Basic credentials required."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest
from esp_payloads import WEBHOOKS, corpus_files, feed_body, golden_corpus, settings
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.collectors.esp.base import Refused, webhook
from monitor.collectors.esp.postmark import PostmarkBasicAuth, PostmarkEvents
from monitor.collectors.jsonbody import split_records
from monitor.config import Config, WebhookSettings
from monitor.errors import ConfigError
from monitor.metrics import Metrics
from monitor.model import Event, EventType
from monitor.pipeline import Pipeline
from monitor.service.app import create_app
from monitor.service.webhooks import webhook_endpoints
from monitor.store import Store

NO_TIME = "a postmark record without BouncedAt"


def _event(name: str) -> Event:
    events, problems = feed_body(PostmarkEvents(), split_records((WEBHOOKS / name).read_text()))
    assert not problems and len(events) == 1
    return events[0]


def test_every_corpus_payload_gives_its_golden_events() -> None:
    """Each Postmark corpus record (docs and django-anymail fixtures) maps to the committed events."""
    files = corpus_files("postmark_*.json", "anymail_fixtures/postmark__*.json")
    out = golden_corpus("postmark", files, PostmarkEvents, split_records, not_understood={
        "anymail_fixtures/postmark__test_bounce_unsubscribe_variant.json": NO_TIME})
    assert sorted(k for k, v in out.items() if not v) == [
        "anymail_fixtures/postmark__test_bounce_unsubscribe_variant.json",  # no time: refused
        "anymail_fixtures/postmark__test_resubscribe.json",  # a reactivation changes nothing
        "anymail_fixtures/postmark__test_subscription_change_bounce.json",  # the bounce said it
        "postmark_SubscriptionChange.json",  # suppressed for a hard bounce: the same
    ]


def test_documented_records_map_to_their_events() -> None:
    """Delivery, Bounce, SpamComplaint, Open, Click: type, recipient, ids, tags, diagnostic."""
    message = "883953f4-6105-42a2-a16a-77a8eac79483"
    delivery = _event("postmark_Delivery.json")
    assert (delivery.type, delivery.recipient) == (EventType.DELIVERED, "margareth@nasa.com")
    assert delivery.provider_message_id == delivery.queue_id == message
    assert (delivery.reply_code, delivery.enhanced_status) == (250, "2.0.0")
    assert delivery.diagnostic == "250 2.0.0 OK  1762360434 x12-20020a05 - gsmtp"
    assert {"stream:outbound", "category:welcome-email", "meta:PropA=some value"} <= set(delivery.tags)
    bounce = _event("postmark_Bounce.json")
    assert (bounce.type, bounce.sender, bounce.diagnostic) == (
        EventType.BOUNCED, "alanturing@computers.com", "Test bounce details")
    assert {"bounce_type:HardBounce", "bounce_code:1"} <= set(bounce.tags) and bounce.reason is None
    complaint = _event("postmark_SpamComplaint.json")
    assert (complaint.type, complaint.reason) == (EventType.COMPLAINED, "feedback")
    assert {"bounce_type:SpamComplaint", "bounce_code:100001"} <= set(complaint.tags)
    opened, clicked = _event("postmark_Open.json"), _event("postmark_Click.json")
    assert (opened.type, clicked.type) == (EventType.OPENED, EventType.CLICKED)
    assert opened.diagnostic is None and clicked.recipient == "margareth@nasa.com"
    assert opened.occurred_at.isoformat() == "2026-11-05T16:33:54.907025+00:00"  # 7 digits read
    assert len({delivery.id, bounce.id, complaint.id, opened.id, clicked.id}) == 5


def test_real_traffic_bounce_keeps_the_smtp_reply() -> None:
    """anymail's captured bounce: "smtp;550 5.1.1 ..." gives the reply without its DSN type."""
    bounce = _event("anymail_fixtures/postmark__test_bounce_event.json")
    assert (bounce.reply_code, bounce.enhanced_status) == (550, "5.1.1")
    assert bounce.diagnostic == "550 5.1.1 The email account that you tried to reach does not exist."
    assert bounce.occurred_at.isoformat() == "2016-04-27T20:28:50.396393+00:00"  # -04:00 to UTC
    unsubscribed = _event("anymail_fixtures/postmark__test_unsubscribe.json")
    assert unsubscribed.type is EventType.UNSUBSCRIBED
    assert "suppression_reason:ManualSuppression" in unsubscribed.tags


@pytest.mark.parametrize(("bounce_type", "kind", "reason"), [
    ("HardBounce", EventType.BOUNCED, None), ("SoftBounce", EventType.BOUNCED, None),
    ("Transient", EventType.DEFERRED, None), ("DnsError", EventType.DEFERRED, None),
    ("BadEmailAddress", EventType.REJECTED, None), ("ManuallyDeactivated", EventType.SUPPRESSED, "suppressed"),
    ("AutoResponder", EventType.AUTO_REPLIED, None), ("AddressChange", EventType.BOUNCED, "hasmoved"),
    ("Unsubscribe", EventType.UNSUBSCRIBED, None), ("Blocked", EventType.BOUNCED, None),
    ("SomethingNew", EventType.BOUNCED, None),
])
def test_bounce_types(bounce_type: str, kind: EventType, reason: str | None) -> None:
    """Each Postmark bounce Type becomes the event it means; unknown types are bounces to classify."""
    record = json.loads((WEBHOOKS / "postmark_Bounce.json").read_text()) | {"Type": bounce_type}
    (event,) = PostmarkEvents().feed(record)
    assert (event.type, event.reason) == (kind, reason) and f"bounce_type:{bounce_type}" in event.tags


def test_subscribe_and_inbound_records_change_nothing() -> None:
    """A Subscribe bounce type is understood and ignored, not an error."""
    record = json.loads((WEBHOOKS / "postmark_Bounce.json").read_text()) | {"Type": "Subscribe"}
    source = PostmarkEvents()
    assert source.feed(record) == [] and source.stats.ignored == 1


def test_bad_records_in_an_export_are_counted_and_neighbours_kept() -> None:
    """NDJSON export: an unknown RecordType, a bad time, a non-object: counted; the rest map."""
    good = (WEBHOOKS / "postmark_Delivery.json").read_text()
    lines = [json.dumps(json.loads(good)), '{"RecordType": "Inbound"}',
             json.dumps(json.loads(good) | {"DeliveredAt": "yesterday"}), "[1]", "{not json",
             json.dumps(json.loads(good) | {"Recipient": "b@example.org"})]
    events, problems = feed_body(PostmarkEvents(), split_records("\n".join(lines)))
    assert [e.recipient for e in events] == ["margareth@nasa.com", "b@example.org"]
    assert sum(problems.values()) == 4


def test_the_same_record_twice_is_the_same_id() -> None:
    """At-least-once: a record delivered again maps to the same id; another bounce ID is another event."""
    record = json.loads((WEBHOOKS / "postmark_Bounce.json").read_text())
    first, again = PostmarkEvents().feed(record)[0], PostmarkEvents().feed(dict(record))[0]
    assert first.id == again.id
    assert PostmarkEvents().feed(record | {"ID": 1})[0].id != first.id


# --- HTTP Basic -------------------------------------------------------------------------------

def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def auth(tmp_path: Path) -> PostmarkBasicAuth:
    return PostmarkBasicAuth(settings(tmp_path, "pa:ss word", username="postmark"))


def test_the_right_credentials_pass(auth: PostmarkBasicAuth) -> None:
    """Basic postmark:<secret> passes (a colon in the password is part of it)."""
    auth.verify(_basic("postmark", "pa:ss word"), b"{}")
    auth.verify({"authorization": _basic("postmark", "pa:ss word")["Authorization"]}, b"{}")


@pytest.mark.parametrize("headers", [
    {}, _basic("postmark", "wrong"), _basic("other", "pa:ss word"), _basic("postmark", ""),
    {"Authorization": "Bearer pa:ss word"}, {"Authorization": "Basic !!!"},
    {"Authorization": "Basic " + base64.b64encode(b"postmark").decode()},
])
def test_anything_else_is_bad_auth(auth: PostmarkBasicAuth, headers: dict[str, str]) -> None:
    """No header, a wrong user or password, another scheme, undecodable credentials: 401 bad_auth."""
    with pytest.raises(Refused) as refused:
        auth.verify(headers, b"{}")
    assert (refused.value.reason, refused.value.status) == ("bad_auth", 401)


@pytest.mark.parametrize(("secret", "username"), [(None, "postmark"), ("pw", None)])
def test_credentials_are_required(tmp_path: Path, secret: str | None, username: str | None) -> None:
    """Without a username or a password the endpoint would take anyone's events: a config error."""
    with pytest.raises(ConfigError, match=r"webhooks\.postmark"):
        PostmarkBasicAuth(settings(tmp_path, secret, username=username))


def test_posts_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /webhooks/postmark: right credentials store the record once, wrong ones are 401 and counted."""
    monkeypatch.setenv("POSTMARK_PASSWORD", "s3cret")
    config = Config(webhooks={"postmark": WebhookSettings(secret_env="POSTMARK_PASSWORD",
                                                          username="hook")})
    body = (WEBHOOKS / "postmark_Bounce.json").read_bytes()
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        pipeline = Pipeline(store, metrics=metrics)
        app = create_app(metrics, endpoints=webhook_endpoints(config, pipeline, metrics))

        async def post(headers: dict[str, str]) -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
                return await c.post("/webhooks/postmark", content=body, headers=headers)

        wrong = asyncio.run(post(_basic("hook", "guess")))
        assert (wrong.status_code, wrong.json()) == (401, {"error": "bad_auth"})
        assert store.count("events") == 0
        for _ in range(2):
            ok = asyncio.run(post(_basic("hook", "s3cret")))
            assert ok.status_code == 200 and ok.json()["events"] == 1, ok.text
        assert store.count("events") == 1
        [row] = store.trace("margareth@nasa.com")
        assert row["delivery"]["state"] == "bounced"
    value = metrics.registry.get_sample_value
    assert value("mailmon_events_rejected_total", {"source": "postmark", "reason": "bad_auth"}) == 1
    assert value("mailmon_events_duplicate_total", {"source": "postmark"}) == 1


def test_exported_records_are_ingested(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mailmon ingest postmark FILE`: a file of records, one per line, stored once."""
    export = tmp_path / "postmark.ndjson"
    export.write_text("\n".join(json.dumps(json.loads(p.read_text()))
                                for p in sorted(WEBHOOKS.glob("postmark_*.json"))))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["ingest", "postmark", str(export), "--db", db, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["records"], summary["events"], summary["stored"]) == (6, 5, 5)


def test_registered() -> None:
    """``postmark`` is a registered webhook with this source and verifier."""
    hook = webhook("postmark")
    assert (hook.source, hook.verifier) == (PostmarkEvents, PostmarkBasicAuth)
