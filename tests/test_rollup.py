"""Rollup engine: windows from counters, the *domain starts rejecting* detector, incidents, gauges."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from factories import downgrade, ev
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.gauges import DomainLabeler
from monitor.metrics import Metrics
from monitor.model import Event
from monitor.rollup import RejectingDetector, RollupEngine, level_of, list_incidents, wilson
from monitor.rollup.windows import window_counts
from monitor.service.app import create_app
from monitor.store import Store
from monitor.store.schema import counters

DAY = datetime(2026, 3, 4, tzinfo=UTC)  # the factories' T0 is 10:00 on this day
ATTACK = DAY + timedelta(hours=10, minutes=40)  # Gmail starts answering 421 4.7.28 / 550 5.7.1
RECOVERY = DAY + timedelta(hours=11, minutes=20)
END = DAY + timedelta(hours=12)


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _background(store: Store, start: datetime, end: datetime) -> None:
    """Normal traffic as counters: Gmail 10 and Outlook 6 deliveries a minute, a rare deferral."""
    rows = []
    minute = int(_ts(start)) // 60 * 60
    while minute < _ts(end):
        rows.append((minute, "gmail.com", "google", "delivered", "", 10))
        rows.append((minute, "outlook.com", "microsoft", "delivered", "", 6))
        if minute % 3600 == 0:
            rows.append((minute, "gmail.com", "google", "deferred", "blocked", 1))
        minute += 60
    keys = ("bucket", "recipient_domain", "provider", "outcome", "reason", "count")
    with store.engine.begin() as conn:
        conn.execute(counters.insert(), [dict(zip(keys, r, strict=True)) | {"stream": ""} for r in rows])


def _gmail_events(start: datetime, end: datetime, *, rejecting: bool = True) -> list[Event]:
    """Gmail per minute: 5 deferred 421 4.7.28 (blocked), 2 bounced 550 5.7.1 (spamdetected), 3 delivered."""
    out = []
    at = start
    n = 0 if rejecting else 1_000_000
    while at < end:
        minutes = (at - ev("delivered").occurred_at).total_seconds() / 60
        for i in range(10):
            n += 1
            common = {"recipient": f"user{n}@gmail.com", "queue_id": f"Q{n:08d}",
                      "message_id": f"m{n}@app.example", "provider": "google"}
            if not rejecting:
                out.append(ev("delivered", minutes, **common))
            elif i < 5:
                out.append(ev("deferred", minutes, reply_code=421, enhanced_status="4.7.28",
                              diagnostic="421-4.7.28 Gmail has detected an unusual rate of unsolicited mail",
                              reason="blocked", **common))
            elif i < 7:
                out.append(ev("bounced", minutes, reply_code=550, enhanced_status="5.7.1",
                              diagnostic="550-5.7.1 This message is likely suspicious",
                              reason="spamdetected", hard=False, **common))
            else:
                out.append(ev("delivered", minutes, **common))
        at += timedelta(minutes=1)
    return out


def _noise() -> list[Event]:
    """What must stay quiet: 3 userunknown bounces at a small domain, one typo'd address at 3 a.m."""
    t0 = ev("delivered").occurred_at
    three_am = (DAY + timedelta(hours=3) - t0).total_seconds() / 60
    return [
        *(ev("bounced", 45 + i, recipient=f"gone{i}@small.example", queue_id=f"S{i}",
             provider="other", reason="userunknown", hard=True, reply_code=550,
             enhanced_status="5.1.1") for i in range(3)),
        ev("bounced", three_am, recipient="bob@gmial.com", queue_id="T1", provider="other",
           reason="hostunknown", hard=True),
        ev("bounced", three_am, recipient="alcie@gmail.com", queue_id="T2", provider="google",
           reason="userunknown", hard=True, reply_code=550, enhanced_status="5.1.1"),
        *(ev("deferred", 50 + i, recipient=f"x{i}@tiny.example", queue_id=f"B{i}", provider="other",
             reason="blocked", reply_code=554) for i in range(3)),  # 3 of 3 blocked: too few to judge
    ]


def _scenario(store: Store, until: datetime = END) -> list[Event]:
    """A day of normal traffic, then Gmail rejecting from 10:40 to 11:20, then normal again."""
    _background(store, DAY - timedelta(days=1), until)
    # Background Gmail traffic stops where the event-level Gmail traffic takes over.
    with store.engine.begin() as conn:
        conn.execute(counters.delete().where(
            counters.c.provider == "google", counters.c.bucket >= _ts(ATTACK)))
    events = _gmail_events(ATTACK, RECOVERY)
    events += _gmail_events(RECOVERY, END, rejecting=False)
    events += _noise()
    return [e for e in events if e.timestamp < _ts(until)]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        s.write(_scenario(s))
        yield s


def _subjects(store: Store) -> list[tuple[str, str, str, float, float | None]]:
    with store.engine.connect() as conn:
        rows = list_incidents(conn)
    return sorted((r["kind"], r["provider"], r["domain"], r["started_at"], r["ended_at"]) for r in rows)


def test_wilson_interval_matches_known_values() -> None:
    """The 95 % Wilson interval of 35/50 and 0/50 matches the textbook figures."""
    lo, hi = wilson(35, 50)
    assert (round(lo, 3), round(hi, 3)) == (0.562, 0.809)
    assert wilson(0, 50)[1] == pytest.approx(0.0713, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def test_detector_needs_volume_and_a_lower_bound_above_the_threshold() -> None:
    """3 of 3 blocked stays quiet (too few attempts); 35 of 50 fires; 0 of 50 resolves."""
    from monitor.rollup.windows import BASELINE, WINDOWS, Counts, with_baselines

    def windows(rejecting: int, delivered: int) -> dict[str, Counts]:
        out = {name: Counts(delivered=delivered, deferred=rejecting, rejecting=rejecting)
               for name in WINDOWS}
        return with_baselines(out | {BASELINE: Counts(delivered=10_000, deferred=10, rejecting=10)})

    detector = RejectingDetector()
    assert not detector.decide(windows(3, 0)).firing
    assert detector.decide(windows(35, 15)).firing
    assert detector.decide(windows(0, 50)).resolved
    assert not detector.decide(windows(3, 47)).resolved  # upper bound still above 10 %


def test_gmail_rejecting_opens_and_closes_one_incident(store: Store) -> None:
    """Replaying the day opens one Gmail incident at 10:45 with its evidence and ends it at 11:25."""
    engine = RollupEngine(store, RejectingDetector())
    list(engine.replay(_ts(DAY), _ts(END), 300))
    subjects = _subjects(store)
    assert subjects == [("domain_rejecting", "google", "gmail.com",
                         _ts(ATTACK + timedelta(minutes=5)), _ts(RECOVERY + timedelta(minutes=5)))]
    with store.engine.connect() as conn:
        (incident,) = list_incidents(conn)
    evidence = incident["evidence"]
    short = evidence["windows"]["5m"]
    assert (short["attempts"], short["rejecting"], short["deferred"], short["bounced"]) == (50, 35, 25, 10)
    assert short["rejecting_share"] == 0.7
    assert evidence["windows"]["baseline"]["attempts"] > 10_000
    assert evidence["wilson_lower"] > evidence["threshold"] == 0.1
    assert evidence["detector"] == {"min_attempts": 20, "min_attempts_15m": 15, "min_attempts_1h": 30,
                                    "factor": 3.0, "floor": 0.1, "weekly_min": 200}
    assert evidence["baseline"] == "7d"  # one day of history: no same-hour weeks yet
    assert evidence["value"] == 0.7 and evidence["baseline_excluded_seconds"] == 0
    assert [r["reason"] for r in evidence["top_reasons"][:2]] == ["blocked", "spamdetected"]
    assert evidence["top_replies"][0]["enhanced_status"] == "4.7.28"
    assert evidence["top_replies"][0]["count"] == 25
    assert evidence["resolution"]["windows"]["5m"]["rejecting"] == 0


def test_small_domains_and_typos_stay_quiet(store: Store) -> None:
    """userunknown bounces at a small domain, a 3 a.m. typo and 3-of-3 blocks open no incident."""
    engine = RollupEngine(store)
    list(engine.replay(_ts(DAY), _ts(END), 300))
    found = _subjects(store)
    assert {s[2] for s in found if level_of(s[0]) == "domain"} == {"gmail.com"}
    # The one sending domain Gmail refuses; the noise's sender at small domains stays quiet.
    assert {s[:3] for s in found if level_of(s[0]) != "domain"} == {
        ("sender_domain_rejecting", "google", "app.example"), ("provider_rejecting", "google", "")
    }
    with store.engine.connect() as conn:
        table = window_counts(conn, _ts(DAY + timedelta(hours=10, minutes=55)))
    assert table[("other", "tiny.example")]["5m"].rejecting == 3
    assert table[("other", "small.example")]["1h"].rejecting == 0


def test_gauges_follow_the_incident(store: Store) -> None:
    """mailmon_domain_rejecting is 1 while the incident is open and 0 after; others pool as 'other'."""
    metrics = Metrics(CollectorRegistry(), DomainLabeler(allow=["gmail.com"]))
    engine = RollupEngine(store, gauges=metrics.rollup)
    labels = {"provider": "google", "domain": "gmail.com"}
    engine.evaluate(_ts(ATTACK + timedelta(minutes=5)))
    value = metrics.registry.get_sample_value
    assert value("mailmon_domain_rejecting", labels) == 1
    assert value("mailmon_domain_rejecting_ratio", labels) == 0.7
    assert value("mailmon_domain_rejecting", {"provider": "microsoft", "domain": "other"}) == 0
    for family in metrics.registry.collect():
        if family.name.startswith("mailmon_domain_rejecting"):
            assert {s.labels["domain"] for s in family.samples} <= {"gmail.com", "other"}
    engine.evaluate(_ts(RECOVERY + timedelta(minutes=5)))
    assert value("mailmon_domain_rejecting", labels) == 0
    assert value("mailmon_domain_rejecting_ratio", labels) == 0


def test_evaluation_is_idempotent(store: Store) -> None:
    """Evaluating the same time twice, or replaying the period twice, never duplicates incidents."""
    engine = RollupEngine(store, RejectingDetector())
    at = _ts(ATTACK + timedelta(minutes=5))
    assert engine.evaluate(at).opened == [("google", "gmail.com")]
    assert engine.evaluate(at).opened == []
    list(engine.replay(_ts(DAY), _ts(END), 300))
    first = _subjects(store)
    list(engine.replay(_ts(DAY), _ts(END), 300))
    assert _subjects(store) == first and len(first) == 1


def _outlook_throttles(store: Store, start: datetime, minutes: int) -> None:
    """Outlook adds 4 deferrals a minute for ratelimited (40 % of attempts) for ``minutes``."""
    rows = [{"bucket": int(_ts(start)) + 60 * m, "recipient_domain": "outlook.com",
             "provider": "microsoft", "outcome": "deferred", "reason": "ratelimited",
             "stream": "", "count": 4} for m in range(minutes)]
    with store.engine.begin() as conn:
        conn.execute(counters.insert(), rows)


def _four_days(store: Store) -> list[Event]:
    """Four days of traffic: Gmail rejects on day 1 at 10:40, Outlook throttles on day 4 at 03:00."""
    events = _scenario(store, until=DAY + timedelta(days=4))
    _outlook_throttles(store, DAY + timedelta(days=3, hours=3), 30)
    return events


def test_live_and_replay_find_the_same_incidents(tmp_path: Path) -> None:
    """Four days evaluated live, as traffic arrives, find the same incidents as a replay of the back-fill."""
    live_url, replay_url = (f"sqlite:///{tmp_path}/{name}.db" for name in ("live", "replay"))
    stop = _ts(DAY + timedelta(days=4))
    with Store.open(replay_url) as replay:
        replay.write(_four_days(replay))
        list(RollupEngine(replay).replay(_ts(DAY), stop, 300))
        expected = _subjects(replay)
    rejecting = [s for s in expected if s[0] == "domain_rejecting"]
    assert [(s[1], s[3]) for s in rejecting] == [
        ("google", _ts(ATTACK + timedelta(minutes=5))),
        ("microsoft", _ts(DAY + timedelta(days=3, hours=3, minutes=5))),
    ]
    assert all(s[4] is not None for s in rejecting)
    # The other detectors see the same two episodes; Gmail's 200 deferred recipients are
    # never retried in this traffic, so after 4 hours they are stuck in the queue for good.
    throttle = DAY + timedelta(days=3, hours=3)
    assert [(s[0], s[2], s[3], s[4]) for s in expected if s[0] != "domain_rejecting"] == [
        ("bounce_rate", "gmail.com", _ts(ATTACK + timedelta(minutes=20)),
         _ts(RECOVERY + timedelta(minutes=55))),
        ("deferral_spike", "gmail.com", _ts(ATTACK + timedelta(minutes=10)),
         _ts(RECOVERY + timedelta(minutes=10))),
        ("deferral_spike", "outlook.com", _ts(throttle + timedelta(minutes=15)),
         _ts(throttle + timedelta(minutes=40))),
        # Google and Microsoft as providers: the sum of their domains, here one each, so
        # judged as that domain is.
        ("provider_rejecting", "", _ts(ATTACK + timedelta(minutes=5)),
         _ts(RECOVERY + timedelta(minutes=5))),
        ("provider_rejecting", "", _ts(throttle + timedelta(minutes=5)), rejecting[1][4]),
        ("queue_age", "gmail.com", _ts(ATTACK + timedelta(hours=4, minutes=5)), None),
        # All of Gmail's attempts come from app.example: its sending domain is refused too.
        ("sender_domain_rejecting", "app.example", _ts(ATTACK + timedelta(minutes=5)),
         _ts(RECOVERY + timedelta(minutes=5))),
    ]
    with Store.open(live_url) as live:
        # Counters written directly (background, throttling) are in place up front: a window
        # ending at ``at`` never reads buckets at or after it, so only the events need pacing.
        events = sorted(_four_days(live), key=lambda e: e.timestamp)
        engine = RollupEngine(live)
        at, i = _ts(DAY), 0
        while at <= stop:
            j = i
            while j < len(events) and events[j].timestamp < at:
                j += 1
            live.write(events[i:j])
            i = j
            engine.evaluate(at)
            at += 300
        assert _subjects(live) == expected


def test_schema_2_database_gets_the_incidents_table(db_url: str) -> None:
    """A version-2 database (no incidents table) is migrated to the latest on open and the engine runs."""
    Store.open(db_url).close()
    downgrade(db_url, 2)
    with Store.open(db_url) as store:
        store.write(_scenario(store))
        assert RollupEngine(store).evaluate(_ts(ATTACK + timedelta(minutes=5))).opened


def test_cli_rollup_and_incidents_json(store: Store, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`mailmon rollup --from --to --step 5m` records the incidents; `mailmon incidents --json` shows them."""
    assert main(["rollup", "--db", db_url, "--from", DAY.isoformat(), "--to", END.isoformat(),
                 "--step", "5m", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    iso = [(ATTACK + timedelta(minutes=m)).isoformat() for m in (5, 10, 20)]
    assert [(r["at"], r["opened"]) for r in runs if r["opened"]] == [
        (iso[0], [["domain_rejecting", "google", "gmail.com"],
                  ["provider_rejecting", "google", ""],
                  ["sender_domain_rejecting", "google", "app.example"]]),
        (iso[1], [["deferral_spike", "google", "gmail.com"]]),
        (iso[2], [["bounce_rate", "google", "gmail.com"]]),
    ]
    assert main(["incidents", "--db", db_url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    (incident,) = [r for r in rows if r["kind"] == "domain_rejecting"]
    assert (incident["provider"], incident["domain"]) == ("google", "gmail.com")
    assert incident["started_at"] == (ATTACK + timedelta(minutes=5)).isoformat()
    assert incident["ended_at"] == (RECOVERY + timedelta(minutes=5)).isoformat()
    assert sorted(r["kind"] for r in rows) == [
        "bounce_rate", "deferral_spike", "domain_rejecting", "provider_rejecting",
        "sender_domain_rejecting"
    ]
    # At 12:00 the last hour still holds 20 minutes of Gmail's 40 % bounces: still open.
    assert main(["incidents", "--db", db_url, "--open", "--json"]) == 0
    assert [(r["kind"], r["domain"]) for r in json.loads(capsys.readouterr().out)] == [
        ("bounce_rate", "gmail.com")
    ]
    assert main(["incidents", "--db", db_url, "--kind", "deferral_spike", "--json"]) == 0
    assert [r["kind"] for r in json.loads(capsys.readouterr().out)] == ["deferral_spike"]
    assert main(["incidents", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "gmail.com" in out and "70%" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_api_incidents_over_a_real_socket(store: Store) -> None:
    """GET /api/incidents lists the open incident with its evidence; ?open=1 filters."""
    RollupEngine(store).evaluate(_ts(ATTACK + timedelta(minutes=5)))
    port = _free_port()
    app = create_app(Metrics(CollectorRegistry()), store=store)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        everything = httpx.get(f"http://127.0.0.1:{port}/api/incidents?open=1", timeout=5).json()
        # Gmail as a provider, its recipient domain and the one sending domain it refuses.
        assert sorted((i["domain"], i["ended_at"]) for i in everything) == [
            ("", None), ("app.example", None), ("gmail.com", None)
        ]
        body = [i for i in everything if i["kind"] == "domain_rejecting"]
        assert [i["domain"] for i in body] == ["gmail.com"]
        assert body[0]["evidence"]["windows"]["5m"]["rejecting"] == 35
        assert httpx.get(f"http://127.0.0.1:{port}/api/incidents?kind=domain_rejecting",
                         timeout=5).json() == body
        assert httpx.get(f"http://127.0.0.1:{port}/api/incidents?kind=queue_age",
                         timeout=5).json() == []
        bad = httpx.get(f"http://127.0.0.1:{port}/api/incidents?since=yesterday", timeout=5)
        assert bad.status_code == 400
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_rollup_config_section_is_strict(tmp_path: Path) -> None:
    """[rollup] has defaults 60 s / 20 / 3.0 / 0.10 and rejects unknown keys."""
    from monitor.config import load_config
    from monitor.errors import ConfigError

    config = load_config(None)
    assert (config.rollup.interval_seconds, config.rollup.min_attempts,
            config.rollup.factor, config.rollup.floor) == (60, 20, 3.0, 0.10)
    path = tmp_path / "m.toml"
    path.write_text("[rollup]\nwindow = 5\n")
    with pytest.raises(ConfigError, match=r"rollup\.window"):
        load_config(path)


def test_window_reader_equals_a_full_scan(store: Store) -> None:
    """The incremental reader gives the full scan's counts at every step, also after jumping back."""
    from monitor.rollup.windows import WindowReader

    reader = WindowReader()
    times = [_ts(DAY) + step * 300 for step in range(0, 12 * 12 + 1, 7)]
    with store.engine.connect() as conn:
        for at in [*times, times[3], *times[4:9]]:
            assert reader.read(conn, at) == window_counts(conn, at), at


def test_serve_runs_the_engine_and_exports_the_gauge(tmp_path: Path) -> None:
    """`mailmon serve` evaluates at the newest event time: the gauge is 1 and the API lists the incident."""
    import subprocess
    import sys

    db = f"sqlite:///{tmp_path / 'm.db'}"
    with Store.open(db) as store:
        store.write(_scenario(store, until=ATTACK + timedelta(minutes=10)))
    port = _free_port()
    config = tmp_path / "mailmon.toml"
    config.write_text(f'[database]\nurl = "{db}"\n[service]\nlisten_port = {port}\n'
                      '[metrics]\ndomains = ["gmail.com"]\n[rollup]\ninterval_seconds = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    want = 'mailmon_domain_rejecting{domain="gmail.com",provider="google"} 1.0'
    try:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                text = httpx.get(f"{base}/metrics", timeout=1).text
            if want in text:
                break
            time.sleep(0.2)
        assert want in text
        found = httpx.get(f"{base}/api/incidents", timeout=5).json()
        # Gmail the domain and Google the provider (its one domain here), at the same time.
        assert sorted((i["kind"], i["domain"]) for i in found) == [
            ("domain_rejecting", "gmail.com"), ("provider_rejecting", "")
        ]
        for incident in found:
            assert incident["started_at"] == (ATTACK + timedelta(minutes=9)).isoformat()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
