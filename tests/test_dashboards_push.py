"""``mailmon dashboards push`` and ``export`` against a Grafana HTTP API stand-in on 127.0.0.1.

No Grafana binary can be installed here, so :class:`FakeGrafana` answers the endpoints push
uses the way Grafana's HTTP API documents them (folders, dashboards by uid, ``POST
/api/dashboards/db``, bearer tokens, 401 without one) and records every request.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from grafana_boards import DASHBOARDS, load_all
from servers.prometheus import free_port

from monitor.cli import main

TOKEN = "glsa_s3cr3t-Token-9f8e7d"


class FakeGrafana:
    """Grafana's folder and dashboard API in memory, in a thread; keeps every request."""

    def __init__(self, token: str = TOKEN) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with fake.lock:
                    fake.requests.append((method, self.path, body))
                    if self.headers.get("Authorization") != f"Bearer {token}":
                        return self._answer(401, {"message": "Unauthorized"})
                    status, answer = fake.route(method, self.path, body)
                self._answer(status, answer)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.removeprefix("/api/folders/")
            if uid in self.folders:
                return 200, self.folders[uid]
            return 404, {"message": "folder not found", "status": "not-found"}
        if method == "POST" and path == "/api/folders":
            folder = {"id": len(self.folders) + 1, "uid": body["uid"], "title": body["title"]}
            self.folders[body["uid"]] = folder
            return 200, folder
        if method == "GET" and path.startswith("/api/dashboards/uid/"):
            uid = path.removeprefix("/api/dashboards/uid/")
            if uid not in self.dashboards:
                return 404, {"message": "Dashboard not found"}
            return 200, self.dashboards[uid]
        if method == "POST" and path == "/api/dashboards/db":
            board = dict(body["dashboard"])
            if body["folderUid"] not in self.folders:
                return 400, {"message": "folder not found"}
            old = self.dashboards.get(board["uid"])
            version = old["dashboard"]["version"] + 1 if old else 1
            board |= {"id": old["dashboard"]["id"] if old else len(self.dashboards) + 1,
                      "version": version}  # fmt: skip
            self.dashboards[board["uid"]] = {
                "dashboard": board, "meta": {"folderUid": body["folderUid"], "version": version},
            }  # fmt: skip
            return 200, {"id": board["id"], "uid": board["uid"], "status": "success",
                         "version": version, "url": f"/d/{board['uid']}"}  # fmt: skip
        return 404, {"message": "Not found"}

    def writes(self) -> list[tuple[str, str, Any]]:
        return [r for r in self.requests if r[0] == "POST"]


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAILMON_GRAFANA_TOKEN", "MAILMON_GRAFANA_TOKEN_FILE", "MAILMON_DASHBOARDS_DIR"):
        monkeypatch.delenv(name, raising=False)


def _push(url: str, *extra: str) -> int:
    return main(["-v", "dashboards", "push", "--url", url, "--json", *extra])


def _no_token_in(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    out, err = capsys.readouterr()
    for text in (out, err, caplog.text):
        assert TOKEN not in text
    return out + err


def test_push_creates_the_folder_and_every_dashboard(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A first push creates the Mailmon folder and each dashboard in it, content unchanged."""
    caplog.set_level(logging.DEBUG)
    assert _push(grafana.url, "--token", TOKEN) == 0
    results = json.loads(capsys.readouterr().out)
    boards = load_all()
    assert sorted(r["uid"] for r in results) == sorted(b["uid"] for b in boards.values())
    assert {r["action"] for r in results} == {"created"}
    assert grafana.folders == {"mailmon": {"id": 1, "uid": "mailmon", "title": "Mailmon"}}
    posts = [body for method, path, body in grafana.writes() if path == "/api/dashboards/db"]
    assert len(posts) == len(boards)
    for body in posts:
        assert body["folderUid"] == "mailmon" and body["overwrite"] is True
        assert body["dashboard"]["id"] is None
        ours = boards[f"{body['dashboard']['uid']}.json"]
        assert {k: v for k, v in body["dashboard"].items() if k != "id"} == ours
    assert TOKEN not in caplog.text


def test_second_push_changes_nothing_and_an_edit_is_overwritten(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pushing twice writes nothing the second time; a dashboard edited in Grafana is put back."""
    assert _push(grafana.url, "--token", TOKEN) == 0
    capsys.readouterr()
    writes = len(grafana.writes())
    assert _push(grafana.url, "--token", TOKEN) == 0
    assert {r["action"] for r in json.loads(capsys.readouterr().out)} == {"unchanged"}
    assert len(grafana.writes()) == writes
    grafana.dashboards["mailmon-overview"]["dashboard"]["title"] = "edited by hand"
    assert _push(grafana.url, "--token", TOKEN) == 0
    actions = {r["uid"]: r["action"] for r in json.loads(capsys.readouterr().out)}
    assert actions.pop("mailmon-overview") == "updated"
    assert set(actions.values()) == {"unchanged"}
    assert grafana.dashboards["mailmon-overview"]["dashboard"]["title"] == "Mailmon / Overview"
    assert grafana.dashboards["mailmon-overview"]["dashboard"]["version"] == 2


def test_token_from_environment_and_from_file(
    grafana: FakeGrafana, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The token is read from MAILMON_GRAFANA_TOKEN or a file (newline stripped), never shown."""
    monkeypatch.setenv("MAILMON_GRAFANA_TOKEN", TOKEN)
    assert _push(grafana.url) == 0
    _no_token_in(capsys, caplog)
    monkeypatch.delenv("MAILMON_GRAFANA_TOKEN")
    secret = tmp_path / "grafana_token"
    secret.write_text(TOKEN + "\n")
    assert main(["dashboards", "push", "--url", grafana.url, "--token-file", str(secret)]) == 0
    out = _no_token_in(capsys, caplog)
    assert "unchanged" in out and "mailmon-overview" in out


def test_wrong_token_is_a_clear_401_error(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A refused token gives exit code 2 and one line naming the 401, without the token."""
    wrong = "glsa_wrong-" + TOKEN[::-1]
    assert _push(grafana.url, "--token", wrong) == 2
    out, err = capsys.readouterr()
    assert "401" in err and grafana.url in err and out == ""
    assert wrong not in err + caplog.text and TOKEN not in err
    assert grafana.writes() == []


def test_unreachable_and_malformed_urls_are_clear_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listening, or a URL that is not http(s)://host, gives one clear line."""
    url = f"http://127.0.0.1:{free_port()}"
    assert _push(url, "--token", TOKEN, "--timeout", "2") == 2
    err = capsys.readouterr().err
    assert f"cannot reach Grafana at {url}: Connection refused" in err and TOKEN not in err
    for bad in ("grafana:3000", "ftp://grafana", "http://"):
        assert _push(bad, "--token", TOKEN) == 2
        assert "expected http(s)://HOST" in capsys.readouterr().err


def test_a_server_that_is_not_grafana_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A web server answering HTML (a wrong port, a login page) is named as not Grafana."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert _push(url, "--token", TOKEN) == 2
        assert "does not answer like Grafana's HTTP API" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()


def test_user_info_in_the_url_is_never_printed(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    """A password in the URL's user info does not reach the error message."""
    url = grafana.url.replace("http://", "http://admin:hunter2@")
    assert _push(url, "--token", "glsa_wrong") == 2
    assert "hunter2" not in capsys.readouterr().err


def test_missing_token_is_a_config_error(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without any token source push stops before any request."""
    assert _push(grafana.url) == 2
    assert "no Grafana API token" in capsys.readouterr().err
    assert grafana.requests == []


def test_export_writes_every_dashboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """export writes each dashboard as <uid>.json, byte for byte the bundled file."""
    target = tmp_path / "out"
    assert main(["dashboards", "export", str(target)]) == 0
    written = sorted(p.name for p in target.iterdir())
    assert written == sorted(load_all())
    for name in written:
        assert (target / name).read_bytes() == (DASHBOARDS / name).read_bytes()
    assert capsys.readouterr().out.split() == [str(target / n) for n in written]


@pytest.mark.parametrize("status", [502, 422])
def test_an_error_answer_is_shown_by_status_never_by_its_body(
    status: int, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy in front of Grafana answering an error whose body echoes the request's headers:
    the message names the status, and neither the token nor the body is printed or logged."""
    caplog.set_level(logging.DEBUG)

    class EchoingProxy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            echoed = json.dumps({"message": f"upstream failed for {dict(self.headers)}"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(echoed)))
            self.end_headers()
            self.wfile.write(echoed)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingProxy)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert _push(url, "--token", TOKEN) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = _no_token_in(capsys, caplog)
    assert f"Grafana at {url} answered {status} " in err
    assert "upstream failed" not in err + caplog.text
