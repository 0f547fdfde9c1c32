"""Rollups per sending domain and per stream: detectors per (provider, value), evidence, gauges."""

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
    RejectingDetector,
    RollupEngine,
    SenderDomainBounceRateDetector,
    SenderDomainRejectingDetector,
    StreamBounceRateDetector,
    StreamRejectingDetector,
    default_detectors,
    list_incidents,
    subject_of,
)
from monitor.store import Store

DAY = datetime(2026, 3, 4, tzinfo=UTC)
BLOCK = DAY + timedelta(hours=10, minutes=40)  # Gmail starts refusing the newsletter
UNBLOCK = DAY + timedelta(hours=11, minutes=20)
END = DAY + timedelta(hours=12, minutes=30)  # the 1 h windows are clean again
SPAM = "550-5.7.1 This message is likely suspicious due to the very low reputation"


def _traffic(start: datetime, end: datetime, *, blocked: bool) -> list[Event]:
    """Per minute to gmail.com: 40 transactional deliveries from app.example and 5 newsletter
    ones from News.Example (stream "news"), refused as spam while ``blocked``."""
    out: list[Event] = []
    t0 = ev("delivered").occurred_at
    minute = (start - t0).total_seconds() / 60
    stop = (end - t0).total_seconds() / 60
    n = int(minute * 100)
    while minute < stop:
        for i in range(45):
            n += 1
            common = {"recipient": f"u{n}@gmail.com", "queue_id": f"Q{n:08d}",
                      "message_id": f"m{n}@app.example", "provider": "google"}  # fmt: skip
            if i < 5:
                common |= {"sender": "letter@News.Example", "tags": ("stream:news",)}
            else:
                common |= {"sender": "noreply@app.example", "tags": ("category:receipts",)}
            if i < 5 and blocked:
                out.append(ev("bounced", minute, reply_code=550, enhanced_status="5.7.1",
                              diagnostic=SPAM, reason="spamdetected", hard=False,
                              blame="content", **common))  # fmt: skip
            else:
                out.append(ev("delivered", minute, **common))
        minute += 1
    return out


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        s.write(_traffic(DAY + timedelta(hours=8), BLOCK, blocked=False))
        s.write(_traffic(BLOCK, UNBLOCK, blocked=True))
        s.write(_traffic(UNBLOCK, END, blocked=False))
        yield s


def test_blocked_stream_and_sending_domain_open_incidents_the_domain_does_not(
    store: Store,
) -> None:
    """A newsletter refused at Gmail fires per sending domain and per stream, not for gmail.com
    (diluted by the transactional mail), and resolves after the block lifts."""
    metrics = Metrics(CollectorRegistry())
    detectors = (
        RejectingDetector(),
        SenderDomainRejectingDetector(),
        SenderDomainBounceRateDetector(),
        StreamRejectingDetector(),
        StreamBounceRateDetector(),
    )
    engine = RollupEngine(store, detectors, gauges=metrics.rollup)
    first = engine.evaluate((BLOCK + timedelta(minutes=5)).timestamp())
    # 25 of the stream's 25 attempts in 5 minutes; 25 of 600 finished in the hour: above 5 %.
    assert sorted(first.incidents_opened) == [
        ("sender_domain_bounce_rate", "google", "news.example"),
        ("sender_domain_rejecting", "google", "news.example"),
        ("stream_bounce_rate", "google", "news"),
        ("stream_rejecting", "google", "news"),
    ]
    assert first.opened == []  # no domain_rejecting page for gmail.com
    value = metrics.registry.get_sample_value
    news = {"provider": "google", "sender_domain": "news.example"}
    app = {"provider": "google", "sender_domain": "app.example"}
    kind = {"kind": "sender_domain_rejecting"}
    assert value("mailmon_sender_domain_incident_open", kind | news) == 1
    assert value("mailmon_sender_domain_incident_open", kind | app) == 0
    assert value("mailmon_sender_domain_rejecting_ratio", news) == 1.0
    assert value("mailmon_sender_domain_rejecting_ratio", app) == 0.0
    stream = {"provider": "google", "stream": "news"}
    assert value("mailmon_stream_incident_open", {"kind": "stream_rejecting"} | stream) == 1
    assert value("mailmon_stream_rejecting_ratio", stream) == 1.0
    assert value("mailmon_stream_bounce_ratio", {"provider": "google", "stream": "receipts"}) == 0

    list(engine.replay((BLOCK + timedelta(minutes=10)).timestamp(), END.timestamp(), step=300))
    with store.engine.connect() as conn:
        found = {i["kind"]: i for i in list_incidents(conn)}
    assert set(found) == {k for k, _p, _d in first.incidents_opened}
    for incident in found.values():
        assert incident["ended_at"] is not None and incident["ended_at"] > UNBLOCK.timestamp()
    evidence = found["stream_rejecting"]["evidence"]
    assert evidence["subject"] == "stream news at google"
    assert evidence["top_reasons"] == [
        {"outcome": "bounced", "reason": "spamdetected", "count": 25}
    ]
    (reply,) = evidence["top_replies"]
    assert (reply["reply_code"], reply["text"], reply["count"]) == (550, SPAM, 25)
    (reply,) = found["sender_domain_rejecting"]["evidence"]["top_replies"]
    assert (reply["reason"], reply["count"]) == ("spamdetected", 25)
    # Split by hard/soft and blame from sender_counters, as a recipient domain's would be.
    for kind in ("stream_rejecting", "sender_domain_rejecting"):
        assert found[kind]["evidence"]["failures"] == {
            "hard": {"soft": 25},
            "blame": {"content": 25},
            "reasons": [{"outcome": "bounced", "reason": "spamdetected", "hard": "soft",
                         "blame": "content", "count": 25}],
        }  # fmt: skip


def test_default_detectors_judge_sending_domains_and_streams() -> None:
    """The default set judges rejecting and bounce rate per sending domain and per stream."""
    levels = {d.kind: d.level for d in default_detectors()}
    assert levels["sender_domain_rejecting"] == levels["sender_domain_bounce_rate"]
    assert levels["sender_domain_rejecting"] == "sender_domain"
    assert levels["stream_rejecting"] == levels["stream_bounce_rate"] == "stream"
    assert subject_of("sender_domain_bounce_rate", "yahoo", "mail.example") == (
        "sending domain mail.example at yahoo"
    )


def test_sender_domain_and_stream_labels_are_bounded() -> None:
    """Beyond the configured values and the top N by volume, sending domains and streams
    pool into ``other``; an incident gauge of the pool is 1 when any member's is."""
    from monitor.rollup import SubjectState

    metrics = Metrics(
        CollectorRegistry(),
        sender_domains=IpLabeler(allow=["kept.example"], top=1),
        streams=IpLabeler(top=0),
    )
    subjects = [
        SubjectState("sender_domain_rejecting", "google", "big.example", False, 0.0, 0, 100),
        SubjectState("sender_domain_rejecting", "google", "small.example", True, 0.5, 5, 10),
        SubjectState("sender_domain_rejecting", "google", "kept.example", False, 0.0, 0, 1),
        SubjectState("stream_rejecting", "google", "news", True, 1.0, 3, 3),
    ]
    metrics.rollup.update([], subjects)
    value = metrics.registry.get_sample_value
    kind = {"kind": "sender_domain_rejecting", "provider": "google"}
    assert value("mailmon_sender_domain_incident_open", kind | {"sender_domain": "other"}) == 1
    assert value("mailmon_sender_domain_incident_open", kind | {"sender_domain": "big.example"}) == 0
    assert value("mailmon_sender_domain_incident_open", kind | {"sender_domain": "kept.example"}) == 0
    assert value("mailmon_sender_domain_rejecting_ratio",
                 {"provider": "google", "sender_domain": "other"}) == 0.5  # fmt: skip
    assert value("mailmon_stream_rejecting_ratio", {"provider": "google", "stream": "other"}) == 1
    assert value("mailmon_stream_rejecting_ratio", {"provider": "google", "stream": "news"}) is None
