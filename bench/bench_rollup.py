"""Rollup benchmark: one evaluation of the detectors over 1,000 domains x 30 days of counters.

    .venv/bin/python bench/bench_rollup.py [--domains 1000] [--days 30] [--runs 10]

Input: the ``counters`` table of a SQLite store filled directly (what ingest would leave):
1,000 recipient domains in a Zipf mix of daily volume (the largest ~100,000 attempts a
day, so it has a row every minute; the tail a row every few hours), each minute's row
split into delivered, a share of deferred (some for rejecting reasons) and bounced rows.
The database is cached in ``bench/out/`` while the generator is unchanged.

Measured: the first evaluation (cold: the engine reads the whole week; again once per UTC
day of event time, see ``WindowReader``) and then the steady state the live service pays
every minute (each run one minute of event time later), plus a 5-minute-step replay of
one hour.  Target: under 1 s per (steady) evaluation.
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

from monitor.rollup import RollupEngine  # noqa: E402
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


def build(domains: int, days: int) -> Path:
    """The cached benchmark database for these parameters, generated when missing."""
    source = inspect.getsource(_rows) + f"{domains},{days}"  # regenerate when the data changes
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
        rows = conn.execute("SELECT count(*) FROM counters").fetchone()[0]
    tmp.rename(path)
    print(f"generated {rows:,} counter rows in {time.perf_counter() - started:.0f} s: {path.name}")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    path = build(args.domains, args.days)
    with Store.open(f"sqlite:///{path}") as store:
        rows = store.count("counters")
        engine = RollupEngine(store)
        at = START + (args.days - 1) * 86400 + 12 * 3600  # noon of the last day
        started = time.perf_counter()
        engine.evaluate(at)
        cold = time.perf_counter() - started
        times = []
        for step in range(1, args.runs + 1):
            started = time.perf_counter()
            result = engine.evaluate(at + step * 60)
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        replay_from = at + (args.runs + 5) * 60
        replayed = list(engine.replay(replay_from, replay_from + 3600, 300))
        replay = time.perf_counter() - started
        with store.engine.begin() as conn:  # the benchmark's incidents are not the point
            conn.exec_driver_sql("DELETE FROM incidents")
    steady = statistics.median(times)
    print(f"counters: {rows:,} rows, {args.domains} domains x {args.days} days (SQLite)")
    print(f"pairs evaluated: {len(result.states)}")
    print(f"first evaluation (cold): {cold:.3f} s")
    print(f"evaluation (steady, median of {len(times)}): {steady:.3f} s  max {max(times):.3f} s")
    print(f"replay of 1 h at 5-min steps: {len(replayed)} evaluations in {replay:.3f} s")
    verdict = "ok" if steady < TARGET_SECONDS else "MISSED"
    print(f"target < {TARGET_SECONDS:.0f} s per evaluation: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
