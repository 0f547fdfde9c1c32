"""Group commit (monitor/service/group.py): concurrent requests share commits, and a request is
acknowledged only after the commit holding its events.

Requests run as serve runs them, on threads of their own, through ``SourceEndpoint._ingest``
(what a POST runs after its signature check) over a SQLite file; the store's write is slowed
so that requests pile up behind a commit, and made to fail to show what a failure does.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitor.collectors.source import NotUnderstood, ParseStats, Source
from monitor.metrics import Metrics
from monitor.model import Event, EventType
from monitor.pipeline import Pipeline
from monitor.service.app import create_app
from monitor.service.group import group_of
from monitor.service.hook import STORE_REFUSED, SourceEndpoint
from monitor.store import Store

T0 = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())


class Pings(Source[str]):
    """``PING <n>`` lines: one delivery each, to rN@example.com."""

    kind = "ping"

    def __init__(self) -> None:
        self.stats = ParseStats()

    def feed(self, unit: str, ref: str | None = None) -> list[Event]:
        self.stats.lines += 1
        word, _, n = unit.partition(" ")
        if word != "PING" or not n.isdigit():
            raise NotUnderstood("not a ping")
        return [Event(type=EventType.DELIVERED, source="ping", recipient=f"r{n}@example.com",
                      occurred_at=datetime.fromtimestamp(T0 + int(n), UTC), raw_ref=ref)]


def body(first: int, count: int) -> bytes:
    return "\n".join(f"PING {n}" for n in range(first, first + count)).encode()


def stored(db: Path, first: int, count: int) -> int:
    """Events of ``PING first..first+count-1`` committed, read on a connection of its own."""
    names = [f"r{n}@example.com" for n in range(first, first + count)]
    with sqlite3.connect(db) as conn:
        query = f"SELECT count(*) FROM events WHERE recipient IN ({','.join('?' * len(names))})"
        return int(conn.execute(query, names).fetchone()[0])


def slow_writes(store: Store, monkeypatch: pytest.MonkeyPatch, seconds: float,
                fail: Callable[[int], bool] = lambda n: False,
                started: list[float] | None = None) -> list[int]:  # fmt: skip
    """Each write sleeps ``seconds`` first (requests pile up behind it); write number n
    raises when ``fail(n)``.  Returns the events of each write, in order (and puts the
    time each write started in ``started``)."""
    write = store.write
    sizes: list[int] = []

    def slowed(batch: Any, **kwargs: Any) -> list[Event]:
        events = list(batch)
        sizes.append(len(events))
        if started is not None:
            started.append(time.monotonic())
        time.sleep(seconds)
        if fail(len(sizes)):
            raise OSError("disk I/O error")
        return write(events, **kwargs)

    monkeypatch.setattr(store, "write", slowed)
    return sizes


def run_requests(endpoint: SourceEndpoint, db: Path, requests: int,
                 per_request: int) -> dict[int, tuple[str, int]]:  # fmt: skip
    """``requests`` posts, each on its own thread, in two waves: the second half 0.1 s after
    the first, while the first one's commit is being written.  For each: its outcome and
    the events of it the store held the moment it was answered."""
    outcomes: dict[int, tuple[str, int]] = {}
    start = time.monotonic() + 0.2

    def post(i: int) -> None:
        time.sleep(max(0.0, start + (0.1 if 2 * i >= requests else 0.0) - time.monotonic()))
        try:
            events = endpoint._ingest(body(i * per_request, per_request))[1]
            outcome = f"ok {events}"
        except Exception as exc:
            outcome = f"error {type(exc).__name__}"
        outcomes[i] = (outcome, stored(db, i * per_request, per_request))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def endpoint_of(store: Store, metrics: Metrics) -> SourceEndpoint:
    return SourceEndpoint(Pipeline(store, metrics=metrics), metrics, Pings(),
                          lambda text: text.splitlines(), path="/ingest/ping")  # fmt: skip


def test_concurrent_requests_share_commits_and_each_is_answered_after_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "m.db"
    with Store.open(f"sqlite:///{db}") as store:
        metrics = Metrics(CollectorRegistry())
        endpoint = endpoint_of(store, metrics)
        sizes = slow_writes(store, monkeypatch, 0.2)
        outcomes = run_requests(endpoint, db, requests=12, per_request=25)
        # Every request answered with its 25 events, all of them committed by then.
        assert outcomes == {i: ("ok 25", 25) for i in range(12)}
        group = group_of(endpoint.pipeline)
        assert group.requests == 12
        # Requests that arrive together share a commit; the second wave, the next one.
        assert 2 <= group.commits < 12 and sum(sizes) == 300 and max(sizes) > 25, sizes
        assert metrics.registry.get_sample_value("mailmon_source_lines_total",
                                                 {"source": "ping"}) == 300  # fmt: skip
        assert metrics.registry.get_sample_value("mailmon_events_ingested_total",
                                                 {"source": "ping"}) == 300  # fmt: skip


def test_after_a_busy_commit_the_next_batch_gathers_before_it_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "m.db"
    with Store.open(f"sqlite:///{db}") as store:
        endpoint = endpoint_of(store, Metrics(CollectorRegistry()))
        group = group_of(endpoint.pipeline)
        group.gather_from, group.gather_seconds = 2, 0.4
        started: list[float] = []
        sizes = slow_writes(store, monkeypatch, 0.05, started=started)
        outcomes = run_requests(endpoint, db, requests=12, per_request=25)
        assert outcomes == {i: ("ok 25", 25) for i in range(12)}
        assert sum(sizes) == 300 and max(sizes) >= 50, sizes
        for at, events, following in zip(started, sizes, [*started[1:], None], strict=True):
            if events >= 50 and following is not None:  # two requests or more: the next batch waited
                assert following - at >= 0.4 - 0.01, (started, sizes)


def test_a_lone_sender_is_never_held_back_to_gather(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of one request are committed at once: one request after another is not
    slowed to one per gathering interval."""
    db = tmp_path / "m.db"
    with Store.open(f"sqlite:///{db}") as store:
        endpoint = endpoint_of(store, Metrics(CollectorRegistry()))
        group_of(endpoint.pipeline).gather_seconds = 5.0
        sizes = slow_writes(store, monkeypatch, 0.01)
        started = time.monotonic()
        for i in range(5):
            assert endpoint._ingest(body(25 * i, 25))[1] == 25
        assert time.monotonic() - started < 4.0 and len(sizes) == 5, sizes


def test_a_failed_commit_fails_every_request_in_it_and_acknowledges_nothing_it_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "m.db"
    with Store.open(f"sqlite:///{db}") as store:
        metrics = Metrics(CollectorRegistry())
        endpoint = endpoint_of(store, metrics)
        sizes = slow_writes(store, monkeypatch, 0.2, fail=lambda n: n == 1)
        outcomes = run_requests(endpoint, db, requests=12, per_request=25)
        ok = {i for i, (outcome, _) in outcomes.items() if outcome == "ok 25"}
        failed = {i for i, (outcome, _) in outcomes.items() if outcome == "error RuntimeError"}
        assert ok | failed == set(range(12)) and failed, outcomes
        # Acknowledged: in the store when answered.  Refused: none of it stored (retried).
        assert all(outcomes[i][1] == 25 for i in ok), outcomes
        assert all(stored(db, i * 25, 25) == 0 for i in failed), outcomes
        assert 25 * len(failed) == sizes[0]  # the first commit's requests, exactly
        # Only what was stored is counted; the failed requests are read again when resent.
        lines = metrics.registry.get_sample_value("mailmon_source_lines_total", {"source": "ping"})
        assert lines == 25 * len(ok)
        for i in sorted(failed):
            assert endpoint._ingest(body(i * 25, 25))[1] == 25
        assert stored(db, 0, 300) == 300
        assert endpoint.health()["status"] == "ok"


def test_a_request_that_breaks_while_fed_spoils_only_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "m.db"
    with Store.open(f"sqlite:///{db}") as store:
        metrics = Metrics(CollectorRegistry())
        endpoint = endpoint_of(store, metrics)
        put = endpoint.pipeline.put

        def put_or_break(event: Event) -> None:
            if event.recipient == "r7@example.com":
                raise RuntimeError("enrichment broke")
            put(event)

        monkeypatch.setattr(endpoint.pipeline, "put", put_or_break)
        with pytest.raises(RuntimeError):
            endpoint._ingest(body(5, 5))  # 5, 6 fed; 7 breaks it
        assert stored(db, 5, 5) == 0
        assert endpoint._ingest(body(100, 3))[1] == 3  # the next batch is stored
        assert stored(db, 100, 3) == 3 and stored(db, 5, 2) == 0


def test_events_the_database_refuses_are_named_in_their_own_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "m.db"
    with Store.open(f"sqlite:///{db}") as store:
        metrics = Metrics(CollectorRegistry())
        endpoint = endpoint_of(store, metrics)
        pipeline = endpoint.pipeline
        write = pipeline._write

        def refusing(batch: list[Event], waiting: list[Event], **kwargs: Any) -> Any:
            # As Store.write does for an event it refuses on its own: reported, left out.
            bad = [e for e in batch if e.recipient == "r3@example.com"]
            for event in bad:
                pipeline._rejected(event, "db_refused")
            return write([e for e in batch if e not in bad], waiting, **kwargs)

        monkeypatch.setattr(pipeline, "_write", refusing)
        assert endpoint._ingest(body(1, 5)) == (5, 4, {STORE_REFUSED: 1})
        assert endpoint._ingest(body(10, 2)) == (2, 2, {})
        assert stored(db, 1, 5) == 4


def test_over_http_each_answer_comes_after_its_commit_and_a_failed_one_is_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ASGI route: concurrent POSTs wait for their commit without holding a thread;
    the batch whose write fails answers 503 and none of it is stored."""
    db = tmp_path / "m.db"
    with Store.open(f"sqlite:///{db}") as store:
        metrics = Metrics(CollectorRegistry())
        endpoint = endpoint_of(store, metrics)
        slow_writes(store, monkeypatch, 0.2, fail=lambda n: n == 1)
        app = create_app(metrics, endpoints=[endpoint])

        async def post_all() -> list[tuple[int, int, int]]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:

                async def post(i: int) -> tuple[int, int, int]:
                    await asyncio.sleep(0.1 if i >= 6 else 0.0)  # a second wave
                    answer = await c.post("/ingest/ping", content=body(i * 25, 25))
                    return i, answer.status_code, stored(db, i * 25, 25)

                return await asyncio.gather(*(post(i) for i in range(12)))

        outcomes = asyncio.run(post_all())
        statuses = {status for _, status, _ in outcomes}
        assert statuses == {200, 503}, outcomes
        for _, status, held in outcomes:
            assert held == (25 if status == 200 else 0), outcomes
        assert endpoint.health()["status"] == "ok"
