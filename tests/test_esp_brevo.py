"""Brevo transactional webhooks: every documented event maps to its event, and only requests with
the configured Basic credentials or bearer token are taken."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from esp_http import served
from esp_payloads import corpus_files, golden_corpus, settings

from monitor.collectors.esp.base import Refused, webhook
from monitor.collectors.esp.brevo import BrevoEvents
from monitor.collectors.jsonbody import split_records
from monitor.collectors.source import NotUnderstood
from monitor.config import Config
from monitor.model import EventType

HOOK = webhook("brevo")
TOKEN = "brevo-bearer-token"


def brevo(name: str, **fields: Any) -> dict[str, Any]:
    return {"event": name, "email": "someone@example.com", "id": 12345, "ts_event": 1604933654,
            "message-id": "<201798300811.5787683@relay.domain.com>", **fields}  # fmt: skip


def test_corpus_payloads_give_the_expected_events() -> None:
    """Every Brevo payload of the corpus gives its reviewed events."""
    files = corpus_files("brevo_*.json", "anymail_fixtures/brevo__*.json")
    found = golden_corpus("brevo", files, BrevoEvents, split_records)
    kinds = {name: [e.type for e in events] for name, events in found.items()
             if name.startswith("brevo_")}  # fmt: skip
    assert kinds == {
        "brevo_blocked.json": [EventType.SUPPRESSED],
        "brevo_click.json": [EventType.CLICKED],
        "brevo_deferred.json": [EventType.DEFERRED],
        "brevo_delivered.json": [EventType.DELIVERED],
        "brevo_error.json": [EventType.REJECTED],
        "brevo_hard_bounce.json": [EventType.BOUNCED],
        "brevo_invalid_email.json": [EventType.DROPPED],
        "brevo_request.json": [EventType.SUBMITTED],
        "brevo_soft_bounce.json": [EventType.BOUNCED],
        "brevo_spam.json": [EventType.COMPLAINED],
        "brevo_unique_opened.json": [EventType.OPENED],
        "brevo_unique_proxy_open.json": [EventType.OPENED],
        "brevo_unsubscribed.json": [EventType.UNSUBSCRIBED],
    }
    [hard] = found["brevo_hard_bounce.json"]
    assert (hard.recipient, hard.message_id) == ("example@domain.com", "201798300811.5787683@relay.domain.com")
    assert (hard.hard, hard.diagnostic) == (True, "server is down")
    assert hard.occurred_at.timestamp() == 1604933654  # ts_event, not the local-time date
    assert hard.sending_ip is None  # the documentation's "xxx.xxx.xxx.xxx"
    assert hard.tags == ("bounce_type:hard_bounce", "category:transac_messages", "template:22",
                         "meta:custom=some_custom_header")  # fmt: skip
    [soft] = found["brevo_soft_bounce.json"]
    assert (soft.type, soft.hard) == (EventType.BOUNCED, False)
    [blocked] = found["brevo_blocked.json"]
    assert blocked.reason == "suppressed"
    [proxy] = found["brevo_unique_proxy_open.json"]
    assert proxy.tags[:3] == ("machine_open:true", "category:this_tag", "category:tag_thos")
    [deferred] = found["anymail_fixtures/brevo__test_deferred_event.json"]
    assert (deferred.reply_code, deferred.enhanced_status) == (550, "5.1.1")
    assert deferred.occurred_at.timestamp() == 1520363423  # ts_epoch in milliseconds
    [sent] = found["anymail_fixtures/brevo__test_sent_event.json"]
    assert sent.tags == ("category:tag1", "category:tag2", "template:12", "meta:meta=data")


def test_a_first_open_sent_as_opened_and_unique_opened_counts_once() -> None:
    """Brevo reports a first open twice (opened, unique_opened): the two have one id."""
    source = BrevoEvents()
    [opened] = source.feed(brevo("opened"))
    [unique] = source.feed(brevo("unique_opened"))
    [later] = source.feed(brevo("opened", ts_event=1604933700))
    assert opened.id == unique.id != later.id


def test_records_without_a_time_or_of_unknown_events_are_not_understood() -> None:
    """A record with no time is never dated by its arrival; an unknown event name is counted."""
    for record in ({"event": "delivered", "email": "a@example.com"}, brevo("teleported")):
        with pytest.raises(NotUnderstood):
            BrevoEvents().feed(record)


def test_bearer_or_basic_credentials_only(tmp_path: Path) -> None:
    """The token as bearer, or Basic with the configured user; anything else is bad_auth."""
    verifier = HOOK.verifier(settings(tmp_path, TOKEN, username="brevo"))
    verifier.verify({"Authorization": f"Bearer {TOKEN}"}, b"{}")
    verifier.verify({"Authorization": "Basic " + base64.b64encode(f"brevo:{TOKEN}".encode()).decode()}, b"{}")
    for given in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Token {TOKEN}"}):
        with pytest.raises(Refused) as refused:
            verifier.verify(given, b"{}")
        assert (refused.value.reason, refused.value.status) == ("bad_auth", 401)


def test_posts_are_stored_once_and_bad_credentials_refused(tmp_path: Path) -> None:
    """Over HTTP: a hard bounce is stored and classified, sent again it is a duplicate, a request
    with the wrong token stores nothing and is counted."""
    config = Config(webhooks={"brevo": settings(tmp_path, TOKEN)})
    body = json.dumps(brevo("hard_bounce", email="b@example.org", ts_event=int(time.time()) - 60,
                            reason="550 5.1.1 <b@example.org>: Recipient address rejected: "
                                   "User unknown in virtual alias table")).encode()  # fmt: skip
    with served(tmp_path, config) as app:
        refused = app.post("brevo", body, {"Authorization": "Bearer guess"})
        assert (refused.status_code, refused.json()) == (401, {"error": "bad_auth"})
        assert app.store.count("events") == 0
        ok = app.post("brevo", body, {"Authorization": f"Bearer {TOKEN}"})
        assert (ok.status_code, ok.json()["events"]) == (200, 1)
        assert app.post("brevo", body, {"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert app.store.count("events") == 1
        [bounce] = app.store.trace("b@example.org")
        assert bounce["delivery"]["state"] == "bounced"
        assert (bounce["events"][0].reason, bounce["events"][0].hard) == ("userunknown", True)
        assert app.value("mailmon_events_rejected_total", source="brevo", reason="bad_auth") == 1
        assert app.value("mailmon_events_duplicate_total", source="brevo") == 1
