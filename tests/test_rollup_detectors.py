"""The detectors beyond *domain starts rejecting*: bounce rate, deferral spike, complaint rate,
provider silence, latency regression and queue age, each quiet at low volume."""

from __future__ import annotations

from datetime import timedelta

import pytest
from factories import T0, ev
from prometheus_client import CollectorRegistry

from monitor.gauges import DomainLabeler
from monitor.metrics import Metrics
from monitor.model import Event
from monitor.rollup import RollupEngine, list_incidents
from monitor.rollup.detectors import (
    BounceRateDetector,
    ComplaintRateDetector,
    DeferralSpikeDetector,
    LatencyDetector,
    LatencyStats,
    ProviderSilentDetector,
    QueueAgeDetector,
    QueueStats,
)
from monitor.rollup.windows import BASELINE, WINDOWS, Counts, with_baselines
from monitor.store import Store
from monitor.store.schema import counters

HOUR = 3600.0


def _windows(window: str, now: Counts, week: Counts) -> dict[str, Counts]:
    """``now`` in ``window`` (and every window containing it), ``week`` before it."""
    table = {name: Counts() for name in (*WINDOWS, BASELINE, "same_hour_min")}
    for name, seconds in WINDOWS.items():
        if seconds >= WINDOWS[window]:
            table[name] = now
    table[BASELINE] = week + now - table["5m"]
    return with_baselines(table)


def test_bounce_rate_needs_volume_and_a_rise_over_the_week() -> None:
    """10 % of 200 finished after a 1 % week fires; 5 of 10 stays quiet; 0 of 200 resolves."""
    detector = BounceRateDetector()
    week = Counts(delivered=9900, bounced=100)
    assert detector.decide(_windows("1h", Counts(delivered=180, bounced=20), week)).firing
    small = detector.decide(_windows("1h", Counts(delivered=5, bounced=5), week))
    assert not small.firing and small.value == 0.5
    assert detector.decide(_windows("1h", Counts(delivered=200), week)).resolved


def test_deferral_spike_is_relative_to_the_domains_own_greylisting() -> None:
    """50 % deferred after a 2 % week fires; a domain that always defers 40 % does not."""
    detector = DeferralSpikeDetector()
    assert detector.decide(
        _windows("15m", Counts(delivered=100, deferred=100), Counts(delivered=9800, deferred=200))
    ).firing
    assert not detector.decide(
        _windows("15m", Counts(delivered=60, deferred=40), Counts(delivered=6000, deferred=4000))
    ).firing
    assert not detector.decide(
        _windows("15m", Counts(delivered=10, deferred=30), Counts(delivered=9800, deferred=200))
    ).firing  # 40 attempts: too few


def test_complaint_rate_follows_the_sender_rules() -> None:
    """0.12 % of 5,000 is a warning, 0.4 % critical, 2.5 % of 4,000 too little volume; 0 of 10,000 resolves."""
    detector = ComplaintRateDetector()
    day = "24h"
    warn = detector.decide(_windows(day, Counts(delivered=5000, complained=6), Counts()))
    assert (warn.firing, warn.severity) == (True, "warning")
    crit = detector.decide(_windows(day, Counts(delivered=5000, complained=20), Counts()))
    assert (crit.firing, crit.severity) == (True, "critical")
    assert not detector.decide(_windows(day, Counts(delivered=4000, complained=100), Counts())).firing
    assert detector.decide(_windows(day, Counts(delivered=10000), Counts())).resolved


def test_provider_silence_needs_steady_traffic_at_this_hour() -> None:
    """No attempt for an hour fires when every previous day had >= 20 at this hour, not with 5."""
    detector = ProviderSilentDetector()
    windows = _windows("1h", Counts(), Counts(delivered=5000))
    windows["same_hour_min"] = Counts(delivered=30)
    assert detector.decide(windows).firing
    windows["same_hour_min"] = Counts(delivered=5)
    assert not detector.decide(windows).firing
    windows = _windows("5m", Counts(delivered=1), Counts(delivered=5000))
    assert detector.decide(windows).resolved


def test_latency_and_queue_age_decisions() -> None:
    """Latency fires on a confident slow tail with volume; queue age on 20 stuck, resolving under 10."""
    latency = LatencyDetector()
    assert latency.threshold(600.0) == 1800.0 and latency.threshold(1200.0) == 2400.0
    assert latency.decide(LatencyStats(deliveries=200, slow=30)).firing
    assert not latency.decide(LatencyStats(deliveries=50, slow=50)).firing
    assert latency.decide(LatencyStats(deliveries=200, slow=0)).resolved
    queue = QueueAgeDetector()
    assert queue.decide(QueueStats(stuck=25)).firing
    assert not queue.decide(QueueStats(stuck=15)).firing
    assert not queue.decide(QueueStats(stuck=15)).resolved
    assert queue.decide(QueueStats(stuck=5)).resolved


def _counter_rows(store: Store, rows: list[tuple[float, str, str, str, str, int]]) -> None:
    keys = ("bucket", "recipient_domain", "provider", "outcome", "reason", "count")
    with store.engine.begin() as conn:
        conn.execute(counters.insert(), [
            dict(zip(keys, (int(r[0]) // 60 * 60, *r[1:]), strict=True)) | {"stream": ""}
            for r in rows
        ])  # fmt: skip


def _incidents(store: Store, kind: str) -> list[tuple[str, str, float, float | None]]:
    with store.engine.connect() as conn:
        rows = list_incidents(conn)
    return sorted((r["provider"], r["domain"], r["started_at"], r["ended_at"])
                  for r in rows if r["kind"] == kind)  # fmt: skip


def test_complaints_open_a_provider_incident_with_severity(db_url: str) -> None:
    """Yahoo: 7,200 delivered a day; 25 complaints in a day is 0.35 %: a critical incident for the
    provider, exported as mailmon_provider_complaint_ratio; a small provider's 3 of 300 stays quiet."""
    start = T0.timestamp() - 2 * 86400
    rows = []
    for m in range(2 * 1440):
        t = start + 60 * m
        rows.append((t, "yahoo.com", "yahoo", "delivered", "", 5))
        rows.append((t, "tiny.example", "other", "delivered", "", 1 if m % 10 == 0 else 0))
    rows += [(T0.timestamp() - 3600 + 60 * i, "yahoo.com", "yahoo", "complained", "", 1)
             for i in range(25)]
    rows += [(T0.timestamp() - 3600 + 60 * i, "tiny.example", "other", "complained", "", 1)
             for i in range(3)]
    with Store.open(db_url) as store:
        _counter_rows(store, [r for r in rows if r[5]])
        metrics = Metrics(CollectorRegistry(), DomainLabeler())
        engine = RollupEngine(store, ComplaintRateDetector(), gauges=metrics.rollup)
        engine.evaluate(T0.timestamp())
        assert _incidents(store, "complaint_rate") == [("yahoo", "", T0.timestamp(), None)]
        with store.engine.connect() as conn:
            (incident,) = list_incidents(conn)
        evidence = incident["evidence"]
        assert evidence["severity"] == "critical"
        assert evidence["windows"]["24h"]["complained"] == 25
        assert evidence["windows"]["24h"]["delivered"] == 7200
        assert evidence["top_reasons"] == [{"outcome": "complained", "reason": "undefined",
                                            "count": 25}]
        value = metrics.registry.get_sample_value
        assert value("mailmon_provider_complaint_ratio", {"provider": "yahoo"}) == 25 / 7200
        assert value("mailmon_provider_incident_open",
                     {"kind": "complaint_rate", "provider": "yahoo"}) == 1
        assert value("mailmon_provider_incident_open",
                     {"kind": "complaint_rate", "provider": "other"}) == 0


def test_a_provider_going_silent_opens_and_resolves(db_url: str) -> None:
    """Outlook, steady every day, stops at T0: silent incident after an hour, resolved when mail
    flows again; Apple, busy only 08:00-12:00, is quiet every afternoon without an incident."""
    start = T0.timestamp() - 8 * 86400
    stop = T0.timestamp()
    rows = []
    for m in range(8 * 1440 + 180):
        t = start + 60 * m
        if t < stop or t >= stop + 2 * HOUR:
            rows.append((t, "outlook.com", "microsoft", "delivered", "", 2))
        rows.append((t, "gmail.com", "google", "delivered", "", 3))
        if 8 <= (t % 86400) / HOUR < 12:
            rows.append((t, "icloud.com", "apple", "delivered", "", 4))
    with Store.open(db_url) as store:
        _counter_rows(store, rows)
        engine = RollupEngine(store, ProviderSilentDetector())
        list(engine.replay(stop - 6 * HOUR, stop + 3 * HOUR, 300))
        assert _incidents(store, "provider_silent") == [
            ("microsoft", "", stop + HOUR, stop + 2 * HOUR + 300)
        ]


def test_a_providers_past_stored_after_the_engine_started_still_counts(db_url: str) -> None:
    """Yandex's usual hour on the six previous days, back-filled after a live engine has
    already read those hours, still makes its silence now an incident (the baseline is not
    taken from the hours the engine kept before the back-fill)."""
    now = T0.timestamp() + 30 * 60
    with Store.open(db_url) as store:
        _counter_rows(store, [(now - 2 * HOUR, "gmail.com", "google", "delivered", "", 5)])
        engine = RollupEngine(store, ProviderSilentDetector(min_expected=1))
        engine.evaluate(now - 60)  # the hours of the last week are read and kept
        hour = now // HOUR * HOUR - HOUR
        _counter_rows(store, [(hour - day * 86400 + 1800, "yandex.ru", "yandex", "delivered", "", 1)
                              for day in range(1, 7)])  # fmt: skip
        engine.evaluate(now)
        assert [i[0] for i in _incidents(store, "provider_silent")] == ["yandex"]


def _deliveries(n: int, domain: str, provider: str, minute: float, latency: float,
                prefix: str) -> list[Event]:
    """``n`` recipients at ``domain`` submitted at ``minute`` (after T0) and delivered ``latency`` s later."""
    out = []
    for i in range(n):
        common = {"recipient": f"{prefix}{i}@{domain}", "queue_id": f"{prefix.upper()}{i:06d}",
                  "message_id": f"{prefix}{i}@app.example", "provider": provider}
        at = minute + i * 0.1
        out.append(ev("submitted", at, **common))
        out.append(ev("delivered", at + latency / 60, delay_seconds=latency, **common))
    return out


def test_latency_regression_against_the_previous_day(db_url: str) -> None:
    """Gmail delivered within a minute for a day, then 40 % take 2 hours: a latency incident with
    p50/p95 in the evidence and the gauge; Apple's 20 slow deliveries are too few to judge."""
    events = _deliveries(300, "gmail.com", "google", -20 * 60, 45, "base")
    events += _deliveries(120, "gmail.com", "google", -50, 45, "fast")
    events += _deliveries(80, "gmail.com", "google", -160, 2 * HOUR - 60, "slow")
    events += _deliveries(20, "icloud.com", "apple", -200, 3 * HOUR, "apple")
    with Store.open(db_url) as store:
        store.write(events)
        metrics = Metrics(CollectorRegistry(), DomainLabeler())
        engine = RollupEngine(store, LatencyDetector(), gauges=metrics.rollup)
        at = T0.timestamp()
        engine.evaluate(at)
        assert _incidents(store, "delivery_latency") == [("google", "", at, None)]
        with store.engine.connect() as conn:
            (incident,) = list_incidents(conn)
        latency = incident["evidence"]["latency"]
        assert (latency["deliveries"], latency["slow"]) == (200, 80)
        assert latency["p50"] == pytest.approx(45, abs=1)
        assert latency["p95"] == pytest.approx(2 * HOUR - 60, abs=1)
        assert latency["baseline_p95"] <= 60 and latency["threshold"] == 1800
        labels = {"provider": "google", "quantile": "0.95"}
        assert metrics.registry.get_sample_value(
            "mailmon_provider_delivery_latency_seconds", labels) == pytest.approx(2 * HOUR - 60, abs=1)


def _stuck(n: int, domain: str, provider: str, minute: float, prefix: str) -> list[Event]:
    return [ev("deferred", minute, recipient=f"{prefix}{i}@{domain}", provider=provider,
               queue_id=f"{prefix.upper()}{i:06d}", message_id=f"{prefix}{i}@app.example",
               reply_code=421, enhanced_status="4.7.0", reason="ratelimited",
               diagnostic="421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred")
            for i in range(n)]


def test_mail_stuck_deferred_for_hours_opens_a_queue_incident(db_url: str) -> None:
    """30 Yahoo recipients still deferred 5 h after their first attempt open a queue-age incident
    with the reply that holds them; 3 stuck at a small domain do not; delivering them resolves it."""
    with Store.open(db_url) as store:
        store.write(_stuck(30, "yahoo.com", "yahoo", 0, "y") + _stuck(3, "small.example", "other", 0, "s"))
        store.write([ev("delivered", 5 * 60 + 1, recipient="z@yahoo.com", provider="yahoo",
                        queue_id="Z1", message_id="z@app.example")])
        metrics = Metrics(CollectorRegistry(), DomainLabeler(allow=["yahoo.com"]))
        engine = RollupEngine(store, QueueAgeDetector(), gauges=metrics.rollup)
        at = (T0 + timedelta(hours=3)).timestamp()
        assert engine.evaluate(at).incidents_opened == []
        at = (T0 + timedelta(hours=5)).timestamp()
        assert engine.evaluate(at).incidents_opened == [("queue_age", "yahoo", "yahoo.com")]
        with store.engine.connect() as conn:
            (incident,) = list_incidents(conn)
        assert incident["evidence"]["queue"]["stuck"] == 30
        (reply,) = incident["evidence"]["top_replies"]
        assert (reply["enhanced_status"], reply["reason"], reply["count"]) == ("4.7.0", "ratelimited", 30)
        labels = {"provider": "yahoo", "domain": "yahoo.com"}
        value = metrics.registry.get_sample_value
        assert value("mailmon_domain_queue_stuck", labels) == 30
        assert value("mailmon_domain_queue_oldest_age_seconds", labels) == 5 * HOUR
        store.write([ev("delivered", 5 * 60 + 2, recipient=f"y{i}@yahoo.com", provider="yahoo",
                        queue_id=f"Y{i:06d}", message_id=f"y{i}@app.example") for i in range(30)])
        at = (T0 + timedelta(hours=5, minutes=5)).timestamp()
        assert engine.evaluate(at).incidents_closed == [("queue_age", "yahoo", "yahoo.com")]
        assert value("mailmon_domain_queue_stuck", labels) == 0


def test_user_unknown_bounces_count_for_bounce_rate_not_for_rejecting(db_url: str) -> None:
    """A list with 30 % dead addresses at outlook.com: a bounce-rate incident, no domain-rejecting
    one; the engine's ratio gauges pool small domains into 'other'."""
    end = T0.timestamp()
    rows = []
    for m in range(3 * 1440):
        t = end - 3 * 86400 + 60 * m
        recent = t >= end - HOUR
        rows.append((t, "outlook.com", "microsoft", "delivered", "", 7 if recent else 10))
        if recent:
            rows.append((t, "outlook.com", "microsoft", "bounced", "userunknown", 3))
        rows.append((t, f"corp{m % 3}.example", "other", "delivered", "", 1))
        if m % 7 == 0:
            rows.append((t, f"corp{m % 3}.example", "other", "deferred", "greylisting", 1))
    with Store.open(db_url) as store:
        _counter_rows(store, rows)
        metrics = Metrics(CollectorRegistry(), DomainLabeler(allow=["outlook.com"]))
        engine = RollupEngine(store, gauges=metrics.rollup)
        result = engine.evaluate(end)
        assert result.incidents_opened == [("bounce_rate", "microsoft", "outlook.com")]
        value = metrics.registry.get_sample_value
        labels = {"provider": "microsoft", "domain": "outlook.com"}
        assert value("mailmon_domain_bounce_ratio", labels) == pytest.approx(0.3)
        assert value("mailmon_domain_rejecting", labels) == 0
        assert value("mailmon_domain_incident_open", labels | {"kind": "bounce_rate"}) == 1
        assert value("mailmon_domain_incident_open", labels | {"kind": "domain_rejecting"}) == 0
        other = {"provider": "other", "domain": "other"}
        assert value("mailmon_domain_bounce_ratio", other) == 0
        deferred = value("mailmon_domain_deferral_ratio", other)
        assert deferred is not None and 0 < deferred < 0.25


def test_gauge_kinds_are_the_detectors_kinds() -> None:
    """The `kind` label's declared values are exactly the detectors' kinds, split by level."""
    from monitor.gauges import (
        DOMAIN_KINDS,
        PROVIDER_KINDS,
        SENDER_DOMAIN_KINDS,
        SENDING_IP_KINDS,
        STREAM_KINDS,
    )
    from monitor.rollup import default_detectors, level_of

    levels = {d.kind: d.level for d in default_detectors()}
    assert set(DOMAIN_KINDS) == {k for k, level in levels.items() if level == "domain"}
    assert set(PROVIDER_KINDS) == {k for k, level in levels.items() if level == "provider"}
    assert set(SENDING_IP_KINDS) == {k for k, level in levels.items() if level == "sending_ip"}
    assert set(SENDER_DOMAIN_KINDS) == {
        k for k, level in levels.items() if level == "sender_domain"
    }
    assert set(STREAM_KINDS) == {k for k, level in levels.items() if level == "stream"}
    assert set(levels) == {
        *DOMAIN_KINDS, *PROVIDER_KINDS, *SENDING_IP_KINDS, *SENDER_DOMAIN_KINDS, *STREAM_KINDS
    }
    # The engine finds a stored incident's level from its kind alone.
    for kind, level in levels.items():
        assert level_of(kind) == level
