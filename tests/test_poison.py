"""Poison input: a bad record is counted and skipped, the records next to it are stored."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import ev
from prometheus_client import CollectorRegistry

from monitor.collectors.checkpoints import file_key
from monitor.collectors.mta.kumomta import KumoParser
from monitor.config import LogSource, default_instance
from monitor.metrics import Metrics
from monitor.model import Event
from monitor.pipeline import Pipeline
from monitor.service.follow import Follower
from monitor.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        yield s


def _kumo(n: int, **fields: object) -> str:
    """One KumoMTA Delivery record as a log line."""
    record = {
        "type": "Delivery", "timestamp": 1_764_000_000 + n, "id": f"spool-{n}",
        "sender": "news@shop.example", "recipient": f"user{n}@gmail.com",
        "response": {"code": 250, "content": "ok"}, **fields,
    }  # fmt: skip
    return json.dumps(record) + "\n"


def _follow(store: Store, path: Path, kind: str = "kumomta") -> tuple[Follower, Metrics]:
    metrics = Metrics(CollectorRegistry())
    source = LogSource(kind=kind, path=str(path))  # type: ignore[arg-type]
    return Follower((source,), Pipeline(store, metrics=metrics), metrics), metrics


def _rejected(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "mailmon_events_rejected_total", {"source": "kumomta", "reason": reason}
    )
    return value or 0.0


def _saved(store: Store, path: Path, kind: str = "kumomta") -> dict[str, Any]:
    """The checkpoint this host's follower keeps for ``path``."""
    return store.checkpoint(file_key(default_instance(), kind, str(path))) or {}


def _offset(store: Store, path: Path, kind: str = "kumomta") -> int:
    return int(_saved(store, path, kind).get("position", {}).get("offset", 0))


def test_nul_inside_a_parsed_field_is_stored_with_the_lines_after_it(
    store: Store, tmp_path: Path
) -> None:
    """A NUL in a recipient (JSON escape) or a Postfix reply (raw byte) never fails a batch, on either back end."""
    kumo = tmp_path / "kumo.log"
    kumo.write_text(_kumo(1) + _kumo(2, recipient="bad\u0000one@gmail.com") + _kumo(3))
    follower, _ = _follow(store, kumo)
    assert follower.poll_once() == 3
    assert store.count("events") == 3
    assert _offset(store, kumo) == kumo.stat().st_size
    with store.engine.connect() as conn:
        recipients = {r for (r,) in conn.exec_driver_sql("SELECT recipient FROM events")}
    assert "bad\ufffdone@gmail.com" in recipients

    postfix = tmp_path / "mail.log"
    postfix.write_bytes(
        b"Dec  6 02:00:00 mx postfix/smtp[7]: 3F1A2B4C5D: to=<x@yahoo.com>, relay=mta5.am0.yahoodns"
        b".net[67.195.204.72]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent"
        b" (250 ok \x00 dirty)\n"
        b"Dec  6 02:00:01 mx postfix/smtp[7]: 3F1A2B4C5E: to=<y@yahoo.com>, relay=mta5.am0.yahoodns"
        b".net[67.195.204.72]:25, delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 ok)\n"
    )
    follower, _ = _follow(store, postfix, "postfix")
    follower.poll_once()
    assert _offset(store, postfix, "postfix") == postfix.stat().st_size
    with store.engine.connect() as conn:
        replies = [d for (d,) in conn.exec_driver_sql(
            "SELECT diagnostic FROM events WHERE recipient_domain = 'yahoo.com' ORDER BY recipient")]
    assert replies == ["250 ok \ufffd dirty", "250 ok"]


def test_a_record_the_database_refuses_is_left_out_counted_and_its_neighbours_kept(
    store: Store, tmp_path: Path
) -> None:
    """A value no column can hold (a size of 10**20) fails only its own record: counted, skipped, the rest stored."""
    log = tmp_path / "kumo.log"
    log.write_text("".join(_kumo(n, size=10**20 if n == 4 else 1000) for n in range(10)))
    follower, metrics = _follow(store, log)
    follower.poll_once()
    assert store.count("events") == 9
    assert _offset(store, log) == log.stat().st_size
    assert _rejected(metrics, "invalid_value") == 1
    assert follower.pipeline.rejected == 1 and follower.pipeline.duplicates == 0
    with log.open("a") as f:
        f.write(_kumo(10))
    assert follower.poll_once() == 1
    assert store.count("events") == 10


def test_store_write_leaves_out_only_the_refused_events(store: Store) -> None:
    """A refused batch is written again by halves: the bad events are reported, the others and the checkpoint stored."""
    batch = [ev("delivered", i, recipient=f"r{i}@example.net",
                size_bytes=10**20 if i in (3, 77) else 10) for i in range(100)]  # fmt: skip
    refused: list[tuple[Event, str]] = []
    fresh = store.write(batch, checkpoint=("k", {"n": 1}),
                        on_reject=lambda e, why: refused.append((e, why)))  # fmt: skip
    assert len(fresh) == 98 and store.count("events") == 98
    assert sorted(e.size_bytes for e, _ in refused) == [10**20, 10**20]  # type: ignore[misc]
    assert {why for _, why in refused} == {"invalid_value"}
    assert store.checkpoint("k") == {"n": 1}


def test_a_deeply_nested_json_line_is_counted_and_skipped() -> None:
    """A 100k-deep JSON line is one unparsed line (too_deep), not a RecursionError; its neighbours parse."""
    parser = KumoParser()
    lines = [_kumo(n) for n in range(199)]
    lines.insert(100, "[" * 100_000 + "\n")
    events = [e for line in lines for e in parser.feed(line.rstrip("\n"))]
    assert len(events) == 199
    assert parser.stats.unparsed == {"too_deep": 1}
    # Deep but inside a string is not nesting.
    assert len(parser.feed(_kumo(500, sender="[" * 1000 + "@x.example").rstrip("\n"))) == 1


def test_the_follower_goes_on_after_a_deeply_nested_line(store: Store, tmp_path: Path) -> None:
    """serve stores the lines after a deeply nested one and moves its checkpoint past it."""
    log = tmp_path / "kumo.log"
    log.write_text(_kumo(1) + "{\"a\":" * 100_000 + "\n" + _kumo(2))
    follower, _ = _follow(store, log)
    follower.poll_once()
    assert store.count("events") == 2
    assert _offset(store, log) == log.stat().st_size


def test_ingest_of_a_deeply_nested_line_stores_the_others(tmp_path: Path) -> None:
    """`mailmon ingest kumomta` stores the 199 good records of 200 and counts the deep one."""
    log = tmp_path / "kumo.log"
    lines = [_kumo(n) for n in range(199)]
    lines.insert(7, "[" * 100_000 + "\n")
    log.write_text("".join(lines))
    proc = subprocess.run(
        [sys.executable, "-m", "monitor", "ingest", "kumomta", str(log), "--json",
         "--db", f"sqlite:///{tmp_path / 'm.db'}"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["stored"] == 199, summary


def test_a_parser_that_raises_on_a_line_does_not_stop_the_file(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A line on which the parser raises is counted as not understood; the lines after it are stored."""
    log = tmp_path / "kumo.log"
    log.write_text(_kumo(1) + "boom\n" + _kumo(2))
    real = KumoParser.feed

    def feed(self: KumoParser, line: str, ref: str | None = None) -> list[Event]:
        if line == "boom":
            raise RuntimeError("a parser bug")
        return real(self, line, ref)

    monkeypatch.setattr(KumoParser, "feed", feed)
    follower, _ = _follow(store, log)
    with caplog.at_level(logging.ERROR):
        follower.poll_once()
    assert store.count("events") == 2
    assert _offset(store, log) == log.stat().st_size
    counts = _saved(store, log)["counts"]
    assert counts["rejected"]["unparsed"] == 1


def test_one_log_that_cannot_be_set_up_never_stops_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A source whose parser cannot start (a bad tz that got past the schema) is reported; the logs after it are read."""
    bad = LogSource.model_construct(kind="postfix", path=str(tmp_path / "bad.log"),
                                    start_at="beginning", tz="Mars/Olympus_Mons",
                                    poll_interval_seconds=0.5, max_bytes_per_poll=1 << 20)  # fmt: skip
    good_log = tmp_path / "good.log"
    good_log.write_text(_kumo(1))
    (tmp_path / "bad.log").write_text("")
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        good = LogSource(kind="kumomta", path=str(good_log))
        follower = Follower((bad, good), Pipeline(store, metrics=metrics), metrics)
        with caplog.at_level(logging.ERROR):
            assert follower.poll_once() == 1
            follower.poll_once()
        assert store.count("events") == 1
        assert "Mars/Olympus_Mons" in follower.errors()[str(tmp_path / "bad.log")]
        # Logged once, not at every poll.
        assert sum("cannot follow" in r.getMessage() for r in caplog.records) == 1
