"""A provider's rejection burst, arriving as signed SendGrid webhooks over HTTP, opens a
``domain_rejecting`` incident; ``mailmon stats --by stream`` groups the ESP traffic by its
SendGrid categories."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from esp_http import Served
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.collectors.esp.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from monitor.config import Config, ProvidersConfig, WebhookSettings
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.providers import resolver_for
from monitor.rollup.configured import engine_for
from monitor.rollup.incidents import list_incidents
from monitor.service.app import create_app
from monitor.service.webhooks import webhook_endpoints
from monitor.store import Store

REPUTATION = ("550 5.7.1 [192.0.2.10] Our system has detected that this message is likely "
              "suspicious due to the very low reputation of the sending domain. To best protect "
              "our users from spam, the message has been blocked. - gsmtp")  # fmt: skip
BAD, GOOD = "gmail.com", "outlook.com"


def _message(n: int, at: float, domain: str, category: str, *, blocked: bool = False) -> list[dict[str, Any]]:
    common = {"email": f"user{n}@{domain}", "smtp-id": f"<m{n}@app.example>",
              "sg_message_id": f"sg{n}.filter1.0", "category": [category]}  # fmt: skip
    processed = common | {"event": "processed", "timestamp": int(at) - 2, "sg_event_id": f"p{n}"}
    if not blocked:
        return [processed, common | {"event": "delivered", "timestamp": int(at), "sg_event_id": f"d{n}",
                                     "response": "250 2.0.0 OK 1700000000 a1si1 - gsmtp"}]
    kind = "blocked" if n % 2 else "bounce"  # SendGrid's two bounce types, both refusals
    return [processed, common | {"event": "bounce", "type": kind, "timestamp": int(at),
                                 "sg_event_id": f"b{n}", "status": "5.7.1", "reason": REPUTATION}]


def test_a_signed_rejection_burst_opens_domain_rejecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An hour of healthy traffic, then Gmail refusing 30 of 40 with 550 5.7.1 (low
    reputation) in the last 5 minutes while Outlook stays fine: the rollup engine opens
    domain_rejecting for gmail.com only; the events came in only through signed webhooks."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("SENDGRID_KEY", base64.b64encode(public).decode())
    config = Config(webhooks={"sendgrid": WebhookSettings(secret_env="SENDGRID_KEY")},
                    providers=ProvidersConfig(resolve_mx=False))
    at = (time.time() // 300) * 300  # the rollup evaluates at a 5-minute boundary
    events: list[dict[str, Any]] = []
    n = 0
    for domain in (BAD, GOOD):  # healthy: 60 each over the hour before the burst
        for i in range(60):
            n += 1
            events += _message(n, at - 3900 + i * 60, domain, "newsletter")
    for i in range(40):  # the last 5 minutes: Gmail refuses 30 of 40, Outlook takes all
        n += 1
        events += _message(n, at - 290 + i * 7, BAD, "receipts", blocked=i % 4 != 0)
        n += 1
        events += _message(n, at - 290 + i * 7, GOOD, "receipts")
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        # as serve builds it: the provider resolver of the config (its domain rules; no DNS)
        metrics = Metrics(CollectorRegistry())
        pipeline = Pipeline(store, resolver=resolver_for(config, store), metrics=metrics)
        app = Served(store, metrics, create_app(metrics, endpoints=webhook_endpoints(config, pipeline, metrics)))
        for start in range(0, len(events), 100):  # batches, as SendGrid posts them
            body = json.dumps(events[start:start + 100]).encode()
            stamp = str(int(time.time()))
            signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
            answer = app.post("sendgrid", body, {SIGNATURE_HEADER: base64.b64encode(signature).decode(),
                                                 TIMESTAMP_HEADER: stamp})
            assert answer.status_code == 200, answer.text
            assert answer.json()["rejected"] == 0
        assert app.store.count("events") == len(events)

        evaluation = engine_for(config, app.store).evaluate(at)
        opened = set(evaluation.incidents_opened)
        # the domain, its provider, and the category the burst was sent in (a stream)
        assert {(kind, subject) for kind, _, subject in opened} == {
            ("domain_rejecting", BAD), ("provider_rejecting", ""), ("stream_rejecting", "receipts")
        }, opened
        assert ("domain_rejecting", "google", BAD) in opened and ("provider_rejecting", "google", "") in opened
        with app.store.engine.connect() as conn:
            incident = next(r for r in list_incidents(conn) if r["kind"] == "domain_rejecting")
        assert (incident["provider"], incident["domain"]) == ("google", BAD)
        short = incident["evidence"]["windows"]["5m"]
        assert (short["attempts"], short["rejecting"], short["bounced"]) == (40, 30, 30)
        assert incident["evidence"]["top_reasons"][0]["reason"] == "badreputation"

        db = str(app.store.engine.url)
    assert main(["stats", "--by", "stream", "--db", db, "--since", "3h", "--json"]) == 0
    rows = {row["stream"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"newsletter", "receipts"}, rows
    assert (rows["newsletter"]["delivered"], rows["newsletter"]["bounced"]) == (120, 0)
    assert (rows["receipts"]["delivered"], rows["receipts"]["bounced"]) == (50, 30)
