"""One source, written here in a few lines, runs through the CLI, the follower and an HTTP route.

What the "adding a source" section of docs/architecture.md promises: a source says how a
unit becomes events; the driver gives it batching, checkpoints, counts and /metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.collectors import registry
from monitor.collectors.registry import line_kinds, register_line_source
from monitor.collectors.source import NotUnderstood, ParseStats, Source
from monitor.config import LogSource
from monitor.driver import Driver
from monitor.metrics import Metrics
from monitor.model import Event, EventType
from monitor.pipeline import Pipeline
from monitor.service.app import create_app
from monitor.service.follow import Follower
from monitor.service.hook import SourceEndpoint
from monitor.store import Store


class Pings(Source[str]):
    """``PING <epoch seconds> <recipient>`` lines: each one a delivery."""

    kind = "ping"

    def __init__(self) -> None:
        self.stats = ParseStats()

    def feed(self, unit: str, ref: str | None = None) -> list[Event]:
        self.stats.lines += 1
        word, _, rest = unit.partition(" ")
        if word != "PING":
            raise NotUnderstood("not a ping")
        if rest == "boom":
            raise RuntimeError("a bug in the source")
        stamp, recipient = rest.split(" ", 1)
        self.stats.events += 1
        return [Event(type=EventType.DELIVERED, source="ping:local", recipient=recipient,
                      occurred_at=datetime.fromtimestamp(int(stamp), UTC), raw_ref=ref)]


LINES = ["PING 1764000000 a@example.com", "hello", "PING boom", "PING 1764000060 b@example.org"]


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Registered for this test only: the registry is the process's.
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    register_line_source("ping", lambda given: Pings())
    yield


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def assert_counted(metrics: Metrics, *, read: int, not_understood: int, stored: int) -> None:
    assert value(metrics, "mailmon_source_lines_total", source="ping") == read
    assert value(metrics, "mailmon_events_rejected_total", source="ping",
                 reason="unparsed") == not_understood  # fmt: skip
    assert value(metrics, "mailmon_events_ingested_total", source="ping") == stored


def stored_recipients(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(r for (r,) in conn.execute(sa.text("SELECT recipient FROM events")))


def test_the_cli_ingests_a_registered_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "ping" in line_kinds()
    log = tmp_path / "pings.log"
    log.write_text("\n".join(LINES) + "\n")
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["ingest", "ping", str(log), "--db", db, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"lines": 4' in out and '"stored": 2' in out
    assert '"not a ping": 1' in out and '"<parser error>": 1' in out
    with Store.open(db) as store:
        [delivery] = store.trace("a@example.com")
        assert [e.raw_ref for e in delivery["events"]] == [f"{log}:1"]
        assert stored_recipients(store) == ["a@example.com", "b@example.org"]


def test_the_follower_runs_it_with_checkpoints_and_counts(tmp_path: Path) -> None:
    log = tmp_path / "pings.log"
    log.write_text("\n".join(LINES[:2]) + "\n")
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        follower = Follower((LogSource(kind="ping", path=str(log)),), Pipeline(store, metrics=metrics),
                            metrics, instance="test")  # fmt: skip
        assert follower.poll_once() == 2
        with log.open("a") as f:
            f.write("\n".join(LINES[2:]) + "\n")
        assert follower.poll_once() == 2
        assert_counted(metrics, read=4, not_understood=2, stored=2)
        saved = store.checkpoint(f"test:ping:{log}")
        assert saved is not None and saved["position"]["offset"] == log.stat().st_size
        # A restart goes on from the checkpoint: nothing is read twice.
        again = Follower((LogSource(kind="ping", path=str(log)),), Pipeline(store), metrics,
                         instance="test")  # fmt: skip
        assert again.poll_once() == 0
        assert stored_recipients(store) == ["a@example.com", "b@example.org"]


def test_an_http_route_runs_it_and_duplicates_reach_metrics(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        endpoint = SourceEndpoint(Pipeline(store, metrics=metrics), metrics, Pings(),
                                  str.splitlines, path="/ingest/ping")
        app = create_app(metrics, endpoints=[endpoint])

        async def post(body: str) -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
                return await c.post("/ingest/ping", content=body)

        answer = asyncio.run(post("\n".join(LINES)))
        assert answer.status_code == 200
        assert answer.json() == {"records": 4, "events": 2, "rejected": 2,
                                 "problems": {"<parser error>": 1, "not a ping": 1}}
        assert asyncio.run(post(LINES[0])).status_code == 200  # the same record again
        assert_counted(metrics, read=5, not_understood=2, stored=2)
        assert value(metrics, "mailmon_events_duplicate_total", source="ping") == 1
        assert stored_recipients(store) == ["a@example.com", "b@example.org"]


def test_a_failed_commit_is_not_counted_and_is_read_again(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        driver, pings = Driver(Pipeline(store, metrics=metrics), metrics), Pings()
        driver.run(pings, LINES[:1], "first")
        driver.discard(pings)  # as after a failed write: the caller reads it again
        driver.run(pings, LINES, "again")
        driver.commit(pings, ("test:ping", {"offset": 4}))
        assert_counted(metrics, read=4, not_understood=2, stored=2)
        assert store.checkpoint("test:ping") == {"offset": 4}


def test_mail_runs_through_the_same_driver(tmp_path: Path) -> None:
    from monitor.collectors.mail.source import NOT_MAIL, MailSource

    bounce = next(iter(sorted((Path(__file__).parent / "data" / "bounces").glob("*.eml"))))
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        driver, mail = Driver(Pipeline(store, metrics=metrics), metrics), MailSource("eml")
        assert driver.feed(mail, b"Dec  6 05:00:00 mx postfix/smtp[1]: a log line\n", "x") == []
        made = driver.feed(mail, bounce.read_bytes(), str(bounce))
        driver.commit(mail)
        assert made and mail.stats.unparsed == {NOT_MAIL: 1}
        assert value(metrics, "mailmon_source_lines_total", source="mailbox") == 2
        assert value(metrics, "mailmon_events_rejected_total", source="mailbox",
                     reason="unparsed") == 1  # fmt: skip
        assert value(metrics, "mailmon_events_ingested_total", source="mailbox") == len(made)


def test_a_source_of_records_stores_them_with_its_checkpoint(tmp_path: Path) -> None:
    """A source that says ``records = True`` hands records and events to the same commit."""
    from dataclasses import dataclass

    from monitor.records import Record
    from monitor.store.records import register_record, unregister_record

    @dataclass(frozen=True, slots=True)
    class Check(Record):
        kind = "test_driver_checks"
        identity_fields = ("domain",)
        domain: str
        ok: bool

    class Checks(Source[str]):
        kind = "check"
        records = True

        def __init__(self) -> None:
            self.stats = ParseStats()

        def feed(self, unit: str, ref: str | None = None) -> list[Check | Event]:
            self.stats.lines += 1
            domain, _, verdict = unit.partition(" ")
            when = datetime(2026, 12, 6, tzinfo=UTC)
            return [Check("check", when, domain, verdict == "ok"),
                    Event(type=EventType.DELIVERED, source="check", recipient=f"probe@{domain}",
                          occurred_at=when)]  # fmt: skip

    register_record(Check)
    try:
        with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
            driver, checks = Driver(Pipeline(store)), Checks()
            driver.run(checks, ["example.com ok", "example.org failing", "example.com ok"], "c")
            driver.commit(checks, ("test:checks", {"offset": 3}))
            with store.engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT domain, ok FROM test_driver_checks "
                                            "ORDER BY domain")).all()  # fmt: skip
            assert [(d, bool(ok)) for d, ok in rows] == [("example.com", True), ("example.org", False)]
            assert store.count("events") == 2
            assert store.checkpoint("test:checks") == {"offset": 3}
    finally:
        unregister_record(Check.kind)
