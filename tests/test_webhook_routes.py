"""ESP webhooks are wired as every source is: POST /webhooks/NAME and `mailmon ingest NAME FILE`.

A provider written in the test (an HMAC over the raw body) stands for the real ones: what is
tested here is the route (refused requests count and store nothing, duplicates reach /metrics,
configuration errors name the key) and the CLI, not a provider's mapping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.collectors.esp import base
from monitor.collectors.esp.base import EspSource, Refused, Webhook, register_webhook
from monitor.collectors.jsonbody import split_records
from monitor.config import Config, WebhookSettings
from monitor.errors import ConfigError
from monitor.metrics import Metrics
from monitor.model import Event, EventType
from monitor.pipeline import Pipeline
from monitor.service.app import create_app
from monitor.service.webhooks import webhook_endpoints
from monitor.store import Store

SECRET = "s3cret"


class Events(EspSource):
    kind = "testesp"

    def events(self, record: Mapping[str, Any], ref: str | None) -> list[Event]:
        kind = {"delivered": EventType.DELIVERED, "bounce": EventType.BOUNCED}[record["event"]]
        return [Event(type=kind, source="testesp", recipient=record["email"], raw_ref=ref,
                      occurred_at=datetime.fromtimestamp(record["ts"], UTC),
                      diagnostic=record.get("reason"))]


class Signature:
    def __init__(self, settings: WebhookSettings) -> None:
        self.key = (settings.secret("testesp") or "").encode()

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        given = headers.get("x-signature", "")
        if not hmac.compare_digest(given, hmac.new(self.key, body, hashlib.sha256).hexdigest()):
            raise Refused("bad_signature")


@pytest.fixture(autouse=True)
def _provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(base, "_WEBHOOKS", dict(base._WEBHOOKS))  # this test's only
    register_webhook(Webhook("testesp", Events, split_records, Signature))
    monkeypatch.setenv("TESTESP_KEY", SECRET)
    yield


BODY = json.dumps([
    {"event": "delivered", "email": "a@example.com", "ts": 1764000000},
    {"event": "bounce", "email": "b@example.org", "ts": 1764000060, "reason": "550 5.1.1 no such user"},
    {"event": "exploded", "email": "c@example.org", "ts": 1764000120},
]).encode()


def signed(body: bytes) -> dict[str, str]:
    return {"X-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}


def test_signed_posts_are_stored_and_tampered_ones_refused(tmp_path: Path) -> None:
    config = Config(webhooks={"testesp": WebhookSettings(secret_env="TESTESP_KEY")})
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        pipeline = Pipeline(store, metrics=metrics)
        app = create_app(metrics, endpoints=webhook_endpoints(config, pipeline, metrics))

        async def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
                return await c.post("/webhooks/testesp", content=body, headers=headers)

        tampered = BODY.replace(b"a@example.com", b"x@example.com")
        refused = asyncio.run(post(tampered, signed(BODY)))
        assert (refused.status_code, refused.json()) == (401, {"error": "bad_signature"})
        assert store.count("events") == 0
        ok = asyncio.run(post(BODY, signed(BODY)))
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"records": 3, "events": 2, "rejected": 1,
                             "problems": {"not a testesp event": 1}}
        assert asyncio.run(post(BODY, signed(BODY))).status_code == 200  # delivered again
        assert store.count("events") == 2
        [bounce] = store.trace("b@example.org")
        assert bounce["delivery"]["state"] == "bounced"
    value = metrics.registry.get_sample_value
    assert value("mailmon_events_rejected_total", {"source": "testesp", "reason": "bad_signature"}) == 1
    assert value("mailmon_events_ingested_total", {"source": "testesp"}) == 2
    assert value("mailmon_events_duplicate_total", {"source": "testesp"}) == 2
    assert value("mailmon_bounces_total", {"provider": "other", "domain": "other",
                                           "reason": "userunknown", "hard": "true"}) == 1


def test_configuration_mistakes_name_the_key(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics, pipeline = Metrics(CollectorRegistry()), Pipeline(store)
        with pytest.raises(ConfigError, match=r"webhooks\.nosuch: no such provider; known: .*testesp"):
            webhook_endpoints(Config(webhooks={"nosuch": WebhookSettings()}), pipeline, metrics)
        with pytest.raises(ConfigError, match=r"webhooks\.testesp: set secret_env or secret_file"):
            webhook_endpoints(Config(webhooks={"testesp": WebhookSettings()}), pipeline, metrics)
        off = Config(webhooks={"testesp": WebhookSettings(enabled=False)})
        assert webhook_endpoints(off, pipeline, metrics) == []


def test_exported_payloads_are_ingested_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "events.json"
    export.write_bytes(BODY)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["ingest", "testesp", str(export), "--db", db, "--json"]) == 1  # one not understood
    summary = json.loads(capsys.readouterr().out)
    assert (summary["records"], summary["events"], summary["stored"]) == (3, 2, 2)
    assert summary["not_understood"] == {"not a testesp event": 1}
    assert main(["ingest", "testesp", str(export), "--db", db, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["duplicates"] == 2


def test_a_refused_request_is_logged_once_a_minute_without_its_body(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three forged posts: each 401 and counted, one log line naming the reason, and
    nothing of the payload in it."""
    config = Config(webhooks={"testesp": WebhookSettings(secret_env="TESTESP_KEY")})
    caplog.set_level(logging.WARNING, "monitor.service.hook")
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        pipeline = Pipeline(store, metrics=metrics)
        app = create_app(metrics, endpoints=webhook_endpoints(config, pipeline, metrics))

        async def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
                return await c.post("/webhooks/testesp", content=body, headers=headers)

        tampered = BODY.replace(b"a@example.com", b"x@example.com")
        for _ in range(3):
            assert asyncio.run(post(tampered, signed(BODY))).status_code == 401
        assert store.count("events") == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "monitor.service.hook"]
    assert len(lines) == 1 and "bad_signature" in lines[0], lines
    assert not any(part in lines[0] for part in ("x@example.com", "exploded", "550 5.1.1"))
    assert metrics.registry.get_sample_value(
        "mailmon_events_rejected_total", {"source": "testesp", "reason": "bad_signature"}) == 3


def test_a_killed_writer_process_fails_its_requests_until_the_next_one_starts(
    tmp_path: Path,
) -> None:
    """serve writes webhook batches through a writer process: killed, the request in flight
    gets 503 (the sender retries) and stores nothing; the next request starts a new one."""
    config = Config(webhooks={"testesp": WebhookSettings(secret_env="TESTESP_KEY")})
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        pipeline = Pipeline(store, metrics=metrics, writer_process=True)
        pipeline.start_writer()
        app = create_app(metrics, endpoints=webhook_endpoints(config, pipeline, metrics))

        async def post(body: bytes) -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
                return await c.post("/webhooks/testesp", content=body, headers=signed(body))

        try:
            assert asyncio.run(post(BODY)).status_code == 200
            first = pipeline._process.pid if pipeline._process else None
            assert first is not None and store.count("events") == 2
            os.kill(first, signal.SIGKILL)
            later = BODY.replace(b"1764000060", b"1764000061")
            failed = asyncio.run(post(later))
            assert (failed.status_code, failed.json()) == (503, {"error": "storing failed; retry later"})
            assert store.count("events") == 2
            assert asyncio.run(post(later)).status_code == 200  # the sender's retry
            assert pipeline._process is not None and pipeline._process.pid not in (None, first)
            assert store.count("events") == 3
        finally:
            pipeline.close()
    value = metrics.registry.get_sample_value
    assert value("mailmon_events_ingested_total", {"source": "testesp"}) == 3
