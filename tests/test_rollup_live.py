"""The live service's evaluation times: event time, moved on by the wall clock while the log is quiet."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from test_rollup import ATTACK, DAY, _background, _gmail_events, _ts

from monitor.rollup import LiveClock, RollupEngine, list_incidents
from monitor.store import Store
from monitor.store.schema import counters

QUIET = ATTACK + timedelta(minutes=2)  # the log's last line is in the minute before this


def test_clock_follows_the_newest_bucket_while_events_arrive() -> None:
    """With events arriving, the clock evaluates once per new newest bucket, on the grid."""
    clock = LiveClock(grid_seconds=60)
    assert clock.next_at(None, 0.0) is None
    assert clock.next_at(6000.0, 0.0) == 6000.0
    assert clock.next_at(6000.0, 50.0) is None  # same bucket, within the grace
    assert clock.next_at(6060.0, 55.0) == 6060.0
    assert clock.next_at(6120.0, 118.0) == 6120.0


def test_clock_moves_event_time_on_while_the_log_is_quiet() -> None:
    """After the grace, a quiet log's event time advances with the monotonic clock, never backwards."""
    clock = LiveClock(grid_seconds=300, grace_seconds=60)
    assert clock.next_at(9000.0, 100.0) == 9000.0
    assert clock.next_at(9000.0, 100.0 + 60 + 299) is None
    assert clock.next_at(9000.0, 100.0 + 60 + 300) == 9300.0
    assert clock.next_at(9000.0, 100.0 + 60 + 3600) == 12600.0
    # A late event older than the time already judged: nothing until time passes it.
    assert clock.next_at(9060.0, 4000.0) is None
    with pytest.raises(ValueError):
        LiveClock(grid_seconds=90)


@pytest.fixture
def quiet_store(db_url: str) -> Iterator[Store]:
    """Normal traffic, then Gmail rejects for two minutes, then the log goes quiet."""
    with Store.open(db_url) as s:
        _background(s, DAY - timedelta(days=1), QUIET)
        with s.engine.begin() as conn:
            conn.execute(counters.delete().where(
                counters.c.provider == "google", counters.c.bucket >= _ts(ATTACK)))
        s.write(_gmail_events(ATTACK, QUIET))
        yield s


def _rejecting(store: Store) -> list[tuple[float, float | None]]:
    with store.engine.connect() as conn:
        rows = list_incidents(conn)
    return [(r["started_at"], r["ended_at"]) for r in rows if r["kind"] == "domain_rejecting"]


def test_quiet_log_opens_and_resolves_an_incident(quiet_store: Store) -> None:
    """The rejections of the log's last minute open an incident once the log is quiet, and a
    domain that stays quiet for the whole hour resolves it, without any new event."""
    from monitor.rollup import newest_event_time

    engine = RollupEngine(quiet_store)
    clock = LiveClock(grid_seconds=60)
    newest = newest_event_time(quiet_store)
    assert newest == _ts(QUIET) - 60
    # The newest minute may still be filling: judged without it, 10 attempts are too few.
    engine.evaluate(clock.next_at(newest, 0.0) or 0.0)
    assert _rejecting(quiet_store) == []
    # No new line for two minutes: event time moves to QUIET and the last minute counts.
    at = clock.next_at(newest, 125.0)
    assert at == _ts(QUIET)
    assert engine.evaluate(at).opened == [("google", "gmail.com")]
    # Still no line: an hour later the domain has had no attempt for the whole 1 h window.
    for seconds in range(185, 3800, 60):
        at = clock.next_at(newest, float(seconds))
        if at is not None:
            engine.evaluate(at)
    assert _rejecting(quiet_store) == [(_ts(QUIET), _ts(QUIET + timedelta(hours=1)))]
