"""Delivery latency p50/p95 per recipient domain, sending IP, sending domain and stream: the
1 h window exact, the 24 h window from hourly histograms, NDRs left out, gauges capped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from factories import T0, ev
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.gauges import DomainLabeler, IpLabeler
from monitor.metrics import Metrics
from monitor.model import Event
from monitor.rollup import (
    LatencyDetector,
    RejectingDetector,
    RollupEngine,
    SenderDomainRejectingDetector,
    SendingIpRejectingDetector,
    StreamRejectingDetector,
    list_incidents,
)
from monitor.rollup.latency import Latency, SubjectLatency
from monitor.store import Store

HOUR = 3600.0
AT = T0.timestamp()  # 10:00: the 1 h window is 09:00-10:00, the 24 h one the day before it
IP1, IP2, IP3 = "192.0.2.1", "192.0.2.2", "198.51.100.9"
_n = 0


def _sent(latencies: list[float], minute: float, recipient_domain: str, provider: str,
          sender: str, ip: str | None, tags: tuple[str, ...]) -> list[Event]:
    """One delivery per latency (seconds), submitted at ``minute`` after T0 (0.1 min apart)."""
    global _n
    out = []
    for i, latency in enumerate(latencies):
        _n += 1
        common = {"recipient": f"u{_n}@{recipient_domain}", "queue_id": f"L{_n:08d}",
                  "message_id": f"l{_n}@app.example", "provider": provider, "sender": sender,
                  "tags": tags}  # fmt: skip
        at = minute + i * 0.1
        out.append(ev("submitted", at, **common))
        out.append(ev("delivered", at + latency / 60, delay_seconds=latency, sending_ip=ip,
                      **common))  # fmt: skip
    return out


def _traffic() -> list[Event]:
    """Gmail and Yahoo in the last hour (exact window); Outlook only in older hours (24 h)."""
    receipts, news = ("stream:receipts",), ("category:news",)
    events = _sent([10, 20, 30, 40, 50], -50, "gmail.com", "google", "noreply@App.Example",
                   IP1, receipts)  # fmt: skip
    events += _sent([100, 200, 300], -40, "gmail.com", "google", "news@news.example", IP2, news)
    # No sending IP and no stream known: the domain and the sending domain only.
    events += _sent([70], -30, "gmail.com", "google", "x@app.example", None, ())
    events += _sent([600], -45, "yahoo.com", "yahoo", "noreply@app.example", IP1, receipts)
    # Our own notice, slow: left out everywhere.
    events += _sent([5000], -59 - 5000 / 60, "gmail.com", "google", "noreply@app.example",
                    IP1, ("ndr",))  # fmt: skip
    alerts = ("microsoft", "Alerts@A.Example.", IP3, ("stream:alerts",))
    events += _sent([45] * 10, -5 * 60, "outlook.com", *alerts)  # 05:00
    events += _sent([3 * HOUR] * 10, -17 * 60, "outlook.com", *alerts)  # 17:00 the day before
    events += _sent([100_000] * 5, -23.5 * 60 - 100_000 / 60, "outlook.com", *alerts)  # 10:30
    events += _sent([200_000] * 10, -24.5 * 60 - 200_000 / 60, "outlook.com", *alerts)  # 25 h back
    events += _sent([50_000] * 10, -4 * 60 - 50_000 / 60, "outlook.com", "microsoft", "Alerts@A.Example.", IP3,
                    ("ndr",))  # fmt: skip
    return events


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        s.write(_traffic())
        yield s


def _r(value: float | None) -> float | None:
    """Interpolation leaves float noise (259.99999999999994): compare to the microsecond."""
    return None if value is None else round(value, 6)


def _table(latency: list[SubjectLatency]) -> dict[tuple[str, ...], tuple[Any, ...]]:
    """(level, provider, value, window) -> (deliveries, p50, p95)."""
    return {(t.level, t.provider, t.value, t.window): (t.deliveries, _r(t.p50), _r(t.p95))
            for t in latency}  # fmt: skip


def test_last_hour_quantiles_are_exact_per_subject(store: Store) -> None:
    """p50/p95 of the last hour per domain, sending IP, sending domain and stream, NDRs left out."""
    table = _table(RollupEngine(store, LatencyDetector()).evaluate(AT).latency)
    hour = {k[:3]: v for k, v in table.items() if k[3] == "1h"}
    assert hour == {
        ("domain", "google", "gmail.com"): (9, 50, 260),
        ("domain", "yahoo", "yahoo.com"): (1, 600, 600),
        ("sending_ip", "google", IP1): (5, 30, 48),
        ("sending_ip", "google", IP2): (3, 200, 290),
        ("sending_ip", "yahoo", IP1): (1, 600, 600),
        ("sender_domain", "google", "app.example"): (6, 35, 65),
        ("sender_domain", "google", "news.example"): (3, 200, 290),
        ("sender_domain", "yahoo", "app.example"): (1, 600, 600),
        ("stream", "google", "receipts"): (5, 30, 48),
        ("stream", "google", "news"): (3, 200, 290),
        ("stream", "yahoo", "receipts"): (1, 600, 600),
    }


def test_day_window_comes_from_whole_hours_and_moves_with_them(store: Store) -> None:
    """The 24 h window interpolates in its histogram, leaves out notices and the 25th hour back,
    and drops an hour when event time passes into the next one."""
    engine = RollupEngine(store, LatencyDetector())
    table = _table(engine.evaluate(AT).latency)
    # Outlook: 10 x 45 s in (30, 60], 10 x 3 h in (2 h, 4 h], 5 x 100,000 s in (1 d, 2 d].
    outlook = (25, 7200 + 7200 * 2.5 / 10, 86400 + 86400 * 3.75 / 5)
    for level, value in (("domain", "outlook.com"), ("sending_ip", IP3),
                         ("sender_domain", "a.example"), ("stream", "alerts")):  # fmt: skip
        assert table[(level, "microsoft", value, "24h")] == outlook
        assert (level, "microsoft", value, "1h") not in table
    # Gmail's last hour is the last whole hour: 1 in (5,10], 2 in (15,30], 2 in (30,60],
    # 2 in (60,120], 2 in (120,300].
    assert table[("domain", "google", "gmail.com", "24h")] == (9, 30 + 30 * 1.5 / 2,
                                                               120 + 180 * 1.55 / 2)  # fmt: skip
    assert table == _table(engine.evaluate(AT + 60).latency)  # the same hours, from the cache
    later = _table(engine.evaluate(AT + HOUR).latency)
    assert later[("domain", "microsoft", "outlook.com", "24h")] == (20, 60, 7200 + 7200 * 0.9)
    assert later[("domain", "google", "gmail.com", "24h")][0] == 9
    assert not any(k[3] == "1h" for k in later)  # nothing delivered 10:00-11:00


def test_day_window_hours_are_read_once_until_a_rebuild(store: Store) -> None:
    """Kept hours are not read again: rows stored late for them count after time moves back."""
    engine = RollupEngine(store, LatencyDetector())
    engine.evaluate(AT)
    alerts = ("microsoft", "Alerts@A.Example.", IP3, ("stream:alerts",))
    store.write(_sent([45] * 10, -5 * 60 + 2, "outlook.com", *alerts))  # back-filled 05:02
    store.write(_sent([45], -10, "outlook.com", *alerts))  # and one in the last hour
    table = _table(engine.evaluate(AT + 60).latency)
    assert table[("domain", "microsoft", "outlook.com", "24h")][0] == 25
    assert table[("domain", "microsoft", "outlook.com", "1h")] == (1, 45, 45)
    rebuilt = _table(engine.evaluate(AT).latency)  # backwards: every hour read afresh
    assert rebuilt[("domain", "microsoft", "outlook.com", "24h")][0] == 25 + 10 + 1  # 09:50 too


def test_gauges_keep_the_label_caps(store: Store) -> None:
    """Domains and IPs beyond the labels pool into ``other`` with a count and no quantiles."""
    metrics = Metrics(CollectorRegistry(), DomainLabeler(allow=["gmail.com"]), ips=IpLabeler(top=1))
    RollupEngine(store, LatencyDetector(), gauges=metrics.rollup).evaluate(AT)
    def value(name: str, labels: dict[str, str]) -> float | None:
        return _r(metrics.registry.get_sample_value(name, labels))

    gmail = {"provider": "google", "domain": "gmail.com", "window": "1h"}
    assert value("mailmon_domain_delivery_latency_seconds", gmail | {"quantile": "0.5"}) == 50
    assert value("mailmon_domain_delivery_latency_seconds", gmail | {"quantile": "0.95"}) == 260
    assert value("mailmon_domain_delivery_latency_deliveries", gmail) == 9
    assert value("mailmon_domain_delivery_latency_deliveries",
                 {"provider": "microsoft", "domain": "other", "window": "24h"}) == 25  # fmt: skip
    # IP3 delivered the most (25 in 24 h): the one IP with a label of its own.
    ip3 = {"provider": "microsoft", "sending_ip": IP3, "window": "24h"}
    assert value("mailmon_sending_ip_delivery_latency_seconds", ip3 | {"quantile": "0.5"}) == 9000
    assert value("mailmon_sending_ip_delivery_latency_deliveries",
                 {"provider": "google", "sending_ip": "other", "window": "1h"}) == 8  # fmt: skip
    stream = {"provider": "google", "stream": "news", "window": "1h", "quantile": "0.95"}
    assert value("mailmon_stream_delivery_latency_seconds", stream) == 290
    sending = {"provider": "google", "sender_domain": "app.example", "window": "1h",
               "quantile": "0.5"}  # fmt: skip
    assert value("mailmon_sender_domain_delivery_latency_seconds", sending) == 35
    labels = {
        (family.name, s.labels.get("domain", s.labels.get("sending_ip")))
        for family in metrics.registry.collect()
        for s in family.samples
        if family.name in ("mailmon_domain_delivery_latency_seconds",
                           "mailmon_sending_ip_delivery_latency_seconds")
    }  # fmt: skip
    assert labels == {("mailmon_domain_delivery_latency_seconds", "gmail.com"),
                      ("mailmon_sending_ip_delivery_latency_seconds", IP3)}  # fmt: skip


def _blocked(minute: float) -> list[Event]:
    """30 deferrals of gmail.com mail from IP1 (receipts) for reputation in five minutes."""
    out = []
    for i in range(30):
        out.append(ev("deferred", minute + i * 0.1, recipient=f"b{i}@gmail.com",
                      queue_id=f"B{i:08d}", message_id=f"b{i}@app.example", provider="google",
                      sender="noreply@app.example", sending_ip=IP1, tags=("stream:receipts",),
                      reply_code=421, enhanced_status="4.7.28", reason="blocked", hard=False,
                      diagnostic="421-4.7.28 unusual rate of unsolicited mail"))  # fmt: skip
    return out


def test_incident_evidence_carries_the_subjects_latency(store: Store) -> None:
    """Domain and sender-side incidents record their subject's last-hour p50/p95."""
    store.write(_blocked(-4))
    engine = RollupEngine(store, [RejectingDetector(), SendingIpRejectingDetector(),
                                  SenderDomainRejectingDetector(), StreamRejectingDetector()])  # fmt: skip
    result = engine.evaluate(AT)
    assert result.latency == []  # no gauges, no latency detector: read for the evidence only
    with store.engine.connect() as conn:
        found = {(i["kind"], i["domain"]): {k: _r(v) for k, v in i["evidence"]["latency_1h"].items()}
                 for i in list_incidents(conn)}  # fmt: skip
    assert found == {
        ("domain_rejecting", "gmail.com"): {"deliveries": 9, "p50": 50, "p95": 260},
        ("sending_ip_rejecting", IP1): {"deliveries": 5, "p50": 30, "p95": 48},
        ("sender_domain_rejecting", "app.example"): {"deliveries": 6, "p50": 35, "p95": 65},
        ("stream_rejecting", "receipts"): {"deliveries": 5, "p50": 30, "p95": 48},
    }


def test_rollup_json_lists_the_latency_of_the_last_evaluation(store: Store, db_url: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`mailmon rollup --json` gives per subject the 1 h and 24 h latency at the last time."""
    at = (T0 + timedelta(0)).isoformat()
    assert main(["rollup", "--db", db_url, "--at", at, "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    rows = {(r["level"], r["provider"], r["value"]): r for r in run["latency"]}
    news = rows[("stream", "google", "news")]["1h"]
    assert {k: _r(v) for k, v in news.items()} == {"deliveries": 3, "p50": 200, "p95": 290}
    outlook = rows[("domain", "microsoft", "outlook.com")]
    assert outlook["1h"] is None and outlook["24h"]["deliveries"] == 25


def test_reported_latency_is_rounded_to_milliseconds() -> None:
    """Latencies are differences of UNIX times near 1.8e9, whose float noise (1.0999999046...
    for 1.1) must not reach the JSON evidence or `rollup --json`."""
    submitted = 1795100000.0
    noisy = (submitted + 1.1) - submitted
    assert noisy != 1.1
    assert Latency(1, noisy, None).as_dict() == {"deliveries": 1, "p50": 1.1, "p95": None}
