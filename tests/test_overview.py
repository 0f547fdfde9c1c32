"""The overview page at / and /trace: what it shows, what it escapes, who may read it."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_fixture import AT, TOKEN, fill
from factories import ev
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.testclient import TestClient

from monitor.metrics import Metrics
from monitor.service.app import build_app, create_app
from monitor.service.overview import CSP, OverviewRoutes, PageGuard
from monitor.service.overview.data import Spark
from monitor.service.overview.render import sparkline
from monitor.store import Store

LOOPBACK = ("127.0.0.1", 50000)
ELSEWHERE = ("192.0.2.50", 50000)
HOSTILE = 'x"><script>alert(1)</script>@gmail.com'


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = tmp_path_factory.mktemp("overview") / "m.db"
    with Store.open(f"sqlite:///{path}") as s:
        fill(s)
        s.write([ev("submitted", 9, queue_id="7E7E7E7E7E", message_id="evil@app.example",
                    recipient=HOSTILE, provider="google",
                    diagnostic="<img src=http://tracker.example/x>")])  # fmt: skip
        yield s


def _app(store: Store | None, token: str | None = None, metrics: Metrics | None = None,
         health: dict[str, object] | None = None) -> Starlette:  # fmt: skip
    metrics = metrics or Metrics(CollectorRegistry())
    page = OverviewRoutes(store, metrics.registry, PageGuard(token),
                          health=(lambda: health or {}), clock=lambda: AT)  # fmt: skip
    return build_app([page])


def _client(app: Starlette, client: tuple[str, int] = LOOPBACK) -> TestClient:
    return TestClient(app, client=client, follow_redirects=False)


def _table(html: str, table_id: str) -> list[list[str]]:
    """The body rows of one table, each as its cells' text."""
    body = html.split(f'<table id="{table_id}"', 1)[1].split("</table>", 1)[0]
    body = body.split("<tbody>", 1)[1]
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S)
        rows.append([re.sub(r"<[^>]+>", "", c).strip() for c in cells])
    return rows


def test_page_shows_incidents_and_provider_rates_with_sparklines(store: Store) -> None:
    """The open incident, the one closed within a day, and per provider the last hour's and
    day's attempts and rates as the store counts them, each window with its sparkline."""
    answer = _client(_app(store)).get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    html = answer.text
    (open_row,) = _table(html, "open-incidents")
    assert open_row[:4] == ["domain_rejecting", "google", "gmail.com", "2026-03-04 10:05:00"]
    assert open_row[4] == "5 min"
    (closed_row,) = _table(html, "closed-incidents")
    assert closed_row[:3] == ["domain_rejecting", "microsoft", "outlook.com"]
    assert closed_row[4] == "30 min"
    rates = {row[0]: row for row in _table(html, "provider-rates")}
    assert set(rates) == {"google", "microsoft"}
    # google, last hour: alice delivered, bob deferred once then delivered; the day adds the
    # delivery two hours before.
    assert rates["google"][1:5] == ["3", "100.0%", "33.3%", "0.00%"]
    assert rates["google"][7:11] == ["4", "100.0%", "25.0%", "0.00%"]
    assert rates["microsoft"][1:5] == ["1", "0.00%", "0.00%", "100.0%"]
    assert html.count('<svg class="spark"') == 4
    assert 'aria-label="google, 1h: 3 attempts, 1 failed' in html


def test_a_search_runs_trace(store: Store) -> None:
    """/trace?q= and /?q= show what `mailmon trace` finds: each delivery and its timeline."""
    client = _client(_app(store))
    for path in ("/trace?q=m2@app.example", "/?q=%3Cm2@app.example%3E", "/trace?q=5C2D3E4F5A"):
        html = client.get(path).text
        assert "1 delivery found" in html, path
        assert "carol@outlook.com: bounced (userunknown, hard" in html
        events = _table(html, "timeline-0")
        assert [row[1] for row in events] == ["submitted", "bounced"]
        assert events[1][2] == "550 5.1.1"
    html = client.get("/trace", params={"q": "alice@gmail.com"}).text
    assert "2 deliveries found" in html
    assert "Nothing found for nobody@example.org" in client.get(
        "/trace", params={"q": "nobody@example.org"}).text  # fmt: skip
    assert client.get("/trace?q=").headers["location"] == "/"
    assert "Not a Message-ID" in client.get("/trace", params={"q": "a" * 2000}).text


def test_stored_text_is_escaped(store: Store) -> None:
    """Addresses and replies from outside are shown as text: no markup of theirs gets through."""
    html = _client(_app(store)).get("/trace", params={"q": "evil@app.example"}).text
    assert "<script>alert" not in html and "<img src=http" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@gmail.com" in html
    assert "x&quot;&gt;" in html


def test_the_page_needs_nothing_from_elsewhere(store: Store) -> None:
    """No script and no URL of another origin; the CSP forbids both to the browser."""
    answer = _client(_app(store)).get("/")
    html = answer.text
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href|action)="(https?:)?//', html)
    assert answer.headers["content-security-policy"] == CSP
    assert "default-src 'none'" in CSP and "script-src" not in CSP
    assert answer.headers["referrer-policy"] == "no-referrer"
    # landmarks, a labelled search box, headers on every table
    for part in ("<header", "<nav", '<main id="main"', "<footer", 'role="search"',
                 '<label for="q"', '<html lang="en"'):  # fmt: skip
        assert part in html
    assert html.count("<table") == html.count("<thead>") == html.count("<caption")


def test_the_page_follows_the_api_token_rule(store: Store) -> None:
    """No API token: loopback clients only.  A token: as bearer, or as the Basic password."""
    open_app = _app(store)
    assert _client(open_app).get("/").status_code == 200
    refused = _client(open_app, ELSEWHERE).get("/trace?q=m2@app.example")
    assert refused.status_code == 403 and "carol" not in refused.text
    app = _app(store, token=TOKEN)
    anyone = _client(app, ELSEWHERE)
    answer = anyone.get("/")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith('Basic realm="mailmon"')
    assert "domain_rejecting" not in answer.text

    def basic(password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"me:{password}".encode()).decode()}

    assert anyone.get("/", headers=basic(TOKEN)).status_code == 200
    assert anyone.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert anyone.get("/", headers=basic("wrong")).status_code == 401
    assert anyone.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert _client(app).get("/").status_code == 401  # with a token, loopback needs it too


def test_ingestion_health_from_metrics_and_healthz(store: Store) -> None:
    """Per source what /metrics counted, and each part of /healthz with its reason."""
    metrics = Metrics(CollectorRegistry())
    metrics.observe([ev("delivered", 5, provider="google")])
    metrics.count_input("postfix", 120, 3)
    health = {"logs": {"/var/log/mail.log": {"status": "ok"},
                       "/var/log/gone.log": {"status": "failing", "reason": "cannot be read"}}}
    html = _client(_app(store, metrics=metrics, health=health)).get("/").text
    sources = {row[0]: row for row in _table(html, "sources")}
    assert sources["postfix"][3] == "3" and sources["postfix"][4] == "120"
    parts = _table(html, "health")
    assert ["logs:/var/log/gone.log", "failing", "cannot be read"] in parts
    assert ["logs:/var/log/mail.log", "ok", ""] in parts


def test_followed_logs_from_their_checkpoints(tmp_path: Path) -> None:
    """Each followed log's lines and lines not understood since it was first followed, as its
    checkpoint keeps them (a parser's state and other checkpoints are not logs)."""
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as s:
        s.write([], checkpoint=("mx1:postfix:/var/log/mail.log", {
            "path": "/var/log/mail.log", "position": {"offset": 10},
            "counts": {"source": "postfix", "lines": 4200, "rejected": {"unparsed": 7}}}))
        s.write([], state={"mx1:postfix\x1fstate\x1fQ1": {"queue_id": "Q1"}})
        html = _client(_app(s)).get("/").text
    (row,) = _table(html, "files")
    assert row[:5] == ["/var/log/mail.log", "postfix", "mx1", "4200", "7"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row[5])


def test_an_unreachable_store_is_said(tmp_path: Path) -> None:
    """A store that cannot be read: 503 and one plain sentence, no traceback."""
    s = Store.open(f"sqlite:///{tmp_path / 'm.db'}")
    s.engine.dispose()
    (tmp_path / "m.db").unlink()
    (tmp_path / "m.db").mkdir()  # no longer a database file
    answer = _client(_app(s)).get("/")
    assert answer.status_code == 503
    assert "The store cannot be read" in answer.text and "Traceback" not in answer.text


def test_incident_evidence_says_value_threshold_and_top_replies() -> None:
    """The evidence cell: the share against its threshold in the deciding window, and the
    replies given most, without the MTA's "host ... said:" prefix, escaped and shortened."""
    from monitor.service.overview.render import _evidence

    cell = _evidence({
        "value": 0.216117, "threshold": 0.1, "window": "5m", "windows": {"5m": {"attempts": 273}},
        "top_replies": [
            {"count": 37, "reply_code": 421, "enhanced_status": "4.7.28",
             "text": "host gmail-smtp-in.l.google.com[142.250.102.26] said: 421-4.7.28 Gmail has "
                     "detected an unusual rate of unsolicited mail " + "x" * 200},
            {"count": 2, "reply_code": 550, "enhanced_status": "5.7.1", "text": "<b>no</b>"},
        ],
    })  # fmt: skip
    assert cell.startswith("5m: 21.6% (threshold 10.0%) of 273 attempts<br>")
    assert "37× 421-4.7.28 Gmail has detected an unusual rate" in cell and "said:" not in cell
    assert "…</span>" in cell
    assert "2× 550 5.7.1 &lt;b&gt;no&lt;/b&gt;" in cell


def test_sparkline_draws_each_step_and_says_it_in_words() -> None:
    """One point per step, scaled to the busiest; the text alternative gives the totals."""
    svg = sparkline(Spark((0, 10, 5, 10), (0, 0, 5, 1), 300), "google, 1h")
    polyline = re.search(r'<polyline points="([^"]+)"', svg)
    assert polyline is not None and len(polyline.group(1).split()) == 4
    assert "google, 1h: 25 attempts, 6 failed; most failures (5) in step 3 of 4 (5 min each)" in svg


def test_serve_app_has_the_page_only_with_a_store(store: Store) -> None:
    """create_app: with a store "/" is the page; without one it still lists the paths."""
    with_store = _client(create_app(Metrics(CollectorRegistry()), store=store)).get("/")
    assert with_store.headers["content-type"].startswith("text/html")
    without = _client(create_app(Metrics(CollectorRegistry()))).get("/")
    assert without.headers["content-type"].startswith("text/plain") and "/metrics" in without.text
