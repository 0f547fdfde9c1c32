"""``mailmon rollup``: run the rollup engine once, at a time, or over a back-filled period."""

from __future__ import annotations

import argparse
import time
from typing import Any

from monitor.cli.common import config_of, open_store, parse_since, print_json
from monitor.errors import ConfigError

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rollup",
        parents=[common],
        help="evaluate the detectors (now, at a time, or replaying a period)",
        description="Evaluate the detectors over the stored counters in event time: at the "
        "newest event time (default), at --at, or at every --step from --from to --to "
        "(back-filled logs yield the same incidents as live).",
    )
    p.add_argument("--at", metavar="ISO", help="evaluate at this event time")
    p.add_argument("--from", dest="start", metavar="WHEN", help="replay from this time")
    p.add_argument(
        "--to", dest="end", metavar="WHEN", help="replay up to this time (default: newest event)"
    )
    p.add_argument("--step", default="5m", help="replay step (60s, 5m, 1h; default 5m)")
    p.add_argument(
        "--json",
        action="store_true",
        help="machine output: per evaluation, [kind, provider, domain] opened and closed, "
        "and the evidence of those opened; the last one also with the delivery latency per "
        "recipient domain, sending IP, sending domain and stream (1h and 24h)",
    )
    p.set_defaults(run=run)


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = text.strip().lower()
    try:
        seconds = float(value[:-1]) * units[value[-1]] if value[-1:] in units else float(value)
    except ValueError:
        raise ConfigError(f"--step {text!r}: expected a duration like 60s, 5m or 1h") from None
    if seconds < 60:
        raise ConfigError(f"--step {text!r}: at least 60s (one counter bucket)")
    return seconds


def _latency(evaluation: Any) -> list[dict[str, Any]]:
    """An evaluation's latency per subject: level, provider, value and each window's
    deliveries, p50 and p95 (None: no deliveries then)."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for t in evaluation.latency:
        row = rows.setdefault(
            (t.level, t.provider, t.value),
            {"level": t.level, "provider": t.provider, "value": t.value, "1h": None, "24h": None},
        )
        row[t.window] = {"deliveries": t.deliveries, "p50": t.p50, "p95": t.p95}
    return list(rows.values())


def run(args: argparse.Namespace) -> int:
    from monitor.cli.common import iso
    from monitor.rollup import newest_event_time

    config = config_of(args)
    with open_store(args, config, create=False) as store:
        from monitor.rollup.configured import engine_for

        engine = engine_for(config, store)
        ahead = time.time() + config.ingest.max_future_seconds
        newest = newest_event_time(store, not_after=ahead)
        start = parse_since(args.start, option="--from")
        if start is not None:
            end = parse_since(args.end, option="--to") if args.end else newest
            if end is not None and end < start:
                to = f"--to {args.end}" if args.end else f"the newest event ({iso(end)})"
                raise ConfigError(f"--from {args.start} is later than {to}: nothing to replay")
            runs = list(engine.replay(start, start if end is None else end, _seconds(args.step)))
        else:
            at = parse_since(args.at, option="--at") if args.at else newest
            runs = [] if at is None else [engine.evaluate(at)]
    report: list[dict[str, Any]] = [
        {
            "at": iso(r.at),
            "opened": [list(k) for k in r.incidents_opened],
            "closed": [list(k) for k in r.incidents_closed],
            # What each opened incident was opened with (as `mailmon incidents` shows it).
            "evidence": [
                {"kind": k[0], "provider": k[1], "domain": k[2], "evidence": r.evidence[k]}
                for k in r.incidents_opened
            ],
        }
        for r in runs
    ]
    if report:  # the state at the end: per evaluation it would repeat every subject
        report[-1]["latency"] = _latency(runs[-1])
    if args.json:
        print_json(report)
        return 0
    if not runs:
        print("no counters stored: nothing to evaluate")
        return 0
    for r in runs:
        for verb, keys in (("opened", r.incidents_opened), ("closed", r.incidents_closed)):
            for kind, provider, domain in keys:
                print(f"{iso(r.at)}  {verb}  {kind}  {provider}  {domain or '*'}")
    print(f"{len(runs)} evaluation(s), last at {iso(runs[-1].at)}")
    return 0
