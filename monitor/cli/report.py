"""``mailmon report weekly``: the weekly deliverability report of one ISO week."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from monitor.cli.common import config_of, open_store, print_json, time_zone

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("report", parents=[common], help="the weekly deliverability report")
    kinds = p.add_subparsers(dest="report", required=True, metavar="REPORT")
    w = kinds.add_parser(
        "weekly",
        parents=[common],
        help="one ISO week against the week before",
        description="Volumes, rates, providers, incidents, bounces, complaints, latency, "
        "seeds, DMARC, DNS and the recipients to suppress, for one ISO week (Monday to "
        "Monday in [report] time_zone). Prints the plain-text report unless told otherwise.",
    )
    w.add_argument("--week", metavar="YYYY-Www",
                   help="the ISO week, e.g. 2026-W47 (default: the last complete week)")
    w.add_argument("--time-zone", type=time_zone, metavar="ZONE",
                   help="read the week in this IANA time zone (default: [report] time_zone)")
    w.add_argument("--out", metavar="DIR", type=Path,
                   help="write the HTML, text, JSON, CSV, charts and .eml into DIR")
    w.add_argument("--send", action="store_true",
                   help="mail it through the [report] SMTP relay to [report] to")
    w.add_argument("--json", action="store_true", help="machine output: every figure as JSON")
    w.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from monitor.report import build, last_complete_week, parse_week, send
    from monitor.report.mail import check

    config = config_of(args)
    settings = config.report
    zone = args.time_zone or settings.time_zone
    week = parse_week(args.week, zone) if args.week else last_complete_week(time.time(), zone)
    if args.send:
        check(settings)  # before the work, not after it
    with open_store(args, config, create=False) as store:
        report = build(store, config, week)
    if args.out is not None:
        written = report.write(args.out, settings)
        print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    if args.send:
        send(report.message(settings), settings)
        print(f"mailed {week.name} to {', '.join(settings.to)}", file=sys.stderr)
    if args.json:
        print_json(report.figures)
    elif args.out is None and not args.send:
        sys.stdout.write(report.text())
    return 0
