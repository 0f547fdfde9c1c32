"""The read API over a real socket: timelines, rollups per window, incidents, auth, /readyz."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from api_fixture import AT, SLASHED, TOKEN, fill
from prometheus_client import CollectorRegistry

from monitor.config import API_TOKEN_ENV, api_token, load_config
from monitor.errors import ConfigError
from monitor.metrics import Metrics
from monitor.service.app import create_app
from monitor.store import Store

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = tmp_path_factory.mktemp("api") / "m.db"
    with Store.open(f"sqlite:///{path}") as s:
        fill(s)
        yield s


def _serve(app: Any) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def url(store: Store) -> Iterator[str]:
    yield from _serve(create_app(Metrics(CollectorRegistry()), store=store, api_token=TOKEN))


def _get(url: str, path: str, headers: Mapping[str, str] = AUTH, **params: Any) -> httpx.Response:
    return httpx.get(url + path, params=params, headers=dict(headers), timeout=5)


def test_a_message_is_its_deliveries_each_with_its_timeline(url: str) -> None:
    """GET /api/messages/ID answers the message's two deliveries, each with its events in order."""
    body = _get(url, "/api/messages/abc123@app.example").json()
    assert body["message_id"] == "abc123@app.example"
    by_recipient = {d["recipient"]: d for d in body["deliveries"]}
    assert sorted(by_recipient) == ["alice@gmail.com", "bob@gmail.com"]
    bob = by_recipient["bob@gmail.com"]
    assert bob["state"] == "delivered" and bob["attempts"] == 2 and bob["deferrals"] == 1
    assert [e["type"] for e in bob["timeline"]] == ["submitted", "deferred", "delivered"]
    assert bob["timeline"][1]["enhanced_status"] == "4.7.28"
    assert bob["timeline"][0]["occurred_at"] == "2026-03-04T10:00:00Z"
    assert bob["final_at"] == "2026-03-04T10:06:00+00:00"
    # In angle brackets, by queue id, and one holding a slash: the same lookup.
    assert _get(url, "/api/messages/<abc123@app.example>").json()["deliveries"] == body["deliveries"]
    assert [d["message_id"] for d in _get(url, "/api/messages/5C2D3E4F5A").json()["deliveries"]] \
        == ["m2@app.example"]
    slashed = _get(url, "/api/messages/" + quote(SLASHED, safe="")).json()
    assert [d["recipient"] for d in slashed["deliveries"]] == ["alice@gmail.com"]


def test_an_unknown_message_is_404_and_an_address_is_not_a_message_id(url: str) -> None:
    """A Message-ID nothing matches answers 404; a recipient's address is not looked up as one."""
    missing = _get(url, "/api/messages/nobody@nowhere.example")
    assert missing.status_code == 404 and missing.json() == {"error": "no such message"}
    assert _get(url, "/api/messages/alice@gmail.com").status_code == 404


def test_a_recipients_deliveries_oldest_first_bounded_by_limit(url: str) -> None:
    """GET /api/messages?recipient= answers that recipient's deliveries, oldest first, at most
    ``limit``; no recipient, a bad limit or a NUL is 400."""
    body = _get(url, "/api/messages", recipient="alice@gmail.com").json()
    assert body["recipient"] == "alice@gmail.com"
    assert [d["message_id"] for d in body["deliveries"]] == [SLASHED, "abc123@app.example"]
    one = _get(url, "/api/messages", recipient="alice@gmail.com", limit=1).json()
    assert [d["message_id"] for d in one["deliveries"]] == [SLASHED]
    assert _get(url, "/api/messages", recipient="zed@gmail.com").json()["deliveries"] == []
    for params in ({}, {"recipient": ""}, {"recipient": "a@b", "limit": 0},
                   {"recipient": "a@b", "limit": "1_0"}, {"recipient": "a\x00@b"}):
        answer = _get(url, "/api/messages", **params)
        assert answer.status_code == 400 and "error" in answer.json(), params


def test_domains_count_each_window_from_the_counters(url: str) -> None:
    """GET /api/domains at AT (minute 10): Gmail's delivery at minute 6 in 5 minutes, 2 delivered
    and 1 deferral in 15 minutes (the older delivery only in 24 h), Outlook's bounce in 5
    minutes, Gmail's open incident beside it."""
    body = _get(url, "/api/domains", at=AT).json()
    assert body["windows"] == {"5m": 300, "15m": 900, "1h": 3600, "24h": 86400}
    assert [i["domain"] for i in body["items"]] == ["gmail.com", "outlook.com"]
    gmail, outlook = body["items"]
    assert (gmail["windows"]["5m"]["delivered"], gmail["windows"]["5m"]["deferred"]) == (1, 0)
    assert (gmail["windows"]["15m"]["delivered"], gmail["windows"]["15m"]["deferred"]) == (2, 1)
    assert gmail["windows"]["24h"]["delivered"] == 3
    assert gmail["windows"]["24h"]["delivery_rate"] == 1.0
    assert outlook["windows"]["5m"]["bounced"] == 1
    assert outlook["windows"]["5m"]["bounce_rate"] == 1.0
    assert [i["kind"] for i in gmail["open_incidents"]] == ["domain_rejecting"]
    assert outlook["open_incidents"] == []  # its incident is closed
    top = _get(url, "/api/domains", at=AT, limit=1).json()
    assert [i["domain"] for i in top["items"]] == ["gmail.com"]
    # A day later every window is empty: nothing to list.
    assert _get(url, "/api/domains", at=AT + 2 * 86400).json()["items"] == []
    for params in ({"limit": 501}, {"at": "yesterday"}, {"at": "inf"}, {"at": 1e13}):
        assert _get(url, "/api/domains", **params).status_code == 400, params


def test_providers_group_by_provider(url: str) -> None:
    """GET /api/providers answers the same counts grouped by mailbox provider."""
    body = _get(url, "/api/providers", at=AT).json()
    assert [(i["provider"], i["windows"]["24h"]["delivered"]) for i in body["items"]] == [
        ("google", 3), ("microsoft", 0)
    ]
    assert [i["domain"] for i in body["items"][0]["open_incidents"]] == ["gmail.com"]


def test_incidents_filter_and_validate(url: str) -> None:
    """GET /api/incidents lists both incidents, ?open=1 the open one; bad values are 400."""
    everything = _get(url, "/api/incidents").json()
    assert [(i["domain"], i["ended_at"] is None) for i in everything] == [
        ("gmail.com", True), ("outlook.com", False)
    ]
    assert [i["domain"] for i in _get(url, "/api/incidents", open=1).json()] == ["gmail.com"]
    assert _get(url, "/api/incidents", limit=1).json() == everything[:1]
    for params in ({"open": "maybe"}, {"since": "yesterday"}, {"limit": 0}):
        assert _get(url, "/api/incidents", **params).status_code == 400, params


@pytest.mark.parametrize("path", ["/api/messages/abc123@app.example", "/api/domains",
                                  "/api/providers", "/api/incidents",
                                  "/api/messages?recipient=alice@gmail.com"])  # fmt: skip
def test_every_api_endpoint_asks_for_the_token(url: str, path: str) -> None:
    """No token or another: 401 with a Bearer challenge; nothing of the store is said."""
    missing = httpx.get(url + path, timeout=5)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="mailmon"'
    wrong = httpx.get(url + path, headers={"Authorization": f"Bearer {TOKEN}x"}, timeout=5)
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="mailmon", error="invalid_token"'
    basic = httpx.get(url + path, headers={"Authorization": f"Basic {TOKEN}"}, timeout=5)
    assert basic.status_code == 401
    assert "gmail" not in missing.text + wrong.text + basic.text
    assert httpx.get(url + path, headers=AUTH, timeout=5).status_code == 200


def test_spec_health_and_metrics_are_open(url: str) -> None:
    """/openapi.json, /healthz, /readyz and (by default) /metrics need no token."""
    spec = httpx.get(url + "/openapi.json", timeout=5).json()
    assert spec["openapi"].startswith("3.0")
    assert "threads across messages" in spec["info"]["description"]
    assert set(spec["paths"]) >= {"/api/messages/{message_id}", "/api/messages", "/api/domains",
                                  "/api/providers", "/api/incidents", "/healthz", "/readyz"}
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(url + path, timeout=5).status_code == 200, path


def _asgi_get(app: Any, path: str, client: tuple[str, int],
              headers: Mapping[str, str] | None = None) -> httpx.Response:  # fmt: skip
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
            return await c.get(path, headers=dict(headers or {}))

    return asyncio.run(get())


def test_without_a_token_the_api_answers_loopback_only(store: Store) -> None:
    """No token configured: a loopback client is answered, any other gets 403."""
    app = create_app(Metrics(CollectorRegistry()), store=store)
    assert _asgi_get(app, "/api/incidents", ("127.0.0.1", 5000)).status_code == 200
    assert _asgi_get(app, "/api/incidents", ("::1", 5000)).status_code == 200
    far = _asgi_get(app, "/api/incidents", ("192.0.2.7", 5000))
    assert far.status_code == 403 and "loopback" in far.json()["error"]
    assert _asgi_get(app, "/metrics", ("192.0.2.7", 5000)).status_code == 200


def test_protect_metrics_puts_metrics_behind_the_token(store: Store) -> None:
    """With protect_metrics, /metrics answers 401 without the API token and 200 with it."""
    app = create_app(Metrics(CollectorRegistry()), store=store, api_token=TOKEN,
                     protect_metrics=True)  # fmt: skip
    client = ("192.0.2.7", 5000)
    assert _asgi_get(app, "/metrics", client).status_code == 401
    assert _asgi_get(app, "/metrics", client, AUTH).status_code == 200
    assert _asgi_get(app, "/healthz", client).status_code == 200


def test_readyz_needs_the_store_and_no_failing_part(store: Store, tmp_path: Path) -> None:
    """/readyz: 200 with a store and nothing failing; 503 without a store, or when a followed
    log fails (which /healthz also reports), or when the database is gone."""
    client = ("127.0.0.1", 5000)
    ready = _asgi_get(create_app(Metrics(CollectorRegistry()), store=store), "/readyz", client)
    assert ready.status_code == 200 and ready.json()["store"] == {"status": "ok"}
    storeless = _asgi_get(create_app(Metrics(CollectorRegistry())), "/readyz", client)
    assert storeless.status_code == 503 and storeless.json()["failing"] == ["store"]
    assert _asgi_get(create_app(Metrics(CollectorRegistry())), "/healthz", client).status_code == 200

    def logs() -> dict[str, object]:
        return {"logs": {"/var/log/mail.log": {"status": "failing", "reason": "unreadable"}}}

    app = create_app(Metrics(CollectorRegistry()), store=store, health=logs)
    failing = _asgi_get(app, "/readyz", client)
    assert failing.status_code == 503 and failing.json()["failing"] == ["logs:/var/log/mail.log"]
    gone = Store.open(f"sqlite:///{tmp_path / 'gone.db'}")
    (tmp_path / "gone.db").unlink()
    (tmp_path / "gone.db").mkdir()  # a directory where the database was: it cannot open
    gone.engine.dispose()
    unreachable = _asgi_get(create_app(Metrics(CollectorRegistry()), store=gone), "/readyz", client)
    assert unreachable.status_code == 503 and unreachable.json()["failing"] == ["store"]
    answer = _asgi_get(create_app(Metrics(CollectorRegistry()), store=gone, api_token=TOKEN),
                       "/api/incidents", client, AUTH)  # fmt: skip
    assert answer.status_code == 503 and answer.json() == {"error": "database unavailable"}


def test_api_token_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAILMON_API_TOKEN wins over [api] token_file; an empty file is a config error."""
    token_file = tmp_path / "api-token"
    token_file.write_text(" from-file\n")
    config_file = tmp_path / "mailmon.toml"
    config_file.write_text(f'[api]\ntoken_file = "{token_file}"\nprotect_metrics = true\n')
    config = load_config(config_file)
    assert config.api.protect_metrics is True
    monkeypatch.delenv(API_TOKEN_ENV, raising=False)
    assert api_token(config) == "from-file"
    monkeypatch.setenv(API_TOKEN_ENV, "from-env")
    assert api_token(config) == "from-env"
    monkeypatch.delenv(API_TOKEN_ENV)
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match=r"api\.token_file .* is empty"):
        api_token(config)
    assert api_token(load_config(None)) is None
    config_file.write_text("[api]\ntoken = \"inline\"\n")
    with pytest.raises(ConfigError, match=r"api\.token"):
        load_config(config_file)
