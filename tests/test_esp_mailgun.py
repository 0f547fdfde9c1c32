"""Mailgun webhooks: the documented payloads map to the expected events; the signature block,
its freshness and its token are checked on the raw body."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from esp_http import served
from esp_payloads import corpus_files, feed_body, golden_corpus
from factories import Clock

from monitor.cli import main
from monitor.collectors.esp.base import Refused, webhook
from monitor.collectors.esp.mailgun import MailgunEvents, MailgunSignature, split
from monitor.config import Config, WebhookSettings
from monitor.model import EventType

HOOK = webhook("mailgun")
KEY = "key-test-signing"  # the key the corpus's COMPOSED body is signed with
SIGNED = "mailgun_webhook_body_failed_permanent_COMPOSED_signed_with_key-test-signing.json"
SIGNED_AT = 1770918175
#: The django-anymail fixtures in the JSON webhook format (the others are legacy form posts).
JSON_FIXTURES = ("clicked_event", "complained_event", "delivered_event", "failed_greylisted_event",
                 "failed_permanent_event", "failed_temporary_event", "opened_event",
                 "rejected_event", "unsubscribed_event")  # fmt: skip


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> WebhookSettings:
    monkeypatch.setenv("MAILGUN_KEY", KEY)
    return WebhookSettings(secret_env="MAILGUN_KEY", tolerance_seconds=300)


def body(event: dict[str, Any], timestamp: int, token: str, key: str = KEY) -> bytes:
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    block = {"timestamp": str(timestamp), "token": token, "signature": signature}
    return json.dumps({"signature": block, "event-data": event}).encode()


def event(kind: str = "delivered", recipient: str = "a@example.com", at: float = 1770918100.5,
          **more: Any) -> dict[str, Any]:  # fmt: skip
    return {"event": kind, "timestamp": at, "recipient": recipient, "id": "ev1",
            "message": {"headers": {"message-id": "m1@example.net"}}, **more}  # fmt: skip


def test_corpus_payloads_give_the_expected_events() -> None:
    """Every Mailgun webhook payload of the corpus gives its reviewed events."""
    files = corpus_files("mailgun_event-data_*.json", "mailgun_webhook_body_*.json",
                         *(f"anymail_fixtures/mailgun__test_{n}.json" for n in JSON_FIXTURES))
    found = golden_corpus("mailgun", files, MailgunEvents, split)
    [bounce] = found[SIGNED]
    assert bounce.type is EventType.BOUNCED
    assert bounce.recipient == "badrecipient@sample.mailgun.com"
    assert bounce.message_id == "20260212174255.58bbb7ce85a423e5@mailgun.com"
    assert bounce.source == "mailgun:sample.mailgun.com"
    assert (bounce.reply_code, bounce.enhanced_status) == (550, "5.5.0")
    assert bounce.diagnostic.startswith("5.5.0 Requested action not taken: mailbox unavailable")
    assert (bounce.relay, bounce.sending_ip) == ("802679870.pamx1.hotmail.com", "161.38.194.10")
    assert bounce.tags == ("bounce_type:permanent", "bounce_subtype:bounce",
                           "category:webhook_payload")  # fmt: skip
    [deferral] = found["mailgun_event-data_failed_temporary.json"]
    assert (deferral.type, deferral.reply_code) == (EventType.DEFERRED, 421)
    assert deferral.tags[:2] == ("bounce_type:temporary", "bounce_subtype:generic")
    [opened] = found["anymail_fixtures/mailgun__test_opened_event.json"]
    assert opened.tags == ("category:welcome", "category:variation-A",
                           "meta:cohort=2018-08-B", "meta:user_id=123456")  # fmt: skip
    [unsubscribed] = found["mailgun_event-data_unsubscribed.json"]
    assert unsubscribed.tags == ()  # tag "*": every tag, not a category
    [complaint] = found["mailgun_event-data_complained.json"]
    assert (complaint.reason, complaint.blame) == ("feedback", "reputation")
    [rejected] = found["anymail_fixtures/mailgun__test_rejected_event.json"]
    assert rejected.diagnostic == "Sandbox subdomains are for test purposes only."
    assert {e.type for events in found.values() for e in events} == {
        EventType.SUBMITTED, EventType.DELIVERED, EventType.DEFERRED, EventType.BOUNCED,
        EventType.REJECTED, EventType.COMPLAINED, EventType.OPENED, EventType.CLICKED,
        EventType.UNSUBSCRIBED,
    }  # fmt: skip


def test_legacy_form_webhooks_and_fragments_are_not_understood() -> None:
    """The legacy (form-field) webhooks, and fragments without a time, are counted, not guessed."""
    legacy = [p for p in corpus_files("anymail_fixtures/mailgun__*.json", "mailgun_signature_*")
              if not any(p.name == f"mailgun__test_{n}.json" for n in JSON_FIXTURES)]  # fmt: skip
    problems = {p.name: dict(feed_body(HOOK.source(), split(p.read_text()))[1]) for p in legacy}
    assert problems == {
        "mailgun__test_alt_smtp_code.json": {"not a mailgun event": 1},  # "bounced": legacy
        "mailgun__test_delivery_status_is_none_event.json": {"not a mailgun event": 1},
        "mailgun__test_dropped_spam.json": {"not a mailgun event": 1},
        "mailgun__test_dropped_timed_out.json": {"not a mailgun event": 1},
        "mailgun__test_invalid_mailbox.json": {"not a mailgun event": 1},
        "mailgun__test_metadata_key_conflicts.json": {},  # a legacy click with its time: read
        "mailgun__test_metadata_post_fields.json": {"not a mailgun event": 1},
        "mailgun__test_misconfigured_inbound.json": {"no event-data": 1},
        "mailgun__test_tags.json": {"not a mailgun event": 1},
        "mailgun__test_x_tags.json": {"not a mailgun event": 1},
        "mailgun_signature_block_doc_example.json": {"no event-data": 1},
    }


def test_failed_reasons_decide_the_outcome() -> None:
    """Permanent ``failed`` is a bounce, a suppression-list drop or an expiry; temporary a deferral."""
    source = HOOK.source()
    kinds = {}
    for severity, reason in [("permanent", "bounce"), ("permanent", "suppress-bounce"),
                             ("permanent", "old"), ("temporary", "greylisted")]:  # fmt: skip
        [e] = source.feed(event("failed", severity=severity, reason=reason))
        kinds[reason] = (e.type, e.reason)
    assert kinds == {
        "bounce": (EventType.BOUNCED, None),  # the pipeline classifies the reply
        "suppress-bounce": (EventType.SUPPRESSED, "suppressed"),
        "old": (EventType.EXPIRED, None),
        "greylisted": (EventType.DEFERRED, None),
    }
    [no_severity] = source.feed(event("failed", **{"delivery-status": {"code": 452}}))
    assert no_severity.type is EventType.DEFERRED


def test_corpus_signed_body_passes_and_tampered_blocks_are_refused(settings: WebhookSettings) -> None:
    """The corpus body signed with the test key passes; a changed token, timestamp or key does not."""
    [path] = corpus_files(SIGNED)
    raw = path.read_bytes()
    MailgunSignature(settings, clock=Clock(SIGNED_AT + 10)).verify({}, raw)
    document = json.loads(raw)
    for field, value in [("token", "f" + document["signature"]["token"][1:]),
                         ("timestamp", str(SIGNED_AT + 1)), ("signature", "0" * 64)]:  # fmt: skip
        tampered = json.loads(raw)
        tampered["signature"][field] = value
        with pytest.raises(Refused) as refused:
            MailgunSignature(settings, clock=Clock(SIGNED_AT)).verify({}, json.dumps(tampered).encode())
        assert (refused.value.reason, refused.value.status) == ("bad_signature", 403), field
    wrong = body(event(), SIGNED_AT, "t" * 50, key="key-someone-else")
    with pytest.raises(Refused, match="signature does not match"):
        MailgunSignature(settings, clock=Clock(SIGNED_AT)).verify({}, wrong)
    for unsigned in (b"{not json", b"[]", json.dumps({"event-data": event()}).encode()):
        with pytest.raises(Refused) as refused:
            MailgunSignature(settings, clock=Clock(SIGNED_AT)).verify({}, unsigned)
        assert refused.value.reason == "bad_signature"


def test_timestamps_outside_the_tolerance_are_stale(settings: WebhookSettings) -> None:
    """A signature older (or further ahead) than tolerance_seconds is refused as stale."""
    signed = body(event(), SIGNED_AT, "t" * 50)
    MailgunSignature(settings, clock=Clock(SIGNED_AT + 300)).verify({}, signed)
    for now in (SIGNED_AT + 301, SIGNED_AT - 301):
        with pytest.raises(Refused) as refused:
            MailgunSignature(settings, clock=Clock(now)).verify({}, signed)
        assert (refused.value.reason, refused.value.status) == ("stale", 403)


def test_a_token_carries_one_event_only(settings: WebhookSettings) -> None:
    """A token reused with another event is replayed; the identical body again is a retry."""
    verifier = MailgunSignature(settings, clock=Clock(SIGNED_AT))
    first = body(event(recipient="a@example.com"), SIGNED_AT, "t" * 50)
    verifier.verify({}, first)
    verifier.verify({}, first)  # Mailgun retrying: its events are duplicates
    forged = body(event(recipient="someone@else.example"), SIGNED_AT, "t" * 50)
    with pytest.raises(Refused) as refused:
        verifier.verify({}, forged)
    assert (refused.value.reason, refused.value.status) == ("replayed", 403)
    verifier.verify({}, body(event(recipient="b@example.com"), SIGNED_AT, "u" * 50))


def test_the_token_cache_is_bounded_in_count_and_age(settings: WebhookSettings) -> None:
    """Tokens leave the cache when it is full and when the freshness check would refuse them."""
    clock = Clock(SIGNED_AT)
    verifier = MailgunSignature(settings, clock=clock, max_tokens=3)
    for n in range(5):
        verifier.verify({}, body(event(), SIGNED_AT, f"token{n}"))
    assert list(verifier._seen) == ["token2", "token3", "token4"]
    clock.now = SIGNED_AT + 200
    verifier.verify({}, body(event(), SIGNED_AT + 200, "late"))
    clock.now = SIGNED_AT + 301  # the first three are past the tolerance now
    verifier.verify({}, body(event(), SIGNED_AT + 290, "later"))
    assert list(verifier._seen) == ["late", "later"]


def test_signed_posts_are_stored_once_classified_and_refusals_counted(
    tmp_path: Path, settings: WebhookSettings
) -> None:
    """Over HTTP: a signed bounce is stored and classified, its retry is a duplicate, a forged
    or replayed one stores nothing and is counted by reason."""
    [path] = corpus_files(SIGNED)
    raw = body(json.loads(path.read_bytes())["event-data"], int(time.time()), "e0b5" + "1" * 46)
    config = Config(webhooks={"mailgun": settings})
    with served(tmp_path, config) as app:
        forged = raw.replace(b'"token": "e0b5', b'"token": "f0b5')
        assert forged != raw
        refused = app.post("mailgun", forged, {})
        assert (refused.status_code, refused.json()) == (403, {"error": "bad_signature"})
        assert app.store.count("events") == 0
        ok = app.post("mailgun", raw, {})
        assert ok.status_code == 200, ok.text
        assert ok.json()["events"] == 1
        assert app.post("mailgun", raw, {}).status_code == 200  # delivered again
        assert app.store.count("events") == 1
        [bounce] = app.store.trace("badrecipient@sample.mailgun.com")
        assert bounce["delivery"]["state"] == "bounced"
        [stored] = bounce["events"]
        assert (stored.reason, stored.hard) == ("userunknown", True)
        other = json.loads(raw)
        other["event-data"]["recipient"] = "victim@example.org"
        replayed = app.post("mailgun", json.dumps(other).encode(), {})
        assert (replayed.status_code, replayed.json()) == (403, {"error": "replayed"})
        assert app.store.count("events") == 1
        assert app.value("mailmon_events_rejected_total", source="mailgun",
                         reason="bad_signature") == 1  # fmt: skip
        assert app.value("mailmon_events_rejected_total", source="mailgun", reason="replayed") == 1
        assert app.value("mailmon_events_duplicate_total", source="mailgun") == 1


def test_an_export_with_one_bad_record_keeps_the_good_ones() -> None:
    """An Events API page: a record that is not an event is counted, the others map."""
    page = json.dumps({"items": [event("delivered", "a@example.com"), {"nothing": 1},
                                 event("opened", "b@example.com", at=1770918200.25)],
                       "paging": {}})  # fmt: skip
    source = HOOK.source()
    results = []
    for record in HOOK.split(page):
        try:
            results.append([e.type for e in source.feed(record)])
        except Exception as exc:
            results.append(type(exc).__name__)
    assert results == [[EventType.DELIVERED], "NotUnderstood", [EventType.OPENED]]


def test_the_same_event_twice_has_the_same_id_and_distinct_events_differ() -> None:
    """Ids come from the fields: a redelivery repeats them, a second open a second later does not."""
    source = HOOK.source()
    [a] = source.feed(json.loads(body(event("opened"), SIGNED_AT, "x")))
    [b] = source.feed(json.loads(body(event("opened"), SIGNED_AT, "y")))
    [c] = source.feed(json.loads(body(event("opened", at=1770918101.5), SIGNED_AT, "z")))
    assert a.id == b.id != c.id


def test_exported_events_are_ingested_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mailmon ingest mailgun` reads Events API pages, webhook bodies and bare event-data; the
    same event in two shapes, or read twice, is stored once."""
    page = tmp_path / "events.json"
    page.write_text(json.dumps({"items": [event("delivered", "a@example.com"),
                                          event("opened", "a@example.com", at=1770918200.25)],
                                "paging": {}}))  # fmt: skip
    files = [str(page), *map(str, corpus_files(SIGNED, "mailgun_event-data_*.json"))]
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["ingest", "mailgun", *files, "--db", db, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # The signed body and the bare failed_permanent event-data are one event: stored once.
    assert (summary["records"], summary["events"], summary["stored"]) == (11, 11, 10)
    assert summary["duplicates"] == 1
    assert main(["ingest", "mailgun", *files, "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicates"] == 11
