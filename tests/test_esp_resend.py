"""Resend webhooks: every documented email event maps to its event, and only bodies carrying a
fresh Svix signature over id, timestamp and the raw body are taken."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from esp_http import served
from esp_payloads import corpus_files, golden_corpus, settings
from factories import Clock

from monitor.collectors.esp.base import Refused
from monitor.collectors.esp.resend import ResendEvents, SvixSignature
from monitor.collectors.jsonbody import split_records
from monitor.collectors.source import NotUnderstood
from monitor.config import Config
from monitor.errors import ConfigError
from monitor.model import EventType

KEY = os.urandom(24)  # a throw-away signing key for this run
SECRET = "whsec_" + base64.b64encode(KEY).decode()
NOW = 1_732_318_872


def sign(body: bytes, ident: str = "msg_2p5", stamp: int = NOW, key: bytes = KEY) -> dict[str, str]:
    """Svix's headers for ``body``."""
    mac = hmac.new(key, f"{ident}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"svix-id": ident, "svix-timestamp": str(stamp),
            "svix-signature": "v1," + base64.b64encode(mac).decode()}  # fmt: skip


def resend(kind: str, to: Any = "someone@example.com", **data: Any) -> dict[str, Any]:
    return {"type": kind, "created_at": "2024-11-22T23:41:12.126Z",
            "data": {"email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
                     "from": "Acme <onboarding@resend.dev>", "to": to, **data}}  # fmt: skip


def one(record: dict[str, Any]) -> Any:
    [event] = ResendEvents().feed(record)
    return event


def test_corpus_payloads_give_the_expected_events() -> None:
    """Every Resend payload of the corpus gives its reviewed events."""
    files = corpus_files("resend_*.json", "anymail_fixtures/resend__*.json")
    found = golden_corpus("resend", files, ResendEvents, split_records)
    assert found["resend_email_scheduled.json"] == []  # nothing has happened yet
    kinds = {name: [e.type for e in events] for name, events in found.items()
             if name.startswith("resend_email_")}  # fmt: skip
    assert kinds == {
        "resend_email_bounced.json": [EventType.SUPPRESSED],  # Permanent / Suppressed
        "resend_email_clicked.json": [EventType.CLICKED],
        "resend_email_complained.json": [EventType.COMPLAINED],
        "resend_email_delivered.json": [EventType.DELIVERED],
        "resend_email_delivery_delayed.json": [EventType.DEFERRED],
        "resend_email_failed.json": [EventType.REJECTED],
        "resend_email_opened.json": [EventType.OPENED],
        "resend_email_scheduled.json": [],
        "resend_email_sent.json": [EventType.SUBMITTED],
        "resend_email_suppressed.json": [EventType.SUPPRESSED],
    }
    [delivered] = found["resend_email_delivered.json"]
    assert (delivered.recipient, delivered.sender) == ("delivered@resend.dev", "onboarding@resend.dev")
    assert delivered.provider_message_id == delivered.queue_id == "56761188-7520-42d8-8898-ff6fc54ce618"
    assert delivered.tags == ("category:confirm_email", "broadcast:8b146471-e88e-4322-86af-016cd36fd216",
                              "template:43f68331-0622-4e15-8202-246a0388854b")  # fmt: skip
    [bounced] = found["resend_email_bounced.json"]
    assert bounced.reason == "suppressed"
    assert bounced.tags[:2] == ("bounce_type:Permanent", "bounce_subtype:Suppressed")
    assert bounced.diagnostic.startswith("The recipient's email address is on the suppression list")
    [clicked] = found["resend_email_clicked.json"]
    assert clicked.occurred_at.isoformat() == "2024-11-24T05:00:57.163000+00:00"  # the click's time
    [failed] = found["resend_email_failed.json"]
    assert failed.diagnostic == "reached_daily_quota"
    sent = found["anymail_fixtures/resend__test_sent_event.json"]
    assert [e.recipient for e in sent] == ["to@example.org", "to2@example.org"]  # one per "to"
    [old_suppressed] = found["anymail_fixtures/resend__test_suppressed_event.json"]
    assert old_suppressed.type is EventType.SUPPRESSED


def test_bounce_types_decide_hardness_and_subtypes_the_vague_reason() -> None:
    """Permanent bounces are hard unless about the message; Transient never; the subtype gives the
    reason only when the message says nothing the classifier recognises."""
    vague = "The recipient's email provider sent a hard bounce message."
    no_email = one(resend("email.bounced", bounce={"type": "Permanent", "subType": "NoEmail",
                                                    "message": vague}))  # fmt: skip
    assert (no_email.type, no_email.hard, no_email.reason) == (EventType.BOUNCED, True, "userunknown")
    assert no_email.rule == "resend.bounce_subtype.NoEmail"
    too_big = one(resend("email.bounced", bounce={"type": "Permanent", "subType": "MessageTooLarge",
                                                   "message": vague}))  # fmt: skip
    assert (too_big.hard, too_big.reason) == (False, "mesgtoobig")
    full = one(resend("email.bounced", bounce={"type": "Transient", "subType": "MailboxFull",
                                                "message": "550 5.1.1 user unknown"}))  # fmt: skip
    assert (full.hard, full.reason) == (False, None)  # the text is clear: the pipeline classifies it


def test_the_svix_signature_is_checked_on_the_raw_body(tmp_path: Path) -> None:
    """The signed body passes (any v1 entry may match); a changed body, id, key or format is refused."""
    verifier = SvixSignature(settings(tmp_path, SECRET), clock=Clock(NOW))
    body = json.dumps(resend("email.delivered")).encode()
    verifier.verify(sign(body), body)
    rotated = sign(body)
    rotated["svix-signature"] = "v1,bm90IGl0 " + rotated["svix-signature"]  # old key's first
    verifier.verify(rotated, body)
    std = {k.replace("svix-", "webhook-"): v for k, v in sign(body).items()}
    verifier.verify(std, body)  # the Standard Webhooks header names
    for headers, payload in [(sign(body), body.replace(b"someone", b"someone-else")),
                             ({**sign(body), "svix-id": "msg_other"}, body),
                             (sign(body, key=os.urandom(24)), body),
                             ({**sign(body), "svix-signature": sign(body)["svix-signature"][3:]}, body)]:  # fmt: skip
        with pytest.raises(Refused) as refused:
            verifier.verify(headers, payload)
        assert (refused.value.reason, refused.value.status) == ("bad_signature", 403)
    with pytest.raises(Refused) as missing:
        verifier.verify({"svix-id": "msg_2p5"}, body)
    assert (missing.value.reason, missing.value.status) == ("bad_signature", 401)
    with pytest.raises(ConfigError, match=r"webhooks\.resend"):
        SvixSignature(settings(tmp_path, "whsec_not base64!"))


def test_timestamps_outside_five_minutes_are_stale(tmp_path: Path) -> None:
    """A signature older or further ahead than tolerance_seconds (300) is refused as stale."""
    body = json.dumps(resend("email.opened")).encode()
    SvixSignature(settings(tmp_path, SECRET), clock=Clock(NOW + 300)).verify(sign(body), body)
    for now in (NOW + 301, NOW - 301):
        with pytest.raises(Refused) as refused:
            SvixSignature(settings(tmp_path, SECRET), clock=Clock(now)).verify(sign(body), body)
        assert (refused.value.reason, refused.value.status) == ("stale", 403)


def test_signed_posts_are_stored_once_and_refusals_counted(tmp_path: Path) -> None:
    """Over HTTP: a signed bounce is stored and classified, its redelivery is a duplicate, a tampered
    or stale one stores nothing and is counted by reason."""
    config = Config(webhooks={"resend": settings(tmp_path, SECRET)})
    body = json.dumps(resend("email.bounced", to=["b@example.org"], bounce={
        "type": "Permanent", "subType": "General",
        "message": "smtp; 550 5.1.1 <b@example.org>: Recipient address rejected: User unknown"})).encode()  # fmt: skip
    now = int(time.time())
    with served(tmp_path, config) as app:
        tampered = app.post("resend", body.replace(b"b@example", b"c@example"), sign(body, stamp=now))
        assert (tampered.status_code, tampered.json()) == (403, {"error": "bad_signature"})
        stale = app.post("resend", body, sign(body, stamp=now - 3600))
        assert (stale.status_code, stale.json()) == (403, {"error": "stale"})
        assert app.store.count("events") == 0
        ok = app.post("resend", body, sign(body, stamp=now))
        assert (ok.status_code, ok.json()["events"]) == (200, 1)
        again = app.post("resend", body, sign(body, ident="msg_retry", stamp=now + 1))
        assert again.status_code == 200
        assert app.store.count("events") == 1
        [bounce] = app.store.trace("b@example.org")
        assert bounce["delivery"]["state"] == "bounced"
        assert (bounce["events"][0].reason, bounce["events"][0].hard) == ("userunknown", True)
        assert app.value("mailmon_events_rejected_total", source="resend", reason="bad_signature") == 1
        assert app.value("mailmon_events_rejected_total", source="resend", reason="stale") == 1
        assert app.value("mailmon_events_duplicate_total", source="resend") == 1


def test_unknown_event_types_are_not_understood_and_others_ignored() -> None:
    """A type Resend may add later is counted as not understood; domain and contact events change nothing."""
    with pytest.raises(NotUnderstood):
        ResendEvents().feed(resend("email.teleported"))
    assert ResendEvents().feed({"type": "domain.updated", "created_at": "2024-11-22T23:41:12Z",
                                "data": {}}) == []  # fmt: skip
