"""Rollup benchmark: one evaluation of every detector over 1,000 domains x 30 days of counters.

    .venv/bin/python bench/bench_rollup.py [--domains 1000] [--days 30] [--runs 10]
                                           [--delivery-days 2]

Input: the ``counters`` table of a SQLite store filled directly (what ingest would leave):
1,000 recipient domains in a Zipf mix of daily volume (the largest ~100,000 attempts a
day, so it has a row every minute; the tail a row every few hours), each minute's row
split into delivered, a share of deferred (some for rejecting reasons), bounced and
complained rows.  ``sender_counters`` (schema 5) holds the same traffic per sending IP (8
addresses, each domain sent from one), sending domain (2) and stream (3), summed per
provider, as the writer would have folded it; the sending-IP detectors read it.
``failure_counters`` (schema 6) holds the failures of ``counters`` by hard/soft and blame,
as the classifier would have split them (the windows' hard/soft and blame fields).  The
latency and queue-age detectors read delivery rows: the last
``--delivery-days`` days get one row per delivered recipient in the same Zipf mix (about
750,000 a day), a few of them still deferred, each with the sender, sending IP and stream
of its domain (as ``sender_counters``), so latency is computed per recipient domain,
sending IP, sending domain and stream as well.  The database is cached in ``bench/out/``
while the generators are unchanged.

Measured: the first evaluation (cold: the engine reads the whole week; again once per UTC
day of event time, see ``WindowReader``) and then the steady state the live service pays
every minute (each run one minute of event time later), plus a 5-minute-step replay of
one hour; then the same steady state with the counters-only detectors, and the two
delivery-row reads on their own: latency in the steady state (the last hour's rows; the
24 h histograms cached per hour) and at the first evaluation of a new hour (one more hour
aggregated in SQL).  Target: under 1 s per (steady) evaluation.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monitor.rollup import Evaluation, RollupEngine  # noqa: E402
from monitor.rollup.deliveries import queue_stats  # noqa: E402
from monitor.rollup.detectors import (  # noqa: E402
    LatencyDetector,
    QueueAgeDetector,
    default_detectors,
)
from monitor.rollup.latency import LatencyReader  # noqa: E402
from monitor.store import Store  # noqa: E402

OUT = ROOT / "bench" / "out"
TARGET_SECONDS = 1.0
START = 1_767_225_600  # 2026-01-01T00:00:00Z
PROVIDERS = ("google", "microsoft", "yahoo", "apple", "other")
REJECTING = ("blocked", "badreputation", "spamdetected", "ratelimited")
OTHER = ("userunknown", "mailboxfull", "networkerror")


def _rows(domains: int, days: int, seed: int) -> object:
    rng = random.Random(seed)
    for minute in range(days * 1440):
        bucket = START + minute * 60
        for i in range(domains):
            per_minute = 70.0 / (i + 1)  # Zipf: ~100,000 a day for the largest
            if per_minute < 1 and rng.random() > per_minute:
                continue
            n = max(1, int(per_minute))
            domain = f"d{i}.example" if i else "gmail.com"
            provider = PROVIDERS[i % len(PROVIDERS)]
            yield (bucket, domain, provider, "delivered", "", "", n)
            if rng.random() < 0.08:
                yield (bucket, domain, provider, "deferred", rng.choice(REJECTING), "", 1)
            if rng.random() < 0.03:
                yield (bucket, domain, provider, "bounced", rng.choice(OTHER), "", 1)
            if rng.random() < 0.002:
                yield (bucket, domain, provider, "complained", "", "", 1)


#: The sender side of the same traffic, from the counters: each domain has one sending IP,
#: one sending domain and one stream (by its name's length, a stable spread).
_SENDER_SQL = """
INSERT INTO sender_counters (bucket, dimension, value, provider, outcome, reason, ndr, count)
SELECT bucket, ?, ? || (length(recipient_domain) % ?), provider, outcome, reason, 0, sum(count)
FROM counters GROUP BY 1, 2, 3, 4, 5, 6
"""
_SENDER_DIMENSIONS = (("sending_ip", "198.51.100.", 8), ("sender_domain", "mail", 2),
                      ("stream", "stream", 3))  # fmt: skip


#: Failures of ``counters`` split by hard/soft and blame as the classifier would have.
_FAILURE_SQL = """
INSERT INTO failure_counters (bucket, recipient_domain, provider, outcome, reason, hard, blame,
                              stream, count)
SELECT bucket, recipient_domain, provider, outcome, reason,
       CASE WHEN reason = 'userunknown' THEN 'hard' ELSE 'soft' END,
       CASE reason WHEN 'userunknown' THEN 'recipient' WHEN 'mailboxfull' THEN 'recipient'
                   WHEN 'networkerror' THEN 'infrastructure' WHEN 'ratelimited' THEN 'rate'
                   ELSE 'reputation' END,
       stream, count
FROM counters WHERE outcome IN ('deferred', 'bounced', 'expired')
"""


def _made(conn: sqlite3.Connection, mark: str, key: str) -> bool:
    """Whether the table ``mark`` stands for was filled by this version (``key``)."""
    row = conn.execute("SELECT value FROM mailmon_meta WHERE key = ?", (mark,)).fetchone()
    return bool(row) and row[0] == key


def _made_now(conn: sqlite3.Connection, mark: str, key: str) -> None:
    conn.execute("INSERT OR REPLACE INTO mailmon_meta (key, value) VALUES (?, ?)", (mark, key))


def add_failures(path: Path) -> None:
    """Fill ``failure_counters`` from ``counters`` once per version (marked in mailmon_meta)."""
    key = hashlib.sha256(_FAILURE_SQL.encode()).hexdigest()[:10]
    with sqlite3.connect(path) as conn:
        if _made(conn, "bench_failures", key):
            return
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("DELETE FROM failure_counters")
        conn.execute(_FAILURE_SQL)
        _made_now(conn, "bench_failures", key)


def _deliveries(domains: int, days: int, delivery_days: int, seed: int) -> object:
    """Delivery rows for the last ``delivery_days`` days: one per delivered recipient."""
    rng = random.Random(seed)
    for minute in range((days - delivery_days) * 1440, days * 1440):
        bucket = START + minute * 60
        for i in range(domains):
            per_minute = 70.0 / (i + 1)
            if per_minute < 1 and rng.random() > per_minute:
                continue
            domain = f"d{i}.example" if i else "gmail.com"
            provider = PROVIDERS[i % len(PROVIDERS)]
            spread = len(domain)  # the sender side of _SENDER_SQL
            sender, ip = f"news@mail{spread % 2}.example", f"198.51.100.{spread % 8}"
            for j in range(max(1, int(per_minute))):
                t = bucket + rng.random() * 60
                latency = rng.expovariate(1 / 20)
                stuck = rng.random() < 0.001
                yield (
                    f"{minute}-{i}-{j}", "bench", f"u{minute}.{j}@{domain}", domain, provider,
                    "", "deferred" if stuck else "delivered", t - latency, t, t,
                    None if stuck else t, 1, int(stuck), sender, ip, f"stream{spread % 3}",
                )  # fmt: skip


def add_deliveries(path: Path, domains: int, days: int, delivery_days: int) -> None:
    """Fill the deliveries table once per generator version (marked in mailmon_meta)."""
    source = inspect.getsource(_deliveries) + f"{domains},{days},{delivery_days}"
    key = hashlib.sha256(source.encode()).hexdigest()[:10]
    with sqlite3.connect(path) as conn:
        if _made(conn, "bench_deliveries", key):
            return
        started = time.perf_counter()
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("DELETE FROM deliveries")
        conn.executemany(
            "INSERT INTO deliveries (key, source, recipient, recipient_domain, provider, stream,"
            " state, submitted_at, first_attempt_at, last_event_at, final_at, attempts,"
            " deferrals, sender, sending_ip, stream_tag)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _deliveries(domains, days, delivery_days, seed=7),  # type: ignore[arg-type]
        )
        _made_now(conn, "bench_deliveries", key)
        rows = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    print(f"generated {rows:,} delivery rows in {time.perf_counter() - started:.0f} s")


def _steady(engine: RollupEngine, at: float, runs: int) -> tuple[float, float, Evaluation]:
    """Median and max seconds of ``runs`` evaluations one minute apart after ``at``."""
    times = []
    result = Evaluation(at=at)
    for step in range(1, runs + 1):
        started = time.perf_counter()
        result = engine.evaluate(at + step * 60)
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times), result


def build(domains: int, days: int) -> Path:
    """The cached benchmark database for these parameters, generated when missing."""
    # regenerate when the data changes
    source = inspect.getsource(_rows) + f"{domains},{days}{_SENDER_SQL}{_SENDER_DIMENSIONS}"
    key = hashlib.sha256(source.encode()).hexdigest()[:10]
    path = OUT / f"rollup-{domains}x{days}-{key}.db"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    Store.open(f"sqlite:///{tmp}").close()
    started = time.perf_counter()
    with sqlite3.connect(tmp) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        conn.executemany(
            "INSERT INTO counters (bucket, recipient_domain, provider, outcome, reason, stream, count)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            _rows(domains, days, seed=5),  # type: ignore[arg-type]
        )
        for dimension, prefix, spread in _SENDER_DIMENSIONS:
            conn.execute(_SENDER_SQL, (dimension, prefix, spread))
        rows = conn.execute("SELECT count(*) FROM counters").fetchone()[0]
    tmp.rename(path)
    print(f"generated {rows:,} counter rows in {time.perf_counter() - started:.0f} s: {path.name}")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--delivery-days", type=int, default=2)
    args = parser.parse_args()
    path = build(args.domains, args.days)
    add_failures(path)
    add_deliveries(path, args.domains, args.days, args.delivery_days)
    with Store.open(f"sqlite:///{path}") as store:
        rows = store.count("counters")
        sender_rows = store.count("sender_counters")
        with store.engine.connect() as conn:  # Store.count does not know this table
            failure_rows = conn.exec_driver_sql("SELECT count(*) FROM failure_counters").scalar()
        delivery_rows = store.count("deliveries")
        engine = RollupEngine(store)
        at = START + (args.days - 1) * 86400 + 12 * 3600  # noon of the last day
        started = time.perf_counter()
        engine.evaluate(at)
        cold = time.perf_counter() - started
        steady, worst, result = _steady(engine, at, args.runs)
        started = time.perf_counter()
        replay_from = at + (args.runs + 5) * 60
        replayed = list(engine.replay(replay_from, replay_from + 3600, 300))
        replay = time.perf_counter() - started
        counters_only = RollupEngine(
            store, [d for d in default_detectors() if d.source == "counters"]
        )
        counters_only.evaluate(at)
        steady_counters, _, _ = _steady(counters_only, at, args.runs)
        with store.engine.connect() as conn:
            reader, latency = LatencyReader(), LatencyDetector()
            reader.read(conn, at, latency)  # the hourly histograms, once
            started = time.perf_counter()
            table = reader.read(conn, at + 60, latency)
            latency_read = time.perf_counter() - started
            started = time.perf_counter()
            reader.read(conn, at + 3600, latency)  # one hour on: one more hour's histograms
            latency_hour = time.perf_counter() - started
            started = time.perf_counter()
            queue_stats(conn, at, [f"d{i}.example" for i in range(args.domains)],
                        QueueAgeDetector())  # fmt: skip
            queue_read = time.perf_counter() - started
        with store.engine.begin() as conn:  # the benchmark's incidents are not the point
            conn.exec_driver_sql("DELETE FROM incidents")
    print(f"counters: {rows:,} rows, {args.domains} domains x {args.days} days (SQLite)")
    print(f"sender_counters: {sender_rows:,} rows (8 sending IPs, 2 sending domains, 3 streams)")
    print(f"failure_counters: {failure_rows or 0:,} rows (hard/soft x blame)")
    print(f"deliveries: {delivery_rows:,} rows (the last {args.delivery_days} days)")
    print(f"subjects evaluated: {len(result.subjects)} over {len(engine.detectors)} detectors")
    print(f"first evaluation (cold): {cold:.3f} s")
    print(f"evaluation (steady, median of {args.runs}): {steady:.3f} s  max {worst:.3f} s")
    print(f"replay of 1 h at 5-min steps: {len(replayed)} evaluations in {replay:.3f} s")
    print(f"counters-only detectors (steady, median): {steady_counters:.3f} s")
    per_million = latency_read / max(delivery_rows, 1) * 1e6
    subjects = len(table.states())
    print(f"latency read: {latency_read:.3f} s ({per_million:.3f} s per million delivery rows), "
          f"{subjects} subject-windows; at a new hour: {latency_hour:.3f} s")  # fmt: skip
    print(f"queue-age read: {queue_read:.3f} s")
    verdict = "ok" if steady < TARGET_SECONDS else "MISSED"
    print(f"target < {TARGET_SECONDS:.0f} s per evaluation: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
