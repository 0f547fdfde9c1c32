"""Detection delay of *starts rejecting* per volume, on the rejecting scenario of issue 16.

    .venv/bin/python bench/bench_detection.py [--seeds 5]

Input: ``monitor.testing.traffic.rejecting_scenario`` (four days of per-minute counters:
Gmail at 600 attempts an hour, Yahoo at 20 per 5 minutes, Microsoft at ~150 an hour across
outlook.com (100) and hotmail.com (50), orange.fr at 100 an hour refusing half, and four
decoys), once per seed.  Each episode's
first 30 minutes are evaluated every minute, as the live service does, with the domain and
provider rejecting detectors; the delay is the first open incident's time minus the
episode's start.  Then, for every seed, the whole of days 2-4 every 5 minutes: any
incident outside an episode (a decoy firing, a false page) is counted.  A table per seed
follows the summary.  Targets (issue 16 part 3):
5 minutes at >= 20 attempts per 5 minutes, 15 minutes at >= 100 an hour.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monitor.rollup import (  # noqa: E402
    ProviderRejectingDetector,
    RejectingDetector,
    RollupEngine,
    list_incidents,
)
from monitor.store import Store  # noqa: E402
from monitor.store.schema import counters  # noqa: E402
from monitor.testing.traffic import DAY, Scenario, rejecting_scenario  # noqa: E402


def _store(scenario: Scenario, path: Path) -> Store:
    store = Store.open(f"sqlite:///{path}")
    with store.engine.begin() as conn:
        conn.execute(counters.insert(), list(scenario.rows()))
    return store


def _hourly(scenario: Scenario, domains: tuple[str, ...]) -> float:
    return sum(d.hourly for d in scenario.domains if d.name in domains)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    delays: dict[tuple[str, str, float, float, int | None], list[float | None]] = {}
    quiet_report: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1, args.seeds + 1):
            scenario = rejecting_scenario(seed=seed)
            store = _store(scenario, Path(tmp) / f"s{seed}.db")
            try:
                engine = RollupEngine(store, (RejectingDetector(), ProviderRejectingDetector()),
                                      weeks=0)  # fmt: skip
                for episode in scenario.episodes:
                    list(engine.replay(episode.start, episode.start + 30 * 60, 60))
                with store.engine.connect() as conn:
                    rows = list_incidents(conn)
                for episode in scenario.episodes:
                    subjects = [(d, (d,), episode.domain_deadlines.get(d)) for d in episode.domains]
                    everyone = tuple(d.name for d in scenario.domains
                                     if d.provider == episode.provider)  # fmt: skip
                    subjects.append(("*", everyone, episode.provider_deadline))
                    for domain, covered, deadline in subjects:
                        kind = "provider_rejecting" if domain == "*" else "domain_rejecting"
                        starts = [r["started_at"] for r in rows if r["kind"] == kind
                                  and r["provider"] == episode.provider
                                  and r["domain"] == ("" if domain == "*" else domain)
                                  and episode.start <= r["started_at"] <= episode.end]  # fmt: skip
                        key = (episode.provider, domain, _hourly(scenario, covered),
                               episode.share, deadline)
                        delays.setdefault(key, []).append(
                            (min(starts) - episode.start) / 60 if starts else None
                        )
                quiet_report.append(f"seed {seed}: {_quiet(scenario, tmp)}")
            finally:
                store.close()
    print(f"{'provider':10} {'domain':12} {'per hour':>8} {'per 5 min':>9} {'share':>5} {'target':>7} "
          f"{'delay min/median/max (minutes)':>32}  missed")  # fmt: skip
    for (provider, domain, hourly, share, deadline), found in delays.items():
        seen = [d for d in found if d is not None]
        spread = (f"{min(seen):.0f} / {statistics.median(seen):.0f} / {max(seen):.0f}"
                  if seen else "-")  # fmt: skip
        target = f"{deadline // 60} min" if deadline else "-"
        late = sum(1 for d in seen if deadline and d * 60 > deadline)
        missed = f"{found.count(None)} of {len(found)} not found, {late} late"
        print(f"{provider:10} {domain:12} {hourly:8.0f} {hourly / 12:9.1f} {share:5.0%} {target:>7} "
              f"{spread:>32}  {missed}")  # fmt: skip
    print("\n".join(quiet_report))
    print("per seed, delay in minutes (- not found):")
    keys = list(delays)
    print(f"{'seed':>4}  " + " ".join(f"{k[1] if k[1] != '*' else k[0] + '/*':>12}" for k in keys))
    for i in range(args.seeds):
        cells = (delays[k][i] for k in keys)
        print(f"{i + 1:>4}  " + " ".join(f"{'-' if d is None else f'{d:.0f}':>12}" for d in cells))
    print(f"{args.seeds} seed(s) in {time.perf_counter() - started:.0f} s")
    return 0


def _quiet(scenario: Scenario, tmp: str) -> str:
    """Days 2-4 every 5 minutes: incidents that open outside every episode."""
    store = _store(scenario, Path(tmp) / f"quiet{scenario.seed}.db")
    try:
        engine = RollupEngine(store, (RejectingDetector(), ProviderRejectingDetector()), weeks=0)
        list(engine.replay(scenario.start + DAY, scenario.end, 300))
        with store.engine.connect() as conn:
            rows = list_incidents(conn)
    finally:
        store.close()
    stray = [r for r in rows
             if not any(e.start <= r["started_at"] <= e.end and r["provider"] == e.provider
                        for e in scenario.episodes)]  # fmt: skip
    names = ", ".join(d.name for d in scenario.decoys)
    if not stray:
        return f"decoys ({names}) and quiet times, days 2-4 every 5 min: 0 false pages"
    listed = "; ".join(f"{r['kind']} {r['provider']} {r['domain'] or '*'}" for r in stray)
    return f"decoys ({names}): {len(stray)} false page(s): {listed}"


if __name__ == "__main__":
    raise SystemExit(main())
