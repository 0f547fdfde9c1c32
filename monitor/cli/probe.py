"""``mailmon probe run`` and ``mailmon probe results``: seed-inbox placement (docs/seeds.md)."""

from __future__ import annotations

import argparse
from collections import Counter
from statistics import median
from typing import Any

from monitor.cli.common import config_of, count, iso, open_store, parse_since, print_json

__all__ = ["register", "summarize"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "probe",
        parents=[common],
        help="seed-inbox probes: where our mail lands per provider",
        description="Send a probe to every seed mailbox of [seeds] and read the mailboxes "
        "over IMAP to see where each landed (inbox, a Gmail tab, spam, trash, missing, "
        "error). The seed_probes job runs the same on a schedule inside `serve`.",
    )
    commands = p.add_subparsers(dest="probe_command", required=True, metavar="COMMAND")
    r = commands.add_parser(
        "run",
        parents=[common],
        help="send the probes now and wait for their placement",
        description="One run: one probe per seed, each in its own SMTP transaction, then "
        "the mailboxes are polled until every probe is found or [seeds] timeout_seconds "
        "have passed. Exit status 1 when a probe could not be sent or read (error).",
    )
    r.add_argument("--json", action="store_true", help="machine output: the run as JSON")
    r.set_defaults(run=run)
    s = commands.add_parser(
        "results",
        parents=[common],
        help="stored placements: per run and per provider",
        description="The placements stored by earlier runs: each run's seeds, and per "
        "provider the share that reached the inbox and the median time to inbox.",
    )
    s.add_argument("--since", metavar="WHEN", default="7d",
                   help="runs after WHEN: a duration back from now (7d) or an ISO 8601 time "
                   "(default 7d)")  # fmt: skip
    s.add_argument("--runs", type=count(1), default=5, metavar="N",
                   help="the newest N runs shown seed by seed (default 5)")  # fmt: skip
    s.add_argument("--json", action="store_true", help="machine output: a JSON object")
    s.set_defaults(run=results)


def run(args: argparse.Namespace) -> int:
    from monitor.collectors.seeds.run import run_probes
    from monitor.driver import Driver
    from monitor.metrics import Metrics
    from monitor.pipeline import Pipeline
    from monitor.providers import resolver_for

    config = config_of(args)
    with open_store(args, config) as store:
        pipeline = Pipeline(store, resolver=resolver_for(config, store), metrics=Metrics(),
                            max_future_seconds=config.ingest.max_future_seconds)  # fmt: skip
        result = run_probes(config.seeds, Driver(pipeline), store)
        pipeline.flush()
    rows = [_outcome_row(o) for o in result.outcomes]
    if args.json:
        print_json({"run_id": result.run_id, "started_at": result.started_at.isoformat(),
                    "deleted": result.deleted, "placements": rows})  # fmt: skip
    else:
        print(f"run {result.run_id}: {len(rows)} probes")
        _print_rows(rows)
    return 1 if any(r["placement"] == "error" for r in rows) else 0


def _outcome_row(o: Any) -> dict[str, Any]:
    v = o.verdicts
    return {
        "seed": o.probe.seed, "provider": o.probe.provider, "placement": o.placement,
        "folder": o.folder, "seconds_to_inbox": o.seconds_to_inbox,
        "message_id": o.probe.message_id,
        "spf": v.spf if v else None, "dkim": v.dkim if v else None,
        "dmarc": v.dmarc if v else None, "compauth": v.compauth if v else None,
        "spam": v.spam if v else None,
        "list_unsubscribe": v.list_unsubscribe if v else False,
        "one_click": v.one_click if v else False,
        "finding": o.finding, "error": o.error,
    }  # fmt: skip


def results(args: argparse.Namespace) -> int:
    from monitor.collectors.seeds.records import SeedPlacement

    config = config_of(args)
    since = parse_since(args.since)
    with open_store(args, config, create=False) as store:
        placements = [r for r in store.records(SeedPlacement.kind, since=since)
                      if isinstance(r, SeedPlacement)]  # fmt: skip
    out = summarize(placements, runs=args.runs)
    if args.json:
        print_json(out)
        return 0
    if not placements:
        print("no seed placements stored for this period")
        return 0
    print("per provider:")
    for p in out["providers"]:
        secs = p["median_seconds_to_inbox"]
        shown = "-" if secs is None else f"{secs:.0f}s"
        counts = " ".join(f"{k}={v}" for k, v in p["placements"].items())
        print(f"  {p['provider']:<12} {p['probes']:>5} probes  inbox {p['inbox_rate'] * 100:5.1f}%"
              f"  median to inbox {shown:>6}  {counts}")  # fmt: skip
    for r in out["runs"]:
        print(f"run {r['run_id']} ({r['at']}):")
        _print_rows(r["placements"])
    return 0


def summarize(placements: list[Any], *, runs: int = 5) -> dict[str, Any]:
    """Per provider (probes, placements, inbox rate, median time to inbox) and the newest runs."""
    from monitor.collectors.seeds.records import INBOX_PLACEMENTS

    by_provider: dict[str, list[Any]] = {}
    by_run: dict[str, list[Any]] = {}
    for p in placements:
        by_provider.setdefault(p.provider, []).append(p)
        by_run.setdefault(p.run_id, []).append(p)
    providers = []
    for name in sorted(by_provider):
        rows = by_provider[name]
        counted = Counter(r.placement for r in rows)
        measured = [r for r in rows if r.placement != "error"]
        inbox = [r for r in measured if r.placement in INBOX_PLACEMENTS]
        times = [r.seconds_to_inbox for r in inbox if r.seconds_to_inbox is not None]
        providers.append({
            "provider": name, "probes": len(rows), "placements": dict(sorted(counted.items())),
            "inbox_rate": round(len(inbox) / len(measured), 4) if measured else 0.0,
            "median_seconds_to_inbox": median(times) if times else None,
        })  # fmt: skip
    newest = sorted(by_run, key=lambda k: min(r.occurred_at for r in by_run[k]), reverse=True)
    shown = []
    for run_id in newest[:runs]:
        rows = sorted(by_run[run_id], key=lambda r: r.seed)
        shown.append({
            "run_id": run_id, "at": iso(min(r.occurred_at for r in rows).timestamp()),
            "placements": [_record_row(r) for r in rows],
        })  # fmt: skip
    return {"providers": providers, "runs": shown}


def _record_row(r: Any) -> dict[str, Any]:
    return {
        "seed": r.seed, "provider": r.provider, "placement": r.placement, "folder": r.folder,
        "seconds_to_inbox": r.seconds_to_inbox, "message_id": r.message_id, "spf": r.spf,
        "dkim": r.dkim, "dmarc": r.dmarc, "compauth": r.compauth, "spam": r.spam,
        "list_unsubscribe": r.list_unsubscribe, "one_click": r.one_click,
        "finding": r.finding, "error": r.error,
    }  # fmt: skip


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        secs = row["seconds_to_inbox"]
        auth = " ".join(f"{k}={row[k]}" for k in ("spf", "dkim", "dmarc", "compauth") if row[k])
        note = row["finding"] or row["error"] or ""
        shown = "" if secs is None else f"{secs:.0f}s"
        print(f"  {row['seed']:<32} {row['provider']:<10} {row['placement']:<15} {shown:>6}  "
              f"{auth}  {note}".rstrip())  # fmt: skip
