"""Brevo, Mailgun, Resend and SparkPost over HTTP: events arriving out of order leave the delivery
as if they came in order, a truncated body stores nothing, an oversized one is refused unread."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from esp_http import served
from esp_payloads import settings

from monitor.config import Config, ServiceConfig

SECRET = "t0ken-" + os.urandom(6).hex()
SVIX_KEY = os.urandom(24)
RCPT = "reader@example.com"
T0 = int(time.time()) - 3600  # the message was sent an hour ago
#: Mailmon's events, in the order they happened: submitted, delivered, opened.
STEPS = ("submitted", "delivered", "opened")

Request = tuple[bytes, dict[str, str]]


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET}"}


def _svix(body: bytes, ident: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    mac = hmac.new(SVIX_KEY, f"{ident}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"svix-id": ident, "svix-timestamp": stamp,
            "svix-signature": "v1," + base64.b64encode(mac).decode()}  # fmt: skip


def brevo(step: str, n: int) -> Request:
    name = {"submitted": "request", "delivered": "delivered", "opened": "opened"}[step]
    record = {"event": name, "email": RCPT, "ts_event": T0 + 60 * n, "message-id": "<m1@example.net>"}
    return json.dumps(record).encode(), _bearer()


def mailgun(step: str, n: int) -> Request:
    name = {"submitted": "accepted", "delivered": "delivered", "opened": "opened"}[step]
    event = {"event": name, "timestamp": T0 + 60 * n, "recipient": RCPT, "id": f"ev{n}",
             "message": {"headers": {"message-id": "m1@example.net"}}}  # fmt: skip
    stamp, token = str(int(time.time())), os.urandom(25).hex()
    signature = hmac.new(SECRET.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    block = {"timestamp": stamp, "token": token, "signature": signature}
    return json.dumps({"signature": block, "event-data": event}).encode(), {}


def resend(step: str, n: int) -> Request:
    name = {"submitted": "email.sent", "delivered": "email.delivered", "opened": "email.opened"}[step]
    at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(T0 + 60 * n))
    body = json.dumps({"type": name, "created_at": at,
                       "data": {"email_id": "e-1", "to": [RCPT], "from": "a@example.net"}}).encode()  # fmt: skip
    return body, _svix(body, f"msg_{n}")


def sparkpost(step: str, n: int) -> Request:
    name = {"submitted": "injection", "delivered": "delivery", "opened": "open"}[step]
    group = "track_event" if step == "opened" else "message_event"
    event = {"type": name, "timestamp": str(T0 + 60 * n), "event_id": f"e{n}",
             "message_id": "0004e3724f57753a3561", "rcpt_to": RCPT}  # fmt: skip
    return json.dumps([{"msys": {group: event}}]).encode(), _bearer()


PROVIDERS: dict[str, Callable[[str, int], Request]] = {
    "brevo": brevo, "mailgun": mailgun, "resend": resend, "sparkpost": sparkpost,
}  # fmt: skip


def _config(tmp_path: Path, name: str, max_body_bytes: int = 1 << 20) -> Config:
    secret = "whsec_" + base64.b64encode(SVIX_KEY).decode() if name == "resend" else SECRET
    return Config(webhooks={name: settings(tmp_path, secret)},
                  service=ServiceConfig(max_body_bytes=max_body_bytes))  # fmt: skip


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_events_out_of_order_end_as_in_order(tmp_path: Path, name: str) -> None:
    """Opened, then delivered, then submitted: the delivery is delivered, with every milestone."""
    make = PROVIDERS[name]
    with served(tmp_path, _config(tmp_path, name)) as app:
        for n, step in reversed(list(enumerate(STEPS))):
            answer = app.post(name, *make(step, n))
            assert (answer.status_code, answer.json()["events"]) == (200, 1), answer.text
        [found] = app.store.trace(RCPT)
    delivery = found["delivery"]
    assert delivery["state"] == "delivered"
    assert (delivery["submitted_at"], delivery["final_at"], delivery["last_event_at"]) == (
        T0, T0 + 60, T0 + 120)
    assert [e.type.value for e in found["events"]] == list(STEPS)


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_truncated_and_oversized_bodies_store_nothing(tmp_path: Path, name: str) -> None:
    """A body cut short is refused (400; 401 for Mailgun, whose signature is inside the body), one
    over the size limit gets 413; neither stores anything."""
    body, headers = PROVIDERS[name]("delivered", 1)
    (tmp_path / "big").mkdir()
    with served(tmp_path / "big", _config(tmp_path, name, max_body_bytes=1024)) as app:
        assert app.post(name, body + b" " * 1024, headers).status_code == 413
        assert app.store.count("events") == 0
    with served(tmp_path, _config(tmp_path, name)) as app:
        cut = body[: len(body) // 2]
        if name == "resend":  # signed as sent: the signature holds, the JSON does not
            headers = _svix(cut, headers["svix-id"])
        answer = app.post(name, cut, headers)
        assert answer.status_code == (401 if name == "mailgun" else 400), answer.text
        assert app.store.count("events") == 0
