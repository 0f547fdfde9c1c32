"""The boundary of issue 16 part 3: a domain at exactly 20 attempts per 5 minutes pages
within 5 minutes, even when the minutes after it starts rejecting hold fewer than 20."""

from __future__ import annotations

from pathlib import Path

from monitor.rollup import RejectingDetector, RollupEngine, list_incidents
from monitor.rollup.share import near
from monitor.rollup.windows import BASELINE, WINDOWS, Counts, with_baselines
from monitor.store import Store
from monitor.store.schema import counters

#: 2026-03-04T09:00:00Z: the first minute Yahoo refuses.
T = 1_772_614_800
#: The first five minutes of refusals: (attempts, refused) per minute, 17 and 10 in all
#: (a domain at 4 a minute has 17 or fewer in one 5-minute window out of four).
EPISODE = [(4, 2), (4, 2), (3, 2), (3, 2), (3, 2)]


def _rows() -> list[dict[str, object]]:
    """yahoo.com at 4 attempts a minute, all delivered, for two hours; then ``EPISODE``."""
    rows: list[dict[str, object]] = []
    minutes = [(T - 120 * 60 + 60 * i, 4, 0) for i in range(120)]
    minutes += [(T + 60 * i, n, k) for i, (n, k) in enumerate(EPISODE)]
    for bucket, n, k in minutes:
        row = {"bucket": bucket, "recipient_domain": "yahoo.com", "provider": "yahoo",
               "stream": ""}  # fmt: skip
        rows.append(row | {"outcome": "delivered", "reason": "", "count": n - k})
        if k:
            rows.append(row | {"outcome": "deferred", "reason": "badreputation", "count": k})
    return rows


def test_twenty_per_five_minutes_pages_within_five_minutes_on_a_quiet_window(
    tmp_path: Path,
) -> None:
    """Yahoo at 240 an hour whose first refusing 5 minutes hold 17 attempts, 10 refused,
    opens its incident within 5 minutes (before: no 5-minute window reached 20 attempts, so
    the 15-minute one judged, diluted by the clean minutes before, and opened later)."""
    with Store.open(f"sqlite:///{tmp_path}/boundary.db") as store:
        with store.engine.begin() as conn:
            conn.execute(counters.insert(), _rows())
        engine = RollupEngine(store, RejectingDetector(), weeks=0)
        for at in range(T - 600, T + 5 * 60 + 1, 60):
            engine.evaluate(at)
        with store.engine.connect() as conn:
            (incident,) = list_incidents(conn)
    assert (incident["kind"], incident["domain"]) == ("domain_rejecting", "yahoo.com")
    assert incident["started_at"] - T <= 300
    evidence = incident["evidence"]
    assert evidence["window"] == "5m" and evidence["confidence"] == 0.99
    assert evidence["windows"]["5m"]["attempts"] < 20  # below min_attempts


def _windows(short: Counts, hour_attempts: int) -> dict[str, Counts]:
    """``short`` in the last 5 minutes, clean attempts before it up to ``hour_attempts``."""
    clean = Counts(delivered=hour_attempts - short.attempts)
    out = {"5m": short}
    for name in WINDOWS:
        if name != "5m":
            out[name] = short + clean
    return with_baselines(out | {BASELINE: Counts(delivered=10_000, deferred=10, rejecting=10)})


def test_the_five_minute_window_judges_below_its_minimum_only_near_its_rate() -> None:
    """At the default 20: 12 attempts in 5 minutes and 210 in the hour still fit a domain at
    20 per 5 minutes (judged at the 99 % bound); 11, or 209 in the hour, do not."""
    assert (near(20), near(240)) == (12, 210)
    detector = RejectingDetector()
    refused = Counts(delivered=4, deferred=8, rejecting=8)  # 8 of 12
    judged = detector.decide(_windows(refused, 210))
    assert judged.firing and judged.window == "5m" and judged.confidence == 0.99
    assert detector.decide(_windows(refused, 209)).window == "15m"
    fewer = Counts(delivered=3, deferred=8, rejecting=8)  # 8 of 11
    assert detector.decide(_windows(fewer, 240)).window == "15m"
    # At its minimum the 5-minute window judges at 95 %, as before.
    full = detector.decide(_windows(Counts(delivered=15, deferred=5, rejecting=5), 240))
    assert full.window == "5m" and full.confidence == 0.95 and full.firing
    # Weak evidence in a short window does not fire at 99 %: 4 of 15 (95 % would).
    weak = detector.decide(_windows(Counts(delivered=11, deferred=4, rejecting=4), 240))
    assert weak.window == "5m" and not weak.firing
