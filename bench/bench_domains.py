"""Rollup memory and time against the number of recipient domains (issue 24 part 5).

    .venv/bin/python bench/bench_domains.py [--domains 20000] [--max-domains 1000]

Input: a SQLite store whose ``counters`` hold two days of three busy domains (every minute)
and ``--domains`` small ones (one attempt every 8 hours each, spread over the providers),
as a hook flooded with distinct recipient domains would leave it.  Measured: the first
evaluation (the engine reads the whole week) and the next one a minute later (the steady
state) of the counters detectors, once judging every domain alone (``max_domains`` 0, the
behaviour before) and once with the busiest ``--max-domains`` alone and the rest per
provider (the default): wall time, peak Python memory (tracemalloc) and the tally entries
the reader keeps between evaluations.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monitor.rollup import RollupEngine  # noqa: E402
from monitor.rollup.detectors import (  # noqa: E402
    BounceRateDetector,
    DeferralSpikeDetector,
    ProviderRejectingDetector,
    RejectingDetector,
)
from monitor.store import Store  # noqa: E402
from monitor.store.schema import counters  # noqa: E402

START = 1_772_409_600
AT = START + 86400 + 14 * 3600
PROVIDERS = ("google", "microsoft", "yahoo", "other")


def _fill(store: Store, domains: int) -> int:
    rows: list[dict[str, object]] = []
    for minute in range(START, AT, 60):
        for domain, provider, n in (("gmail.com", "google", 10), ("outlook.com", "microsoft", 6)):
            rows.append({"bucket": minute, "recipient_domain": domain, "provider": provider,
                         "outcome": "delivered", "reason": "", "stream": "", "count": n})  # fmt: skip
    for i in range(domains):
        for minute in range(START + i * 60 % 28800, AT, 28800):
            rows.append({"bucket": minute, "recipient_domain": f"d{i}.example",
                         "provider": PROVIDERS[i % 4], "outcome": "delivered", "reason": "",
                         "stream": "", "count": 1})  # fmt: skip
    with store.engine.begin() as conn:
        for k in range(0, len(rows), 50_000):
            conn.execute(counters.insert(), rows[k : k + 50_000])
    return len(rows)


def _measure(store: Store, max_domains: int) -> str:
    detectors = (RejectingDetector(), ProviderRejectingDetector(), BounceRateDetector(),
                 DeferralSpikeDetector())  # fmt: skip
    engine = RollupEngine(store, detectors, weeks=0, max_domains=max_domains)
    out = []
    for label, at in (("first", AT), ("steady", AT + 60)):
        tracemalloc.start()
        started = time.perf_counter()
        result = engine.evaluate(at)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        judged = sum(1 for s in result.subjects if s.kind == "domain_rejecting")
        out.append(f"{label} {seconds:6.2f} s, peak {peak / 2**20:7.1f} MiB, "
                   f"{judged} domains judged")  # fmt: skip
    held = engine.windows.held()
    return f"max_domains {max_domains or 'none':>5}: " + "; ".join(out) + f"; {held} tallies held"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, default=20_000)
    parser.add_argument("--max-domains", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{tmp}/d.db") as store:
        rows = _fill(store, args.domains)
        print(f"{args.domains} small domains + 2 busy, {rows} counter rows")
        print(_measure(store, 0))
        print(_measure(store, args.max_domains))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
