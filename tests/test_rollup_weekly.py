"""Same-hour-of-week baselines: a weekly batch is usual at its hour, a real change is not."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from monitor.rollup import (
    RejectingDetector,
    RollupEngine,
    SenderDomainRejectingDetector,
    list_incidents,
)
from monitor.rollup.windows import WEEKLY, WEEKLY_MIN
from monitor.store import Store
from monitor.store.schema import counters, sender_counters

FIRST = datetime(2026, 2, 2, tzinfo=UTC)  # a Monday; four Mondays of history before MONDAY
MONDAY = datetime(2026, 3, 2, tzinfo=UTC)
DOMAIN = "batch.example"


def _row(at: datetime, outcome: str, count: int, reason: str = "", domain: str = DOMAIN) -> dict:
    return {"bucket": int(at.timestamp()) // 60 * 60, "recipient_domain": domain,
            "provider": "other", "outcome": outcome, "reason": reason, "stream": "",
            "count": count}  # fmt: skip


def _batch(start: datetime, deferred: int, reason: str = "ratelimited",
           domain: str = DOMAIN) -> list[dict]:  # fmt: skip
    """A 30-minute batch: 30 attempts a minute, ``deferred`` of them refused for ``reason``."""
    rows = []
    for minute in range(30):
        at = start + timedelta(minutes=minute)
        rows += [_row(at, "delivered", 30 - deferred, domain=domain),
                 _row(at, "deferred", deferred, reason, domain=domain)]  # fmt: skip
    return rows


def _history(hourly: int, domain: str = DOMAIN, *, batches: bool = True) -> list[dict]:
    """Four weeks and two days of steady traffic (``hourly`` deliveries an hour, 1 % blocked,
    at the hour's last minute), with the Monday 09:00 batch every week: 40 % rate-limited."""
    rows = []
    at = FIRST
    while at < MONDAY + timedelta(days=2):
        last = at + timedelta(minutes=59)
        rows += [_row(last, "delivered", hourly, domain=domain),
                 _row(last, "deferred", hourly // 100, "blocked", domain=domain)]  # fmt: skip
        if batches and at.weekday() == 0 and at.hour == 9 and at < MONDAY:
            rows += _batch(at, 12, domain=domain)
        at += timedelta(hours=1)
    return rows


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        with s.engine.begin() as conn:
            conn.execute(counters.insert(), _history(600))
        yield s


def _write(store: Store, rows: list[dict]) -> None:
    with store.engine.begin() as conn:
        conn.execute(counters.insert(), rows)


def _opened(store: Store, at: datetime, **engine: int) -> list[tuple[str, str, str]]:
    return RollupEngine(store, RejectingDetector(), **engine).evaluate(at.timestamp()).incidents_opened


def test_the_weekly_batch_does_not_fire_at_its_hour(store: Store) -> None:
    """This Monday's 09:00 batch, 40 % rate-limited like every Monday, opens no incident."""
    _write(store, _batch(MONDAY + timedelta(hours=9), 12))
    assert _opened(store, MONDAY + timedelta(hours=9, minutes=10)) == []
    with store.engine.connect() as conn:
        assert list_incidents(conn) == []


def test_the_trailing_week_alone_would_fire_on_it(store: Store) -> None:
    """Without the same-hour baseline (weeks=0) the batch is far above the week's 1 %: it
    fires, which is what the weekly baseline prevents."""
    _write(store, _batch(MONDAY + timedelta(hours=9), 12))
    assert _opened(store, MONDAY + timedelta(hours=9, minutes=10), weeks=0) == [
        ("domain_rejecting", "other", DOMAIN)
    ]


def test_a_worse_monday_batch_still_fires(store: Store) -> None:
    """This Monday the batch is 90 % blocked, not the usual 40 %: a real change fires, and
    the evidence says the same-hour baseline judged it."""
    _write(store, _batch(MONDAY + timedelta(hours=9), 27, "blocked"))
    at = MONDAY + timedelta(hours=9, minutes=10)
    assert _opened(store, at) == [("domain_rejecting", "other", DOMAIN)]
    with store.engine.connect() as conn:
        (incident,) = list_incidents(conn)
    evidence = incident["evidence"]
    assert evidence["baseline"] == "weekly"
    # Four Mondays' 09:00 hours: 4 x (30 x 12 deferred + 6 blocked) of 4 x (900 + 606).
    assert evidence["baseline_share"] == pytest.approx(366 / 1506, abs=1e-6)
    assert evidence["windows"][WEEKLY]["attempts"] == 4 * 1506


def test_the_same_batch_on_a_tuesday_fires(store: Store) -> None:
    """The Monday pattern on a Tuesday is not usual at that hour: it fires."""
    tuesday = MONDAY + timedelta(days=1)
    _write(store, _batch(tuesday + timedelta(hours=9), 12))
    at = tuesday + timedelta(hours=9, minutes=10)
    assert _opened(store, at) == [("domain_rejecting", "other", DOMAIN)]
    with store.engine.connect() as conn:
        (incident,) = list_incidents(conn)
    assert incident["evidence"]["baseline"] == "weekly"
    assert incident["evidence"]["baseline_share"] == pytest.approx(6 / 606, abs=1e-6)


def test_thin_same_hour_slots_fall_back_to_the_trailing_week(db_url: str) -> None:
    """At 60 attempts an hour (no batch before) the same-hour slots are too thin to say what
    is usual: the trailing week decides, and a first batch, far above it, fires."""
    with Store.open(db_url) as store:
        rows = _history(60, "small.example", batches=False)
        _write(store, rows + _batch(MONDAY + timedelta(hours=9), 12, domain="small.example"))
        at = MONDAY + timedelta(hours=9, minutes=10)
        assert RollupEngine(store, RejectingDetector()).evaluate(at.timestamp()).incidents_opened
        with store.engine.connect() as conn:
            (incident,) = list_incidents(conn)
    assert incident["evidence"]["baseline"] == "7d"
    assert incident["evidence"]["windows"][WEEKLY_MIN]["attempts"] < 200


def test_an_incident_hour_is_left_out_of_the_weekly_baseline(store: Store) -> None:
    """Last Monday's batch met a real block (an incident): that hour does not teach the
    baseline that blocks are usual at 09:00.  With two weeks asked for and one left, the
    trailing week decides and the same block this Monday fires; were last Monday's hour
    counted, the pooled 53 % would hide it."""
    def block(start: datetime) -> list[dict]:
        """On top of the usual batch, 60 more a minute refused: 72 of 90 attempts."""
        return [_row(start + timedelta(minutes=m), "deferred", 60, "badreputation")
                for m in range(30)]  # fmt: skip

    last = MONDAY - timedelta(days=7) + timedelta(hours=9)
    _write(store, block(last))
    before = RollupEngine(store, RejectingDetector(), weeks=0)
    assert before.evaluate((last + timedelta(minutes=10)).timestamp()).incidents_opened
    assert before.evaluate((last + timedelta(hours=2)).timestamp()).incidents_closed
    now = MONDAY + timedelta(hours=9)
    _write(store, _batch(now, 12) + block(now))
    at = (now + timedelta(minutes=10)).timestamp()
    opened = RollupEngine(store, RejectingDetector(), weeks=2).evaluate(at).incidents_opened
    assert opened == [("domain_rejecting", "other", DOMAIN)]
    with store.engine.connect() as conn:
        (incident,) = [i for i in list_incidents(conn) if i["started_at"] == at]
    assert incident["evidence"]["baseline"] == "7d"
    # The contrast: without last Monday's incident on record the block looks usual.
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM incidents")
    assert RollupEngine(store, RejectingDetector(), weeks=2).evaluate(at).incidents_opened == []


def _as_sender(rows: list[dict]) -> list[dict]:
    """The same traffic as one sending domain's sender_counters rows."""
    return [{"bucket": r["bucket"], "dimension": "sender_domain", "value": "news.example",
             "provider": r["provider"], "outcome": r["outcome"], "reason": r["reason"],
             "hard": "", "blame": "", "ndr": 0, "count": r["count"]} for r in rows]  # fmt: skip


def test_sender_levels_judge_against_the_same_hour_of_week_too(db_url: str) -> None:
    """A sending domain's Monday 09:00 batch is usual at its hour as a recipient domain's is:
    no incident with the weekly baseline, one without it."""
    with Store.open(db_url) as store:
        with store.engine.begin() as conn:
            rows = _history(600) + _batch(MONDAY + timedelta(hours=9), 12)
            conn.execute(sender_counters.insert(), _as_sender(rows))
        at = (MONDAY + timedelta(hours=9, minutes=10)).timestamp()
        detector = SenderDomainRejectingDetector()
        assert RollupEngine(store, detector).evaluate(at).incidents_opened == []
        assert RollupEngine(store, detector, weeks=0).evaluate(at).incidents_opened == [
            ("sender_domain_rejecting", "other", "news.example")
        ]
