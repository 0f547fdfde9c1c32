"""Baselines: an incident's own time does not count towards the baseline it is judged against."""

from __future__ import annotations

from datetime import timedelta

from test_rollup import ATTACK, DAY, _background, _ts

from monitor.rollup import RejectingDetector, RollupEngine, list_incidents
from monitor.store import Store
from monitor.store.schema import counters

LONG = ATTACK + timedelta(hours=8)


def _gmail_rejects_for_hours(store: Store, start: float, end: float) -> None:
    """Gmail per minute: 5 deferred (blocked), 2 bounced (spamdetected), 3 delivered."""
    rows = []
    for minute in range(int(start), int(end), 60):
        for outcome, reason, n in (("delivered", "", 3), ("deferred", "blocked", 5),
                                   ("bounced", "spamdetected", 2)):
            rows.append({"bucket": minute, "recipient_domain": "gmail.com", "provider": "google",
                         "outcome": outcome, "reason": reason, "stream": "", "count": n})
    with store.engine.begin() as conn:
        conn.execute(counters.delete().where(
            counters.c.provider == "google", counters.c.bucket >= start))
        conn.execute(counters.insert(), rows)


def test_a_long_incident_does_not_raise_its_own_baseline(db_url: str) -> None:
    """Gmail rejecting 70 % for 8 hours after 10 normal ones stays one open incident: its failures stay out of the
    baseline (counted in, the threshold would climb past the short window after ~6 h)."""
    with Store.open(db_url) as store:
        _background(store, DAY, LONG)
        _gmail_rejects_for_hours(store, _ts(ATTACK), _ts(LONG))
        engine = RollupEngine(store, RejectingDetector())
        runs = list(engine.replay(_ts(ATTACK) - 600, _ts(LONG), 300))
        with store.engine.connect() as conn:
            rows = list_incidents(conn)
    assert [(r["kind"], r["domain"], r["started_at"], r["ended_at"]) for r in rows] == [
        ("domain_rejecting", "gmail.com", _ts(ATTACK + timedelta(minutes=5)), None)
    ]
    assert all(not r.closed for r in runs)
    # The gauges still show it open at the end.
    last = [s for s in runs[-1].states if s.domain == "gmail.com"]
    assert last and last[0].open


def test_incident_counts_from_hours_equal_a_minute_scan(db_url: str) -> None:
    """The incident time taken out of each window's baseline, read from settled hours plus
    ragged minute edges, equals a plain scan of the minute buckets inside the spans."""
    from monitor.rollup.windows import BASELINE_SECONDS, SHORT, WINDOWS, WindowReader

    with Store.open(db_url) as store:
        _background(store, DAY - timedelta(days=2), LONG)
        _gmail_rejects_for_hours(store, _ts(ATTACK), _ts(LONG))
        end = _ts(LONG) - 7 * 60
        spans = [(_ts(DAY - timedelta(hours=30, minutes=17)), _ts(DAY - timedelta(hours=20))),
                 (_ts(ATTACK) - 300, end)]  # fmt: skip
        key = ("google", "gmail.com")
        reader = WindowReader()
        with store.engine.connect() as conn:
            reader.read(conn, end)
            found, seconds = reader.incident_counts(conn, {key: spans}, end)
            rows = list(conn.execute(
                counters.select().where(counters.c.provider == "google",
                                        counters.c.recipient_domain == "gmail.com")))
    lo = end - BASELINE_SECONDS
    for name, width in WINDOWS.items():
        stop = end - max(width, WINDOWS[SHORT])
        inside = [r for r in rows if lo <= r.bucket < stop
                  and any(a <= r.bucket < b for a, b in spans)]  # fmt: skip
        got = found[key][name]
        assert got.attempts == sum(r.count for r in inside if r.outcome != "complained"), name
        assert got.rejecting == sum(r.count for r in inside if r.reason in ("blocked", "spamdetected")), name
    assert seconds[key] == (_ts(DAY - timedelta(hours=20)) - _ts(DAY - timedelta(hours=30, minutes=17))) + (
        end - WINDOWS[SHORT] - (_ts(ATTACK) - 300))
