"""DMARC report benchmark: parse throughput and memory over a directory of reports.

    .venv/bin/python bench/bench_dmarc.py [--reports 10000] [--rows 5]

Throughput: the corpus's 2,286-row aggregate report parsed (guards, parsedmarc offline,
records made), best of 3, in records/s (target 2,000/s), then ingested whole into a
SQLite store.  Memory: ``--reports`` generated reports of ``--rows`` rows (distinct ids)
read from one directory through ``ReportIngest`` into a store, as ``mailmon ingest
dmarc DIR`` does; resident memory after 1,000 reports and at the end (target: growth
under 40 MiB, SQLite's 32 MiB page cache filling) and Python's allocated blocks (target:
under 10,000 more: nothing held per report).  A missed target prints MISSED and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dmarc_data import DMARC, Row, aggregate  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from monitor.collectors.reports.files import ReportIngest  # noqa: E402
from monitor.collectors.reports.parse import ReportParser  # noqa: E402
from monitor.collectors.reports.source import ReportSource  # noqa: E402
from monitor.driver import Driver  # noqa: E402
from monitor.metrics import Metrics  # noqa: E402
from monitor.pipeline import Pipeline  # noqa: E402
from monitor.store import Store  # noqa: E402

LARGE = DMARC / "aggregate" / "!large-example.com!1711897200!1711983600.xml"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=5)
    args = ap.parse_args()
    data = LARGE.read_bytes()
    parser, source = ReportParser(), ReportSource()
    best = float("inf")
    n = 0
    for _ in range(3):
        started = time.perf_counter()
        n = len(source.feed(parser.parse(data)))
        best = min(best, time.perf_counter() - started)
    rate = n / best
    print(f"parse: {n:,} rows in {best:.3f} s = {rate:,.0f} records/s (target 2,000) "
          f"{verdict(rate >= 2000)}")
    with tempfile.TemporaryDirectory(prefix="bench-dmarc-") as tmp:
        store = Store.open(f"sqlite:///{tmp}/m.db")
        metrics = Metrics(CollectorRegistry())
        reports = ReportIngest(Driver(Pipeline(store, metrics=metrics), metrics),
                               domains=["example.com"])  # fmt: skip
        started = time.perf_counter()
        stored = reports.ingest_file(str(LARGE)).records
        spent = time.perf_counter() - started
        print(f"ingest: {stored:,} rows parsed and stored in {spent:.3f} s = "
              f"{stored / spent:,.0f} records/s")
        inbox = Path(tmp) / "in"
        inbox.mkdir()
        for i in range(args.reports):
            rows = [Row(f"198.51.{i % 250}.{j}", 1 + j, dkim="fail" if j == 0 else "pass")
                    for j in range(args.rows)]  # fmt: skip
            (inbox / f"r{i:05}.xml").write_bytes(aggregate(rows, report_id=f"bench-{i}"))
        marks: dict[int, float] = {}
        blocks: dict[int, int] = {}

        def tick(done: int, total: int) -> None:
            if done in (1000, total):
                marks[done] = rss_mib()
                blocks[done] = sys.getallocatedblocks()

        start_rss = rss_mib()
        started = time.perf_counter()
        summary = reports.ingest_path(str(inbox), tick=tick)
        spent = time.perf_counter() - started
        first, last = marks.get(1000, 0.0), marks.get(args.reports, 0.0)
        grown = last - first
        print(f"directory: {summary.files - 1:,} reports, {summary.stored - stored:,} rows "
              f"in {spent:.1f} s ({(summary.files - 1) / spent:,.0f} reports/s, "
              f"{(summary.stored - stored) / spent:,.0f} records/s)")
        print(f"memory: RSS {start_rss:.0f} MiB before, {first:.0f} MiB after 1,000 reports, "
              f"{last:.0f} MiB after {args.reports:,}: {grown:+.1f} MiB (target < 40: SQLite's "
              f"page cache, PRAGMA cache_size=-32768, fills up to 32 MiB as the store grows) "
              f"{verdict(grown < 40)}")
        objects = blocks.get(args.reports, 0) - blocks.get(1000, 0)
        print(f"Python heap: {blocks.get(1000, 0):,} allocated blocks after 1,000 reports, "
              f"{blocks.get(args.reports, 0):,} at the end ({objects:+,}; target < 10,000) "
              f"{verdict(objects < 10_000)}")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
