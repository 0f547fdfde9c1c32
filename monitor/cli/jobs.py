"""``mailmon jobs``: the scheduled jobs, when they last ran and when they run next."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from monitor.cli.common import config_of, open_store, print_json

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "jobs",
        parents=[common],
        help="scheduled jobs: last and next run, last error",
        description="The jobs `mailmon serve` schedules ([jobs.NAME] in the config): each "
        "one's trigger, last run, last success, next run and last error, as the store has "
        "them (serve may be running or not). Times are UTC.",
    )
    p.add_argument("--json", action="store_true", help="machine output: a JSON array")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from monitor.jobs.catalog import CATALOG, effective, trigger_of
    from monitor.store.jobs import JobState, read_jobs

    config = config_of(args)
    with open_store(args, config, create=False) as store:
        stored = read_jobs(store.engine)
    rows = []
    for name in sorted(CATALOG.keys() | stored.keys()):
        # A job the store has and the catalog not: scheduled by another mailmon version.
        settings = effective(config, name) if name in CATALOG else None
        # The trigger the last serve scheduled; this config's until one has.
        state = stored.get(name) or JobState(name, trigger_of(settings)[1] if settings else "", 0)
        rows.append({
            "job": name,
            "enabled": settings is not None and settings.enabled,
            "trigger": state.trigger,
            "last_run": _iso(state.last_run_at),
            "last_finished": _iso(state.last_finished_at),
            "last_success": _iso(state.last_success_at),
            "next_run": _iso(state.next_run_at),
            "last_error": state.last_error,
            "last_error_at": _iso(state.last_error_at),
            "failures": state.failures,
            "ran_by": state.ran_by,
        })  # fmt: skip
    if args.json:
        print_json(rows)
    else:
        _table(rows)
    return 0


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=1000)
    table = Table(box=None, header_style="bold")
    columns = ("job", "trigger", "last run", "last success", "next run", "failures", "last error")
    for name in columns:
        table.add_column(name, no_wrap=name != "last error")
    for r in rows:
        error = f"{r['last_error_at']} {r['last_error']}" if r["last_error"] else ""
        table.add_row(
            r["job"],
            r["trigger"] if r["enabled"] else f"{r['trigger']} (disabled)",
            r["last_run"] or "never",
            r["last_success"] or "never",
            (r["next_run"] or "-") if r["enabled"] else "-",
            str(r["failures"]),
            error,
        )
    console.print(table)
