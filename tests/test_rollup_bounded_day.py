"""Rollup memory bounded in the number of domains on a store whose history is one day: the
readers materialise at most ``max_domains`` subjects, chosen alike live and in a replay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from factories import T0, ev

from monitor.model import Event
from monitor.rollup import RollupEngine, level_of
from monitor.rollup.choice import Choice
from monitor.rollup.views import RECIPIENT_DOMAINS
from monitor.rollup.windows import REST
from monitor.store import Store
from monitor.store.schema import counters

DAY = T0.replace(hour=0)  # the store's one day
MANY = 600  # distinct recipient domains (and sending IPs, sending domains, streams)
LIMIT = 40


def _flood() -> list[Event]:
    """Gmail every few minutes from 00:05, then from 01:00 one delivery to each of ``MANY``
    domains, each from its own sending IP, sending domain and stream (a hook posting what
    it likes), ten a minute."""
    events: list[Event] = []
    for n in range(120):
        common = {"recipient": f"g{n}@gmail.com", "queue_id": f"G{n:06d}", "provider": "google",
                  "message_id": f"g{n}@app.example", "sender": "noreply@app.example"}  # fmt: skip
        minutes = (T0 - DAY).total_seconds() / -60 + 5 + n * 12
        events.append(ev("submitted", minutes, **common))
        events.append(ev("delivered", minutes + 0.5, delay_seconds=30, sending_ip="192.0.2.1",
                         tags=("stream:receipts",), **common))  # fmt: skip
    for i in range(MANY):
        common = {"recipient": f"u@d{i}.example", "queue_id": f"D{i:06d}", "provider": "other",
                  "message_id": f"d{i}@app.example", "sender": f"x@s{i}.example"}  # fmt: skip
        minutes = (T0 - DAY).total_seconds() / -60 + 60 + i // 10
        events.append(ev("submitted", minutes, **common))
        events.append(ev("delivered", minutes + 0.5, delay_seconds=30,
                         sending_ip=f"198.51.{i // 250}.{i % 250}", tags=(f"stream:t{i}",),
                         **common))  # fmt: skip
    return events


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        s.write(_flood())
        yield s


END = (DAY + timedelta(hours=20)).timestamp()


def test_a_one_day_store_materialises_at_most_max_domains_subjects(store: Store) -> None:
    """Every detector over a one-day store of 600 domains with max_domains 40: the
    domain and sender-side levels judge, and the latency reader reports, at most 40
    subjects each plus one rest per provider, never judged; the first domains kept."""
    engine = RollupEngine(store, weeks=0, max_domains=LIMIT)
    result = engine.evaluate(END)
    kept = engine.windows.kept()
    assert kept is not None and len(kept) == LIMIT
    assert "gmail.com" in kept and "d0.example" in kept and f"d{MANY - 1}.example" not in kept
    for level in ("domain", "sending_ip", "sender_domain", "stream"):
        judged = {s.domain for s in result.subjects if level_of(s.kind) == level}
        assert judged and len(judged) <= LIMIT and REST not in judged, level
        values = {t.value for t in result.latency if t.level == level}
        assert len(values - {REST}) <= LIMIT and REST in values, level
    # The provider still sees every delivery: the 600 domains add up under "other".
    day = {(t.level, t.provider, t.value): t.deliveries for t in result.latency
           if t.window == "24h"}  # fmt: skip
    assert sum(n for (level, provider, _v), n in day.items()
               if level == "domain" and provider == "other") == MANY  # fmt: skip
    # What stays between evaluations grows with the kept subjects, not with all of them.
    unbounded = RollupEngine(store, weeks=0)
    unbounded.evaluate(END)
    assert engine.windows.held() * 4 < unbounded.windows.held()


def test_a_replay_and_a_single_evaluation_choose_alike(store: Store) -> None:
    """Replaying the day every 30 minutes ends with the same domains kept, judged and
    reported as one evaluation at its end: only data before the time chooses."""
    replayed = RollupEngine(store, weeks=0, max_domains=LIMIT)
    last = list(replayed.replay(DAY.timestamp(), END, step=1800))[-1]
    single = RollupEngine(store, weeks=0, max_domains=LIMIT)
    once = single.evaluate(END)
    assert single.windows.kept() is not None
    assert replayed.windows.kept() == single.windows.kept()
    assert [(s.kind, s.provider, s.domain) for s in last.subjects] == [
        (s.kind, s.provider, s.domain) for s in once.subjects
    ]
    assert last.latency == once.latency


def test_choice_keeps_the_busiest_of_last_week_then_the_days_first_new_ones(
    sqlite_url: str,
) -> None:
    """The week before the day by attempts (ties by name), then the day's new subjects by
    their first minute (ties by name); None while all fit; the choice stays for the day."""
    day = int(DAY.timestamp())
    rows = [(day - 3600, "b.example", 5), (day - 7200, "a.example", 5), (day - 60, "c.example", 9),
            (day + 600, "z.example", 1), (day + 600, "y.example", 1), (day + 60, "w.example", 1),
            (day + 1200, "a.example", 50), (day + 1800, "x.example", 99)]  # fmt: skip
    with Store.open(sqlite_url) as store:
        with store.engine.begin() as conn:
            conn.execute(counters.insert(), [
                {"bucket": b, "recipient_domain": d, "provider": "other", "outcome": "delivered",
                 "reason": "", "stream": "", "count": n} for b, d, n in rows])  # fmt: skip
        choice = Choice(RECIPIENT_DOMAINS, limit=5, always=("kept.example",))
        with store.engine.connect() as conn:
            assert choice.at(conn, day + 600) is None  # c, a, b, then w: four seen by 00:10
            assert choice.seen() == ["a.example", "b.example", "c.example", "kept.example",
                                     "w.example"]  # fmt: skip
            full = ["a.example", "b.example", "c.example", "kept.example", "w.example",
                    "y.example"]  # fmt: skip
            assert choice.at(conn, day + 3600) == full  # z appeared with y: by name, left out
            assert choice.at(conn, day + 7200) == full
        # The next day: the busiest of its week before, whatever appeared first.
        other = Choice(RECIPIENT_DOMAINS, limit=2)
        with store.engine.connect() as conn:
            assert other.at(conn, day + 86400 + 60) == ["a.example", "x.example"]
