"""Rollup memory and time against the number of recipient domains (issue 24 part 5).

    .venv/bin/python bench/bench_domains.py [--domains 20000] [--max-domains 1000]
    .venv/bin/python bench/bench_domains.py --distinct-domains 400000 [--mailmon PATH]

Input: a SQLite store whose ``counters`` hold two days of three busy domains (every minute)
and ``--domains`` small ones (one attempt every 8 hours each, spread over the providers),
as a hook flooded with distinct recipient domains would leave it.  Measured: the first
evaluation (the engine reads the whole week) and the next one a minute later (the steady
state) of the counters detectors, once judging every domain alone (``max_domains`` 0, the
behaviour before) and once with the busiest ``--max-domains`` alone and the rest per
provider (the default): wall time, peak Python memory (tracemalloc) and the tally entries
the reader keeps between evaluations.

``--distinct-domains N``: the whole program instead, on a store whose history is one day.
N KumoMTA Delivery records, one per recipient domain ``d<i>.example``, spread over one day,
go through ``mailmon ingest kumomta`` (MX resolution off: every domain is ``other``; the
store is cached in ``bench/out/``), then ``mailmon rollup`` evaluates every detector at the
newest event time as its own process: its peak RSS and wall time are printed.
``--mailmon`` runs another checkout's ``mailmon`` for the rollup (the code before a change).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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

OUT = ROOT / "bench" / "out"
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


def _records(path: Path, domains: int) -> None:
    """One KumoMTA Delivery record per recipient domain, spread evenly over one day."""
    with path.open("w") as out:
        for i in range(domains):
            at = START + i * 86400 // domains
            record = {
                "type": "Delivery", "id": f"{i:032x}", "timestamp": at, "created": at - 5,
                "sender": "noreply@shop.example", "recipient": f"u@d{i}.example",
                "queue": "shop", "nodeid": "bench", "size": 1000, "num_attempts": 1,
                "headers": {"Message-ID": f"<m{i}@shop.example>"},
                "peer_address": {"name": f"mx.d{i}.example.", "addr": "192.0.2.1"},
                "source_address": {"address": "203.0.113.7:5000"},
                "response": {"code": 250, "content": "OK", "command": ".",
                             "enhanced_code": {"class": 2, "subject": 0, "detail": 0}},
            }  # fmt: skip
            out.write(json.dumps(record) + "\n")


def _run(command: list[str]) -> tuple[str, int]:
    """Wall and CPU seconds, and peak RSS (bytes), of ``command`` as its own process (the
    CPU time says more than the wall time on a busy machine)."""
    env = os.environ | {"MAILMON_RESOLVE_MX": "0"}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)}: exit {os.waitstatus_to_exitcode(status)}")
    cpu = usage.ru_utime + usage.ru_stime
    return f"{seconds:.1f} s wall, {cpu:.1f} s CPU", usage.ru_maxrss * 1024  # kB on Linux


def _distinct(domains: int, mailmon: str) -> None:
    """Ingest (cached) and one ``mailmon rollup`` over ``domains`` domains of one day."""
    OUT.mkdir(parents=True, exist_ok=True)
    db = OUT / f"domains-{domains}.db"
    own = str(Path(sys.executable).with_name("mailmon"))
    if not db.exists():
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "records.jsonl"
            _records(log, domains)
            partial = db.with_suffix(".partial")
            seconds, rss = _run([own, "ingest", "kumomta", str(log), "--no-progress",
                                 "--db", f"sqlite:///{partial}"])  # fmt: skip
            partial.rename(db)
        print(f"ingest of {domains} records: {seconds}, peak RSS {rss / 1e6:.0f} MB")
    seconds, rss = _run([mailmon, "rollup", "--db", f"sqlite:///{db}"])
    print(f"rollup over {domains} distinct domains of one day ({mailmon}): "
          f"{seconds}, peak RSS {rss / 1e6:.0f} MB")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, default=20_000)
    parser.add_argument("--max-domains", type=int, default=1000)
    parser.add_argument("--distinct-domains", type=int, default=0, metavar="N")
    parser.add_argument("--mailmon", default=str(Path(sys.executable).with_name("mailmon")))
    args = parser.parse_args(argv)
    if args.distinct_domains:
        _distinct(args.distinct_domains, args.mailmon)
        return 0
    with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{tmp}/d.db") as store:
        rows = _fill(store, args.domains)
        print(f"{args.domains} small domains + 2 busy, {rows} counter rows")
        print(_measure(store, 0))
        print(_measure(store, args.max_domains))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
