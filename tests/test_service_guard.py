"""`mailmon serve` under bad input and attack, over real sockets: start-up errors, the hook's
token, body cap and per-record handling, slow clients, /healthz per source."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers.prometheus import free_port

RECORDS = (Path(__file__).parent / "data" / "kumomta" / "records.jsonl").read_text().splitlines()
TOKEN = "hook-t0ken-5e4f3a2b1c"
USERNAME = "kumomta"
TIMEOUT = 1.0  # request_timeout_seconds of the served fixture
CAP = 65536  # max_body_bytes of the served fixture
CONNECTIONS = 8  # max_connections of the served fixture


def _serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=(os.environ | (env or {})),
    )  # fmt: skip


def _refused(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a serve that should stop at once: (exit code, stdout, stderr); killed if it serves."""
    proc = _serve(args, env)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"serve did not stop: {out}{err}")
    return proc.returncode, out, err


def _wait_answer(proc: subprocess.Popen[str], url: str) -> None:
    """Until ``url`` answers at all (any status)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"serve did not answer: {proc.communicate()}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=15)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mailmon serve` with a hook token file (and a username for Basic auth), a 64 KiB body
    cap, a 1 s request deadline and at most 8 connections."""
    tmp = tmp_path_factory.mktemp("guard")
    (tmp / "token").write_text(TOKEN + "\n")
    port = free_port()
    (tmp / "mailmon.toml").write_text(
        f'[database]\nurl = "sqlite:///{tmp / "m.db"}"\n'
        f'[service]\nlisten_port = {port}\nhook_token_file = "{tmp / "token"}"\n'
        f'hook_username = "{USERNAME}"\n'
        f"max_body_bytes = {CAP}\nrequest_timeout_seconds = {TIMEOUT}\n"
        f"max_connections = {CONNECTIONS}\n"
    )
    proc = _serve(["--config", str(tmp / "mailmon.toml")])
    base = f"http://127.0.0.1:{port}"
    _wait_answer(proc, f"{base}/healthz")
    yield base
    _stop(proc)


def _metric(base: str, line_start: str) -> float | None:
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends)."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - start


# -- start-up ---------------------------------------------------------------------------


def test_port_in_use_is_one_error_line_and_a_failing_exit(tmp_path: Path) -> None:
    """serve on a port another socket holds exits non-zero with one line, never saying it serves."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = _refused(["--db", f"sqlite:///{tmp_path / 'm.db'}", "--port", str(port)])
    assert code == 2
    assert "serving" not in out
    assert err.splitlines() == [
        f"mailmon: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_impossible_port_is_one_error_line(tmp_path: Path) -> None:
    """--port 99999 is refused with one line naming it, no traceback, exit code 2."""
    code, out, err = _refused(["--db", f"sqlite:///{tmp_path / 'm.db'}", "--port", "99999"])
    assert code == 2 and "serving" not in out
    assert err.splitlines() == ["mailmon: error: port 99999: expected a number from 0 to 65535"]


def test_an_open_hook_is_never_served_beyond_loopback(tmp_path: Path) -> None:
    """Listening on every interface without a hook token is refused; with MAILMON_HOOK_TOKEN it
    serves, and the hook then asks for the token."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    port = free_port()
    code, out, err = _refused(["--db", db, "--host", "0.0.0.0", "--port", str(port)],
                              env={"MAILMON_HOOK_TOKEN": ""})  # fmt: skip
    assert code == 2 and "serving" not in out
    assert len(err.splitlines()) == 1 and "needs a token for the log hook" in err
    proc = _serve(["--db", db, "--host", "0.0.0.0", "--port", str(port)],
                  env={"MAILMON_HOOK_TOKEN": TOKEN})  # fmt: skip
    try:
        _wait_answer(proc, f"http://127.0.0.1:{port}/healthz")
        hook = f"http://127.0.0.1:{port}/ingest/kumomta"
        assert httpx.post(hook, content=RECORDS[0], timeout=5).status_code == 401
        answer = httpx.post(hook, content=RECORDS[0], timeout=5,
                            headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert answer.status_code == 200 and answer.json()["events"] == 1
    finally:
        _stop(proc)


# -- the hook over a socket ---------------------------------------------------------------


def test_hook_without_the_right_token_is_refused_and_counted(served: str) -> None:
    """No token or a wrong one: 401 and mailmon_events_rejected_total{reason="bad_auth"}; the
    right one from hook_token_file: stored."""
    key = 'mailmon_events_rejected_total{reason="bad_auth",source="kumomta"}'
    before = _metric(served, key) or 0.0
    hook = f"{served}/ingest/kumomta"
    assert httpx.post(hook, content=RECORDS[0], timeout=5).status_code == 401
    wrong = httpx.post(hook, content=RECORDS[0], timeout=5,
                       headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})  # fmt: skip
    assert wrong.status_code == 401 and TOKEN not in wrong.text
    assert _metric(served, key) == before + 2
    ok = httpx.post(hook, content="\n".join(RECORDS), timeout=5,
                    headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert ok.status_code == 200 and ok.json()["events"] == 7


def test_hook_takes_basic_auth_with_the_configured_username(served: str) -> None:
    """hook_username: Basic USERNAME:TOKEN is taken (an array of records, any scheme case) as
    Bearer TOKEN is; a wrong password, another user or the token without the user: 401, counted."""
    key = 'mailmon_events_rejected_total{reason="bad_auth",source="kumomta"}'
    before = _metric(served, key) or 0.0
    hook = f"{served}/ingest/kumomta"

    def basic(user: str, password: str, scheme: str = "Basic") -> dict[str, str]:
        return {"Authorization": f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    for headers in (basic(USERNAME, TOKEN[:-1] + "x"), basic("other", TOKEN),
                    {"Authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()}):
        refused = httpx.post(hook, content=RECORDS[0], timeout=5, headers=headers)
        assert refused.status_code == 401 and TOKEN not in refused.text
    assert _metric(served, key) == before + 3
    array = "[" + ",".join(RECORDS[:2]) + "]"
    for headers in (basic(USERNAME, TOKEN), basic(USERNAME, TOKEN, "basic")):
        ok = httpx.post(hook, content=array, timeout=5, headers=headers)
        assert ok.status_code == 200 and ok.json()["records"] == 2, ok.text


def test_a_body_over_the_cap_is_refused_without_reading_the_rest(served: str) -> None:
    """A chunked body that passes the cap gets 413 while the sender is still sending, the
    connection is closed, and too_large is counted; a declared oversize length needs no body."""
    key = 'mailmon_events_rejected_total{reason="too_large",source="kumomta"}'
    before = _metric(served, key) or 0.0
    head = (f"POST /ingest/kumomta HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()  # fmt: skip
    chunk = b"x" * 8192
    with _connect(served) as sock:
        sock.sendall(head)
        for _ in range(CAP // len(chunk) + 2):  # just past the cap; the body never ends
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.settimeout(10)
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413 "), answer
        _closed_after(sock, 5)
    declared = (f"POST /ingest/kumomta HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Length: 500000000\r\n\r\n").encode()  # fmt: skip
    with _connect(served) as sock:
        sock.sendall(declared)
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")
    assert _metric(served, key) == before + 2


def test_slow_clients_are_disconnected_while_others_are_served(served: str) -> None:
    """Headers dribbled, a body dribbled, or nothing sent at all: each connection is closed
    about request_timeout_seconds after it could start, and a normal request meanwhile works;
    the cut-off hook request is counted as incomplete, none of it stored."""
    key = 'mailmon_events_rejected_total{reason="incomplete",source="kumomta"}'
    unparsed_key = 'mailmon_events_rejected_total{reason="unparsed",source="kumomta"}'
    incomplete, unparsed = _metric(served, key) or 0.0, _metric(served, unparsed_key)
    silent, headers, body = _connect(served), _connect(served), _connect(served)
    try:
        headers.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        body.sendall((f"POST /ingest/kumomta HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      f"{TOKEN}\r\nContent-Length: 1000\r\n\r\n{{").encode())  # fmt: skip
        start = time.monotonic()
        while time.monotonic() - start < 3 * TIMEOUT:
            try:
                headers.sendall(b"X-Slow: 1\r\n")
                body.sendall(b" ")
            except OSError:
                break  # closed by the server, as it should be
            assert httpx.get(f"{served}/healthz", timeout=2).status_code == 200
            time.sleep(0.2)
        for sock in (silent, headers, body):
            assert _closed_after(sock, 5 * TIMEOUT) < 5 * TIMEOUT
    finally:
        for sock in (silent, headers, body):
            sock.close()
    assert httpx.get(f"{served}/healthz", timeout=2).status_code == 200
    assert _metric(served, key) == incomplete + 1
    assert _metric(served, unparsed_key) == unparsed


def test_connections_past_the_cap_are_closed_at_once(served: str) -> None:
    """With max_connections open, a new connection is closed at once; once the idle ones
    time out, requests are served again."""
    held = [_connect(served) for _ in range(CONNECTIONS)]
    try:
        time.sleep(0.2)  # all accepted
        with _connect(served) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _closed_after(extra, TIMEOUT / 2) < TIMEOUT / 2
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            if httpx.get(f"{served}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_incidents_open_flag_is_checked(served: str) -> None:
    """?open= takes 1/0, true/false, yes/no; anything else is a 400 that says so."""
    assert httpx.get(f"{served}/api/incidents?open=1", timeout=5).status_code == 200
    assert httpx.get(f"{served}/api/incidents?open=false", timeout=5).json() == []
    bad = httpx.get(f"{served}/api/incidents?open=maybe", timeout=5)
    assert bad.status_code == 400 and "open" in bad.json()["error"]


# -- the hook's records, on both stores ----------------------------------------------------


def _post(db_url: str, *bodies: str) -> tuple[list[httpx.Response], int]:
    """POST each body to a hook on a fresh store; the answers and the events stored."""
    from prometheus_client import CollectorRegistry

    from monitor.metrics import Metrics
    from monitor.pipeline import Pipeline
    from monitor.service.app import create_app
    from monitor.store import Store

    with Store.open(db_url) as store:
        metrics = Metrics(CollectorRegistry())
        app = create_app(metrics, pipeline=Pipeline(store, metrics=metrics), store=store)

        async def post() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
                return [await c.post("/ingest/kumomta", content=b) for b in bodies]

        answers = asyncio.run(post())
        return answers, store.count("events")


def _with_nul(record: str) -> str:
    data = json.loads(record)
    data["recipient"] = "nul\u0000@gmail.com"
    return json.dumps(data)


def test_bad_records_are_skipped_and_their_neighbours_stored(db_url: str) -> None:
    """A record with \\u0000, one nested 100,000 deep and one not JSON are counted and skipped;
    the good records in the same request are stored (as one per line and as an array)."""
    deep = "[" * 100_000 + "]" * 100_000
    lines = [*RECORDS[:3], _with_nul(RECORDS[3]), deep, "{broken", *RECORDS[4:]]
    (answer,), stored = _post(db_url, "\n".join(lines))
    assert answer.status_code == 200
    assert answer.json() == {
        "records": 10, "events": 6, "rejected": 3,
        "problems": {"contains a NUL character": 1, "nested too deeply": 1, "not JSON": 1},
    }  # fmt: skip
    assert stored == 6
    array = "[" + ",".join([*RECORDS[:3], _with_nul(RECORDS[3]), *RECORDS[4:]]) + "]"
    (answer,), stored = _post(db_url, array)
    assert answer.status_code == 200 and answer.json()["rejected"] == 1 and stored == 6


def test_a_record_dated_far_ahead_is_named_and_its_neighbours_stored(db_url: str) -> None:
    """A record dated 2099 is refused by the pipeline, and the hook's answer says so."""
    future = json.loads(RECORDS[2])
    future["timestamp"] = 4070908800  # 2099-01-01
    (answer,), stored = _post(db_url, "\n".join([*RECORDS[:2], json.dumps(future), *RECORDS[3:]]))
    assert answer.status_code == 200
    assert answer.json() == {
        "records": 8, "events": 6, "rejected": 1,
        "problems": {"refused by the pipeline (dated too far ahead)": 1},
    }  # fmt: skip
    assert stored == 6


def test_a_body_mostly_not_understood_is_a_400_that_keeps_its_good_records(db_url: str) -> None:
    """Garbage gets 400 with counts; a body mostly of garbage still stores its good record."""
    garbage = "\n".join(["GET / HTTP/1.0", "<html>", "\x00\x01\x02binary", "[1, 2, 3]"])
    mixed = "\n".join([RECORDS[0], "nonsense", "more nonsense", '{"type": "Unknown"}'])
    (junk, mostly, empty), stored = _post(db_url, garbage, mixed, "")
    assert junk.status_code == 400
    assert junk.json()["records"] == 4 and junk.json()["rejected"] == 4
    assert "not stored" in junk.json()["error"]
    assert mostly.status_code == 400
    assert (mostly.json()["events"], mostly.json()["rejected"]) == (1, 3)
    assert empty.status_code == 400 and empty.json()["records"] == 0
    assert stored == 1


# -- /healthz --------------------------------------------------------------------------------


def test_healthz_reports_each_log_and_fails_when_one_cannot_be_read(tmp_path: Path) -> None:
    """A configured log that cannot be read makes /healthz 503 naming it with a short reason;
    the readable log and the store are ok; once the file is readable, it answers 200."""
    good, bad = tmp_path / "good.log", tmp_path / "bad.log"
    good.write_text("")
    bad.mkdir()  # a directory: open() fails as for an unreadable file, even as root
    port = free_port()
    (tmp_path / "mailmon.toml").write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "m.db"}"\n[service]\nlisten_port = {port}\n'
        f'[[logs]]\npath = "{good}"\npoll_interval_seconds = 0.1\n'
        f'[[logs]]\npath = "{bad}"\npoll_interval_seconds = 0.1\n'
    )
    proc = _serve(["--config", str(tmp_path / "mailmon.toml")])
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        _wait_answer(proc, url)
        deadline = time.monotonic() + 10
        while (answer := httpx.get(url, timeout=2)).json()["logs"].get(str(bad), {}).get(
                "status") != "failing":  # fmt: skip
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.1)
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "failing" and body["failing"] == [f"logs:{bad}"]
        assert "Is a directory" in body["logs"][str(bad)]["reason"]
        assert body["logs"][str(good)] == {"status": "ok"}
        assert body["store"] == {"status": "ok"} and body["hook"]["status"] == "ok"
        bad.rmdir()
        bad.write_text("")
        deadline = time.monotonic() + 10
        while (answer := httpx.get(url, timeout=2)).status_code != 200:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.1)
    finally:
        _stop(proc)


def test_healthz_never_shows_the_database_error(postgres_url: str) -> None:
    """With its database gone, /healthz says 503 "database unreachable", never the SQL error."""
    import sqlalchemy as sa
    from prometheus_client import CollectorRegistry

    from monitor.metrics import Metrics
    from monitor.service.app import create_app
    from monitor.store import Store

    name = sa.make_url(postgres_url).database
    with Store.open(postgres_url) as store:
        app = create_app(Metrics(CollectorRegistry()), store=store)

        async def get() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
                return await c.get("/healthz")

        assert asyncio.run(get()).status_code == 200
        store.engine.dispose()
        admin = sa.create_engine(sa.make_url(postgres_url).set(database="postgres"),
                                 isolation_level="AUTOCOMMIT")  # fmt: skip
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
        answer = asyncio.run(get())
    assert answer.status_code == 503
    assert answer.json()["store"] == {"status": "failing", "reason": "database unreachable"}
    assert name not in answer.text and "psycopg" not in answer.text.lower()


def test_serve_takes_the_api_token_and_refuses_protect_metrics_without_it(tmp_path: Path) -> None:
    """serve with MAILMON_API_TOKEN: /api asks for it, /metrics stays open; [api]
    protect_metrics without a token stops serve with one error line."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    config = tmp_path / "mailmon.toml"
    config.write_text("[api]\nprotect_metrics = true\n")
    code, out, err = _refused(["--config", str(config), "--db", db, "--port", str(free_port())],
                              env={"MAILMON_API_TOKEN": ""})  # fmt: skip
    assert code == 2 and "serving" not in out
    assert err.splitlines() == ["mailmon: error: [api] protect_metrics needs the API token: "
                                "set [api] token_file or MAILMON_API_TOKEN"]  # fmt: skip
    port = free_port()
    proc = _serve(["--db", db, "--port", str(port)], env={"MAILMON_API_TOKEN": "api-t0ken"})
    try:
        _wait_answer(proc, f"http://127.0.0.1:{port}/healthz")
        api = f"http://127.0.0.1:{port}/api/incidents"
        assert httpx.get(api, timeout=5).status_code == 401
        answer = httpx.get(api, headers={"Authorization": "Bearer api-t0ken"}, timeout=5)
        assert answer.status_code == 200 and answer.json() == []
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    finally:
        _stop(proc)
