"""A short run of the webhook load benchmark against a real ``mailmon serve``."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_webhooks.py"


def _bench_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_webhooks", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_webhooks"] = module
    spec.loader.exec_module(module)
    return module


def test_a_short_bench_run_stores_every_acknowledged_event(tmp_path: Path) -> None:
    """3 s per phase: signed SendGrid batches and SES notifications are all answered 200,
    and the store holds exactly the events the answers acknowledged, from both providers."""
    bench = _bench_module()
    code = bench.main(["--seconds", "3", "--rate", "20", "--concurrency", "2", "--batch", "20",
                       "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "webhooks.json").read_text())
    for phase in ("throughput", "latency"):
        assert set(report[phase]["statuses"]) == {"200"}, report[phase]
        assert report[phase]["events_acknowledged"] > 0
    assert report["serve_exit"] == 0
    assert report["events_stored"] == report["events_acknowledged"]
    with sqlite3.connect(tmp_path / "webhooks.db") as conn:
        sources = dict(conn.execute("SELECT source, count(*) FROM events GROUP BY source").fetchall())
    assert set(sources) == {"sendgrid", "ses"}, sources
    assert sum(sources.values()) == report["events_acknowledged"]
