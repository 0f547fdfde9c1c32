"""``mailmon incidents``: what the rollup engine detected, open and past."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.cli.common import config_of, iso, open_store, parse_since, print_json
from monitor.config import Config
from monitor.errors import ConfigError

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "incidents",
        parents=[common],
        help="incidents found by the rollup engine",
        description="Incidents (newest first) with their evidence: window counts, rates, "
        "baseline and the top replies. Times are event times.",
    )
    p.add_argument("--open", action="store_true", help="only incidents still open")
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="only incidents open at or ended after this (24h, 7d or an ISO 8601 time)",
    )
    p.add_argument(
        "--kind",
        help="only this kind: domain_rejecting, bounce_rate, deferral_spike, complaint_rate, "
        "provider_silent, delivery_latency, queue_age, or a sending_ip_, sender_domain_ or "
        "stream_ rejecting / bounce_rate (an unknown kind is an error that lists them all)",
    )
    p.add_argument("--json", action="store_true", help="machine output: a JSON array")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from monitor.rollup import list_incidents

    config = config_of(args)
    if args.kind is not None:
        _check_kind(args.kind, config)
    with open_store(args, config, create=False) as store, store.engine.connect() as conn:
        rows = list_incidents(
            conn, open_only=args.open, since=parse_since(args.since), kind=args.kind
        )
    if args.json:
        print_json([_jsonable(r) for r in rows])
    else:
        _table(rows)
    return 0


def _check_kind(kind: str, config: Config) -> None:
    from monitor.rollup.configured import detectors_for

    kinds = sorted({d.kind for d in detectors_for(config)})
    if kind not in kinds:
        raise ConfigError(f"--kind {kind!r}: not an incident kind; one of {', '.join(kinds)}")


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"started_at": iso(row["started_at"]), "ended_at": iso(row["ended_at"])}


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=1000)
    if not rows:
        console.print("no incidents")
        return
    table = Table(box=None, header_style="bold")
    # The sending_ip_* kinds keep the IP where the others keep the domain.
    columns = (
        "id", "kind", "provider", "domain/ip", "started", "ended", "value", "top", "failures",
    )  # fmt: skip
    for name in columns:
        table.add_column(name, no_wrap=True)
    for r in rows:
        evidence = r["evidence"]
        reasons = evidence.get("top_reasons") or evidence.get("top_replies") or [{}]
        table.add_row(
            str(r["id"]),
            r["kind"],
            r["provider"],
            r["domain"] or "*",
            iso(r["started_at"]) or "",
            iso(r["ended_at"]) or "open",
            _value(r["kind"], evidence),
            str(reasons[0].get("reason") or ""),
            _failures(evidence.get("failures")),
        )
    console.print(table)


def _failures(failures: dict[str, Any] | None) -> str:
    """Hard/soft counts and the top blame, e.g. ``hard 5 soft 15 reputation``."""
    if not failures:
        return ""
    hard = failures.get("hard") or {}
    # The store keeps JSON with sorted keys: the largest blame is found, not first.
    counts = failures.get("blame") or {}
    blame = min(counts, key=lambda b: (-counts[b], b)) if counts else ""
    return f"hard {hard.get('hard', 0)} soft {hard.get('soft', 0)} {blame}".strip()


def _value(kind: str, evidence: dict[str, Any]) -> str:
    """What the detector measured when the incident opened, in its unit."""
    value = evidence.get("value")
    if value is None and kind == "domain_rejecting":  # incidents stored before "value"
        value = evidence.get("windows", {}).get("5m", {}).get("rejecting_share")
    if value is None:
        return "-"
    if kind == "delivery_latency":
        return f"p95 {value / 60:.0f} min"
    if kind == "queue_age":
        return f"{value:.0f} stuck"
    if kind == "provider_silent":
        return f"0 of >={value:.0f}"
    return f"{value * 100:.2f}%" if value < 0.01 else f"{value * 100:.0f}%"
