"""``mailmon stats``: outcomes and rates per recipient domain, provider, reason, sending
domain, sending IP or stream."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.cli.common import config_of, count, open_store, parse_since, print_json

__all__ = ["register"]

_COLUMNS = ("submitted", "delivered", "deferred", "bounced", "expired", "rejected")
_RATES = ("delivery_rate", "bounce_rate", "deferral_rate", "complaint_rate")
#: --by value -> the store's grouping (also the group's key in --json rows)
_BY = {
    "domain": "domain",
    "provider": "provider",
    "reason": "reason",
    "blame": "blame",
    "sender-domain": "sender_domain",
    "sending-ip": "sending_ip",
    "stream": "stream",
}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "stats",
        parents=[common],
        help="delivery numbers per domain, provider, sender, IP or stream",
        description="Per group: delivered, bounced, expired and rejected count "
        "recipients with that final outcome; deferred counts deferral attempts.",
    )
    p.add_argument("--by", choices=_BY, default="domain",
                   help="group by recipient domain, mailbox provider, failure reason, "
                   "who is to blame for failures (failures only), "
                   "sending domain (of the sender address), sending IP, or stream "
                   "(the stream:, category: or campaign: tag)")
    p.add_argument(
        "--since", metavar="WHEN", help="a duration back from now (24h, 7d) or an ISO 8601 time"
    )
    p.add_argument("--until", metavar="WHEN", help="end of the period (same forms as --since)")
    p.add_argument(
        "--include-ndr",
        action="store_true",
        help="include our own non-delivery notices (null-sender mail)",
    )
    p.add_argument(
        "--limit", type=count(0), default=0, help="show only the N largest groups (0: all)"
    )
    p.add_argument("--json", action="store_true", help="machine output: a JSON array of rows")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    with open_store(args, config, create=False) as store:
        by = _BY[args.by]
        rows = store.stats(
            by,
            since=parse_since(args.since),
            until=parse_since(args.until, option="--until"),
            include_ndr=args.include_ndr,
        )
    if args.limit > 0:
        rows = rows[: args.limit]
    if args.json:
        print_json(rows)
    else:
        _table(rows, by)
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _table(rows: list[dict[str, Any]], by: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column(by, no_wrap=True)
    for name in _COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    for name in ("delivery", "bounce", "deferral"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row[by] or "(none)",
            *(f"{row[c]:,}" for c in _COLUMNS),
            *(_pct(row[r]) for r in _RATES[:3]),
        )
    console = Console()
    if not console.is_terminal:  # a pipe or a file: never truncate names to fit 80 columns
        console = Console(width=1000)
    if not rows:
        console.print("no deliveries recorded for this period")
        return
    console.print(table)
