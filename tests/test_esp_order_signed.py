"""SendGrid, Postmark and SES over HTTP: events arriving out of order leave the delivery as if
they came in order, a truncated body stores nothing, an oversized one is refused unread."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from esp_http import served
from esp_payloads import WEBHOOKS, Fetcher, self_signed, settings

from monitor.collectors.esp import base
from monitor.collectors.esp.base import Webhook, register_webhook
from monitor.collectors.esp.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from monitor.collectors.esp.ses import SesEvents
from monitor.collectors.esp.sns import SnsSignature, canonical
from monitor.collectors.jsonbody import split_records
from monitor.config import Config, ServiceConfig, WebhookSettings

RCPT = "reader@example.com"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"
T0 = int(time.time()) - 3600  # the message was sent an hour ago
STEPS = ("submitted", "delivered", "opened")
PASSWORD = "pw-" + os.urandom(6).hex()
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

Request = tuple[bytes, dict[str, str]]


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _sendgrid_headers(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    signature = EC_KEY.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: stamp}


def sendgrid(step: str, n: int) -> Request:
    name = {"submitted": "processed", "delivered": "delivered", "opened": "open"}[step]
    record = {"event": name, "email": RCPT, "timestamp": T0 + 60 * n, "smtp-id": "<m1@example.net>",
              "sg_event_id": f"e{n}", "sg_message_id": "x1.filter1.0"}  # fmt: skip
    body = json.dumps([record]).encode()
    return body, _sendgrid_headers(body)


def postmark(step: str, n: int) -> Request:
    if step == "submitted":  # Postmark has no submission webhook: a transient bounce stands in
        record = {"RecordType": "Bounce", "Type": "Transient", "Email": RCPT, "BouncedAt": _iso(T0),
                  "MessageID": "pm-1", "ID": 7}  # fmt: skip
    else:
        kind, field = ("Delivery", "DeliveredAt") if step == "delivered" else ("Open", "ReceivedAt")
        record = {"RecordType": kind, "Recipient": RCPT, field: _iso(T0 + 60 * n), "MessageID": "pm-1"}
    pair = base64.b64encode(f"postmark:{PASSWORD}".encode()).decode()
    return json.dumps(record).encode(), {"Authorization": f"Basic {pair}"}


def ses(step: str, n: int) -> Request:
    name = {"submitted": "Send", "delivered": "Delivery", "opened": "Open"}[step]
    data = json.loads((WEBHOOKS / f"ses_event_{name}.json").read_text())
    data["mail"] |= {"timestamp": _iso(T0), "destination": [RCPT],
                     "headers": [{"name": "Message-ID", "value": "<m1@example.net>"}]}  # fmt: skip
    if step != "submitted":
        data[name.lower()] |= {"timestamp": _iso(T0 + 60 * n), "recipients": [RCPT]}
    envelope = {"Type": "Notification", "MessageId": f"sns-{n}", "TopicArn": TOPIC,
                "Message": json.dumps(data), "Timestamp": _iso(int(time.time())),
                "SignatureVersion": "2", "SigningCertURL": CERT_URL}  # fmt: skip
    signature = RSA_KEY.sign(canonical(envelope), padding.PKCS1v15(), hashes.SHA256())
    envelope["Signature"] = base64.b64encode(signature).decode()
    return json.dumps(envelope).encode(), {"x-amz-sns-message-type": "Notification"}


PROVIDERS: dict[str, Callable[[str, int], Request]] = {"postmark": postmark, "sendgrid": sendgrid,
                                                       "ses": ses}  # fmt: skip


@pytest.fixture(autouse=True)
def _ses_certificate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SES's verifier fetches its certificate from this test instead of over HTTPS."""
    monkeypatch.setattr(base, "_WEBHOOKS", dict(base._WEBHOOKS))
    fetch = Fetcher({CERT_URL: self_signed(RSA_KEY, datetime.now(UTC))})
    register_webhook(Webhook("ses", SesEvents, split_records, secret=False,
                             verifier=lambda s: SnsSignature(s, fetch=fetch)))  # fmt: skip
    yield


def _config(tmp_path: Path, name: str, max_body_bytes: int = 1 << 20) -> Config:
    der = EC_KEY.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    hook = {  # each writes its secret to the same file: only the one asked for is made
        "sendgrid": lambda: settings(tmp_path, base64.b64encode(der).decode()),
        "postmark": lambda: settings(tmp_path, PASSWORD, username="postmark"),
        "ses": lambda: WebhookSettings(topic_arns=(TOPIC,)),
    }[name]()
    return Config(webhooks={name: hook}, service=ServiceConfig(max_body_bytes=max_body_bytes))


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_events_out_of_order_end_as_in_order(tmp_path: Path, name: str) -> None:
    """Opened, then delivered, then the first event: the delivery is delivered, every milestone kept."""
    make = PROVIDERS[name]
    with served(tmp_path, _config(tmp_path, name)) as app:
        for n, step in reversed(list(enumerate(STEPS))):
            answer = app.post(name, *make(step, n))
            assert (answer.status_code, answer.json()["events"]) == (200, 1), answer.text
        [found] = app.store.trace(RCPT)
    delivery = found["delivery"]
    assert delivery["state"] == "delivered"
    assert (delivery["final_at"], delivery["last_event_at"]) == (T0 + 60, T0 + 120)
    first = "deferred" if name == "postmark" else "submitted"
    assert [e.type.value for e in found["events"]] == [first, "delivered", "opened"]


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_truncated_and_oversized_bodies_store_nothing(tmp_path: Path, name: str) -> None:
    """A body cut short is refused (400; 401 for SES, whose signature is inside the body), one
    over the size limit gets 413; neither stores anything."""
    body, headers = PROVIDERS[name]("delivered", 1)
    (tmp_path / "big").mkdir()
    with served(tmp_path / "big", _config(tmp_path, name, max_body_bytes=1024)) as app:
        assert app.post(name, body + b" " * 4096, headers).status_code == 413
        assert app.store.count("events") == 0
    with served(tmp_path, _config(tmp_path, name)) as app:
        cut = body[: len(body) // 2]
        if name == "sendgrid":  # signed as sent: the signature holds, the JSON does not
            headers = _sendgrid_headers(cut)
        answer = app.post(name, cut, headers)
        assert answer.status_code == (401 if name == "ses" else 400), answer.text
        assert app.store.count("events") == 0
