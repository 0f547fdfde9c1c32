"""SparkPost webhooks: every documented event type maps to its event, bounce classes decide what a
bounce is, and only requests with the configured Basic credentials or bearer token are taken."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from esp_http import served
from esp_payloads import corpus_files, feed_body, golden_corpus, settings

from monitor.classify import BLAMES, REASONS
from monitor.collectors.esp.base import Refused, webhook
from monitor.collectors.esp.httpauth import BasicOrBearer
from monitor.collectors.esp.sparkpost import SparkPostEvents, bounce_classes
from monitor.collectors.jsonbody import split_records
from monitor.config import Config
from monitor.errors import ConfigError
from monitor.model import EventType

HOOK = webhook("sparkpost")
SECRET = "s3cret-sparkpost"
#: Corpus files that are fragments of events (django-anymail test input without a time).
FRAGMENTS = ("sparkpost_click_anymail.json", "sparkpost_open_anymail.json",
             "sparkpost__test_amp_events.json", "sparkpost__test_bounce_challenge_response.json",
             "sparkpost__test_click_event.json", "sparkpost__test_initial_open_event_as_opened.json",
             "sparkpost__test_initial_open_event_as_unknown.json", "sparkpost__test_open_event.json")  # fmt: skip


def msys(kind: str, **fields: Any) -> dict[str, Any]:
    """One event object as SparkPost posts it (the documented fields a mapping reads)."""
    event = {"type": kind, "timestamp": "1464824548", "event_id": f"{kind}-1",
             "message_id": "0004e3724f57753a3561", "transmission_id": "84345317650824116",
             "rcpt_to": "someone@example.com", "raw_rcpt_to": "someone@example.com", **fields}  # fmt: skip
    group = {"open": "track_event", "click": "track_event", "amp_click": "track_event",
             "list_unsubscribe": "unsubscribe_event"}.get(kind, "message_event")  # fmt: skip
    return {"msys": {group: event}}


def one(record: dict[str, Any]) -> Any:
    [event] = SparkPostEvents().feed(record)
    return event


def test_corpus_payloads_give_the_expected_events() -> None:
    """Every complete SparkPost payload of the corpus gives its reviewed events."""
    files = [p for p in corpus_files("sparkpost_*.json", "anymail_fixtures/sparkpost__*.json")
             if p.name not in FRAGMENTS]  # fmt: skip
    found = golden_corpus("sparkpost", files, SparkPostEvents, split_records)
    assert found["sparkpost_ping_anymail.json"] == []
    [bounce] = found["sparkpost_bounce_anymail.json"]
    assert (bounce.type, bounce.recipient, bounce.hard) == (EventType.BOUNCED, "bounce@example.com", True)
    assert (bounce.reply_code, bounce.enhanced_status) == (550, "5.1.1")
    assert bounce.diagnostic == "550 5.1.1 <bounce@example.com>: Recipient address rejected: User unknown"
    assert bounce.provider_message_id == bounce.queue_id == "0004e3724f57753a3561"
    assert bounce.tags == ("bounce_class:10",)
    [delay] = found["sparkpost_delay_anymail.json"]
    assert (delay.type, delay.reply_code, delay.tags) == (EventType.DEFERRED, 454, ("bounce_class:21",))
    [injection] = found["sparkpost_injection_anymail.json"]
    assert injection.type is EventType.SUBMITTED
    assert injection.tags[:3] == ("campaign:Example Campaign Name", "tag:male", "tag:US")
    assert "meta:customKey=customValue" in injection.tags
    [suppressed] = found["sparkpost_generation_rejection_anymail.json"]
    assert (suppressed.type, suppressed.reason) == (EventType.SUPPRESSED, "suppressed")
    [complaint] = found["sparkpost_spam_complaint.json"]
    assert complaint.type is EventType.COMPLAINED and "feedback_type:abuse" in complaint.tags
    assert (complaint.reason, complaint.blame) == ("feedback", "reputation")
    kinds = {e.type for events in found.values() for e in events}
    assert kinds == {EventType.SUBMITTED, EventType.DELIVERED, EventType.DEFERRED,
                     EventType.BOUNCED, EventType.REJECTED, EventType.SUPPRESSED,
                     EventType.COMPLAINED, EventType.UNSUBSCRIBED}  # fmt: skip


def test_fragments_without_a_time_are_not_understood() -> None:
    """django-anymail's partial events (no timestamp) are counted as not understood, never dated now."""
    for path in corpus_files(*(f"*{name}" for name in FRAGMENTS), *(
            f"anymail_fixtures/{name}" for name in FRAGMENTS)):  # fmt: skip
        events, problems = feed_body(SparkPostEvents(), split_records(path.read_text()))
        assert events == [] and set(problems) == {"not a sparkpost event"}, path.name


def test_engagement_events_of_every_documented_type() -> None:
    """Opens (plain, initial, AMP), clicks and both unsubscribes map; relay events are ignored."""
    for kind, expected in [("open", EventType.OPENED), ("initial_open", EventType.OPENED),
                           ("amp_open", EventType.OPENED), ("click", EventType.CLICKED),
                           ("amp_click", EventType.CLICKED),
                           ("list_unsubscribe", EventType.UNSUBSCRIBED),
                           ("link_unsubscribe", EventType.UNSUBSCRIBED)]:  # fmt: skip
        event = one(msys(kind, target_link_url="https://example.com/x"))
        assert (event.type, event.recipient, event.diagnostic) == (expected, "someone@example.com", None)
    assert SparkPostEvents().feed({"msys": {"relay_event": {"type": "relay_delivery"}}}) == []


def test_bounce_classes_decide_what_a_bounce_is() -> None:
    """The class makes auto-replies, transient failures and timeouts what they are, and hard or not."""
    text = "550 something the classifier has never seen"
    kinds = {c: one(msys("bounce", bounce_class=str(c), raw_reason=text, error_code="550"))
             for c in (10, 50, 60, 70, 24, 100, 90)}  # fmt: skip
    assert {c: e.type for c, e in kinds.items()} == {
        10: EventType.BOUNCED, 50: EventType.BOUNCED, 60: EventType.AUTO_REPLIED,
        70: EventType.DEFERRED, 24: EventType.EXPIRED, 100: EventType.AUTO_REPLIED,
        90: EventType.UNSUBSCRIBED,
    }  # fmt: skip
    assert (kinds[10].hard, kinds[50].hard) == (True, False)  # a block is not the address
    # The text alone says nothing: the class gives the reason (and says so in the rule).
    assert (kinds[10].reason, kinds[10].blame, kinds[10].rule) == (
        "userunknown", "recipient", "sparkpost.bounce_class.10")
    assert (kinds[50].reason, kinds[50].blame) == ("blocked", "reputation")
    # A text the classifier reads keeps its own reason: the pipeline classifies it.
    clear = one(msys("bounce", bounce_class="10", error_code="552",
                     raw_reason="552 5.2.2 mailbox full"))  # fmt: skip
    assert (clear.reason, clear.hard) == (None, True)
    assert SparkPostEvents().feed(msys("bounce", bounce_class="80")) == []  # a subscribe request
    unknown = one(msys("bounce", bounce_class="77", raw_reason=text))
    assert unknown.type is EventType.BOUNCED and unknown.tags == ("bounce_class:77",)


def test_the_bounce_class_table_is_sparkposts_and_speaks_our_vocabulary() -> None:
    """Every documented class is in the table; reasons and blames are from Mailmon's sets."""
    table = bounce_classes()
    assert sorted(table) == [1, 10, 20, 21, 22, 23, 24, 25, 26, 30, 40, 50, 51, 52, 53, 54,
                             60, 70, 80, 90, 100]  # fmt: skip
    assert {c.code for c in table.values() if c.hard} == {10, 30, 90}
    for found in table.values():
        assert found.reason is None or found.reason in REASONS
        assert found.blame is None or found.blame in BLAMES


def test_basic_or_bearer_credentials_pass_and_others_are_refused(tmp_path: Path) -> None:
    """Basic with the configured user and secret, or the secret as bearer token; nothing else."""
    verifier = BasicOrBearer(settings(tmp_path, SECRET, username="sparkpost"), "sparkpost")
    good = base64.b64encode(f"sparkpost:{SECRET}".encode()).decode()
    verifier.verify({"Authorization": f"Basic {good}"}, b"[]")
    verifier.verify({"authorization": f"bearer {SECRET}"}, b"[]")
    wrong_user = base64.b64encode(f"other:{SECRET}".encode()).decode()
    wrong_secret = base64.b64encode(b"sparkpost:guess").decode()
    for given in ({}, {"Authorization": f"Basic {wrong_user}"},
                  {"Authorization": f"Basic {wrong_secret}"}, {"Authorization": "Bearer guess"},
                  {"Authorization": SECRET}, {"Authorization": "Bearer \u00e9"}):  # fmt: skip
        with pytest.raises(Refused) as refused:
            verifier.verify(given, b"[]")
        assert (refused.value.reason, refused.value.status) == ("bad_auth", 401), given
    bearer_only = BasicOrBearer(settings(tmp_path, SECRET), "sparkpost")
    with pytest.raises(Refused):  # no username configured: Basic never passes
        bearer_only.verify({"Authorization": f"Basic {base64.b64encode(SECRET.encode()).decode()}"}, b"")
    with pytest.raises(ConfigError, match=r"webhooks\.sparkpost"):
        BasicOrBearer(settings(tmp_path, None), "sparkpost")


def test_posts_store_good_records_once_and_refuse_bad_credentials(tmp_path: Path) -> None:
    """Over HTTP: the ping is accepted, a batch keeps its good records, a redelivery is a duplicate,
    wrong credentials store nothing and are counted."""
    config = Config(webhooks={"sparkpost": settings(tmp_path, SECRET, username="sparkpost")})
    auth = {"Authorization": "Basic " + base64.b64encode(f"sparkpost:{SECRET}".encode()).decode()}
    ping = corpus_files("sparkpost_ping_anymail.json")[0].read_bytes()
    batch = json.dumps([
        msys("delivery", rcpt_to="a@example.com", queue_time="1500"),
        {"msys": {"message_event": {"type": "delivery"}}},  # no time, no recipient
        msys("bounce", rcpt_to="b@example.org", bounce_class="10", error_code="550",
             raw_reason="550 5.1.1 <b@example.org>: Recipient address rejected: User unknown"),
    ]).encode()
    with served(tmp_path, config) as app:
        assert app.post("sparkpost", batch, {"Authorization": "Bearer guess"}).status_code == 401
        assert app.store.count("events") == 0
        pinged = app.post("sparkpost", ping, auth)
        assert (pinged.status_code, pinged.json()["events"]) == (200, 0)
        ok = app.post("sparkpost", batch, auth)
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"records": 3, "events": 2, "rejected": 1,
                             "problems": {"not a sparkpost event": 1}}  # fmt: skip
        assert app.post("sparkpost", batch, auth).status_code == 200
        assert app.store.count("events") == 2
        [bounce] = app.store.trace("b@example.org")
        assert bounce["delivery"]["state"] == "bounced"
        assert (bounce["events"][0].reason, bounce["events"][0].hard) == ("userunknown", True)
        [delivered] = app.store.trace("a@example.com")
        assert delivered["events"][0].delay_seconds == 1.5
        assert app.value("mailmon_events_rejected_total", source="sparkpost", reason="bad_auth") == 1
        assert app.value("mailmon_events_duplicate_total", source="sparkpost") == 2


def test_the_same_event_twice_has_the_same_id() -> None:
    """Ids come from the fields and SparkPost's event_id: a redelivery repeats them."""
    first, again = one(msys("open")), one(msys("open"))
    other = one(msys("open", event_id="open-2"))
    assert first.id == again.id != other.id
