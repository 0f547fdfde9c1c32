"""Rollups per sending IP: windows from sender_counters, detectors per (provider, IP), gauges."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from factories import ev
from prometheus_client import CollectorRegistry

from monitor.gauges import IpLabeler
from monitor.metrics import Metrics
from monitor.model import Event
from monitor.rollup import (
    SENDER_DOMAINS,
    SENDING_IPS,
    STREAMS,
    RejectingDetector,
    RollupEngine,
    SendingIpBounceRateDetector,
    SendingIpRejectingDetector,
    default_detectors,
    list_incidents,
    window_counts,
)
from monitor.store import Store
from monitor.store.schema import counters, sender_counters

DAY = datetime(2026, 3, 4, tzinfo=UTC)
BLOCK = DAY + timedelta(hours=10, minutes=40)  # Microsoft starts refusing 203.0.113.7
UNBLOCK = DAY + timedelta(hours=11, minutes=20)
END = DAY + timedelta(hours=12)
LISTED, CLEAN = "203.0.113.7", "203.0.113.8"
BLOCKED = "550 5.7.1 Service unavailable, Client host [203.0.113.7] blocked using Spamhaus"


def _background(store: Store, end: datetime) -> None:
    """Quiet hours as counters: outlook.com gets 40 deliveries a minute from one IP, 4 from the other."""
    keys = ("bucket", "dimension", "value", "provider", "outcome", "reason", "ndr", "count")
    by_ip, by_domain = [], []
    for minute in range(int(DAY.timestamp()), int(end.timestamp()), 60):
        by_domain.append({"bucket": minute, "recipient_domain": "outlook.com", "provider": "microsoft",
                          "outcome": "delivered", "reason": "", "stream": "", "count": 44})
        for ip, n in ((CLEAN, 40), (LISTED, 4)):
            row = (minute, "sending_ip", ip, "microsoft", "delivered", "", 0, n)
            by_ip.append(dict(zip(keys, row, strict=True)))
    with store.engine.begin() as conn:
        conn.execute(counters.insert(), by_domain)
        conn.execute(sender_counters.insert(), by_ip)


def _traffic(start: datetime, end: datetime, *, blocked: bool) -> list[Event]:
    """Per minute to outlook.com: 40 delivered from the clean IP, 4 from the listed one
    (refused with 550 5.7.1 while ``blocked``): a tenth of the domain's attempts."""
    out: list[Event] = []
    minute = (start - ev("delivered").occurred_at).total_seconds() / 60
    stop = (end - ev("delivered").occurred_at).total_seconds() / 60
    n = int(minute * 100)
    while minute < stop:
        for i in range(44):
            n += 1
            common = {"recipient": f"u{n}@outlook.com", "queue_id": f"Q{n:08d}",
                      "message_id": f"m{n}@app.example", "provider": "microsoft"}
            if i < 4 and blocked:
                out.append(ev("bounced", minute, sending_ip=LISTED, reply_code=550,
                              enhanced_status="5.7.1", diagnostic=BLOCKED, reason="blocked",
                              hard=False, **common))
            else:
                out.append(ev("delivered", minute, sending_ip=LISTED if i < 4 else CLEAN, **common))
        minute += 1
    return out


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        _background(s, BLOCK)
        s.write(_traffic(BLOCK, UNBLOCK, blocked=True))
        s.write(_traffic(UNBLOCK, END, blocked=False))
        yield s


def test_windows_per_sending_ip(store: Store) -> None:
    """sender_counters give (provider, IP) windows as counters give (provider, domain) ones."""
    with store.engine.connect() as conn:
        table = window_counts(conn, (BLOCK + timedelta(minutes=5)).timestamp(), SENDING_IPS)
    listed, clean = table[("microsoft", LISTED)], table[("microsoft", CLEAN)]
    assert (listed["5m"].bounced, listed["5m"].rejecting, listed["5m"].delivered) == (20, 20, 0)
    assert (clean["5m"].delivered, clean["5m"].rejecting) == (200, 0)
    # The baseline is the week before the short window: 4 a minute from 00:00 to 10:40.
    assert listed["baseline"].delivered == 4 * (10 * 60 + 40)
    assert set(table) == {("microsoft", LISTED), ("microsoft", CLEAN)}


def test_listed_ip_opens_an_incident_its_domains_do_not(store: Store) -> None:
    """One IP refused at Microsoft fires per IP while outlook.com, diluted, stays quiet."""
    metrics = Metrics(CollectorRegistry())
    detectors = (RejectingDetector(), SendingIpRejectingDetector(), SendingIpBounceRateDetector())
    engine = RollupEngine(store, detectors, gauges=metrics.rollup)
    first = engine.evaluate((BLOCK + timedelta(minutes=5)).timestamp())
    # 20 of its 240 finished recipients in the hour bounced: above the 5 % floor as well.
    assert sorted(first.incidents_opened) == [("sending_ip_bounce_rate", "microsoft", LISTED),
                                              ("sending_ip_rejecting", "microsoft", LISTED)]
    assert first.opened == []  # no domain_rejecting page for outlook.com
    value = metrics.registry.get_sample_value
    listed = {"provider": "microsoft", "sending_ip": LISTED}
    clean = {"provider": "microsoft", "sending_ip": CLEAN}
    assert value("mailmon_sending_ip_incident_open", {"kind": "sending_ip_rejecting", **listed}) == 1
    assert value("mailmon_sending_ip_incident_open", {"kind": "sending_ip_rejecting", **clean}) == 0
    assert value("mailmon_sending_ip_rejecting_ratio", listed) == 1.0
    assert value("mailmon_sending_ip_rejecting_ratio", clean) == 0.0
    list(engine.replay((BLOCK + timedelta(minutes=10)).timestamp(), END.timestamp(), step=300))
    with store.engine.connect() as conn:
        found = list_incidents(conn)
    subjects = {(i["kind"], i["provider"], i["domain"]) for i in found}
    assert subjects == {("sending_ip_rejecting", "microsoft", LISTED),
                        ("sending_ip_bounce_rate", "microsoft", LISTED)}
    rejecting = next(i for i in found if i["kind"] == "sending_ip_rejecting")
    assert rejecting["started_at"] == (BLOCK + timedelta(minutes=5)).timestamp()
    assert rejecting["ended_at"] is not None and rejecting["ended_at"] > UNBLOCK.timestamp()
    evidence = rejecting["evidence"]
    assert evidence["subject"] == f"sending IP {LISTED} at microsoft"
    assert evidence["top_reasons"] == [{"outcome": "bounced", "reason": "blocked", "count": 20}]
    (reply,) = evidence["top_replies"]
    assert (reply["reply_code"], reply["text"], reply["count"]) == (550, BLOCKED, 20)


def test_default_detectors_judge_sending_ips() -> None:
    """The default set judges rejecting and bounce rate per sending IP too."""
    levels = {d.kind: d.level for d in default_detectors()}
    assert levels["sending_ip_rejecting"] == levels["sending_ip_bounce_rate"] == "sending_ip"


def test_ip_labels_are_bounded() -> None:
    """Configured IPs keep their label; beyond the top N by volume the rest is ``other``."""
    labeler = IpLabeler(allow=["192.0.2.9"], top=1)
    labels = labeler.labels({"192.0.2.1": 10, "192.0.2.2": 50, "192.0.2.9": 1})
    assert labels == {"192.0.2.1": "other", "192.0.2.2": "192.0.2.2", "192.0.2.9": "192.0.2.9"}


def test_windows_per_sending_domain_and_stream(db_url: str) -> None:
    """The same windows per sending domain and per stream tag; our own notices stay out."""
    at = ev("delivered").occurred_at
    events = [
        ev("delivered", 1, queue_id="A", sender="news@Mail.Example", tags=("stream:news",),
           provider="google"),
        ev("bounced", 2, queue_id="B", sender="bill@app.example", tags=("category:billing",),
           provider="google", reason="blocked"),
        ev("delivered", 30, queue_id="C", sender="bill@app.example", provider="google"),
        ev("delivered", 3, queue_id="D", sender="", tags=("ndr",), provider="google"),
    ]  # fmt: skip
    with Store.open(db_url) as store:
        store.write(events)
        with store.engine.connect() as conn:
            senders = window_counts(conn, (at + timedelta(minutes=5)).timestamp(), SENDER_DOMAINS)
            streams = window_counts(conn, (at + timedelta(minutes=5)).timestamp(), STREAMS)
            later = window_counts(conn, (at + timedelta(minutes=35)).timestamp(), SENDER_DOMAINS)
    assert set(senders) == {("google", "mail.example"), ("google", "app.example")}
    assert senders[("google", "app.example")]["5m"].rejecting == 1
    assert set(streams) == {("google", "news"), ("google", "billing")}
    assert streams[("google", "news")]["5m"].delivered == 1
    app = later[("google", "app.example")]
    assert (app["5m"].delivered, app["1h"].bounced, app["1h"].delivered) == (1, 1, 1)
