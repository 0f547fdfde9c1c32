"""Events dated far ahead of the wall clock are refused and counted, and never become "now"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from factories import T0, ev
from test_cli import mailmon

from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.rollup import newest_event_time
from monitor.store import Store

KUMO_RECORDS = Path(__file__).parent / "data" / "kumomta" / "records.jsonl"
YEAR_2099 = 4070908800


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        yield s


def test_pipeline_refuses_events_too_far_ahead(store: Store) -> None:
    """An event dated more than max_future_seconds after the clock is counted, not stored."""
    metrics = Metrics()
    now = T0.timestamp()
    pipeline = Pipeline(store, metrics=metrics, max_future_seconds=3600, clock=lambda: now)
    pipeline.put(ev("submitted", 0))
    pipeline.put(ev("delivered", 59))  # within the hour: clock skew, kept
    pipeline.put(ev("delivered", 61, recipient="bob@gmail.com"))
    pipeline.put(ev("bounced", 365 * 24 * 60, recipient="carol@gmail.com"))
    pipeline.close()
    assert store.count("events") == 2
    assert pipeline.refused == {"future_timestamp": 2}
    labels = {"source": "postfix", "reason": "future_timestamp"}
    assert metrics.registry.get_sample_value("mailmon_events_rejected_total", labels) == 2


def test_newest_event_time_passes_over_far_future_buckets(store: Store) -> None:
    """A store that already holds an event dated years ahead keeps the rollups' "now" at the
    others (2036: PostgreSQL's counter buckets end in 2038)."""
    store.write([ev("submitted", 0), ev("delivered", 5)])
    far = ev("delivered", 0, recipient="x@gmail.com")
    object.__setattr__(far, "occurred_at", T0 + timedelta(days=365 * 10))
    store.write([far])
    assert newest_event_time(store) == (T0 + timedelta(days=365 * 10)).timestamp()
    bucket = newest_event_time(store, not_after=T0.timestamp() + 86400)
    assert bucket == (T0 + timedelta(minutes=5)).timestamp()


def test_ingest_refuses_a_record_dated_2099(tmp_path: Path) -> None:
    """``ingest`` keeps the good records, reports the far-future one, and the rollup stays
    at the newest real event time."""
    lines = KUMO_RECORDS.read_text().splitlines()
    future = json.loads(lines[0]) | {"timestamp": YEAR_2099, "created": YEAR_2099,
                                     "id": "2099", "recipient": "late@gmail.com"}  # fmt: skip
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join([*lines, json.dumps(future)]) + "\n")
    db = f"sqlite:///{tmp_path / 'm.db'}"
    summary = json.loads(mailmon("ingest", "kumomta", str(records), "--db", db, "--json").stdout)
    assert summary["refused"] == {"future_timestamp": 1}
    assert summary["stored"] == summary["events"] - 1 > 0
    human = mailmon("ingest", "kumomta", str(records), "--db", db).stdout
    assert "refused: 1 future_timestamp" in human
    (evaluation,) = json.loads(mailmon("rollup", "--json", "--db", db).stdout)
    assert evaluation["at"].startswith("2024-03-")
