"""``mailmon classify --response '550 5.1.1 ...'``: why did this reply fail delivery?

Classifies one SMTP reply line (reply code, enhanced status and text) with the rules in
``monitor/data/classify/``; parsing whole DSN and ARF files is a later slice of issue 4.
"""

from __future__ import annotations

import argparse
from typing import Any

from monitor.classify import classify
from monitor.cli.common import print_json
from monitor.model import Provider

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "classify",
        parents=[common],
        help="classify a failed SMTP reply: reason, hard/soft, blame, rule",
        description="Classify one SMTP reply line, e.g. "
        "--response '550 5.1.1 <a@example.org>: User unknown'.",
    )
    p.add_argument("--response", required=True, metavar="TEXT", help="the reply line")
    p.add_argument(
        "--provider",
        choices=[x.value for x in Provider],
        help="the receiving mailbox provider (its own rules are tried first)",
    )
    p.add_argument("--mx", metavar="HOST", help="the receiving MX host (infers the provider)")
    p.add_argument("--command", metavar="CMD", help="the SMTP command answered (RCPT, DATA...)")
    p.add_argument(
        "--transient",
        action="store_true",
        help="the failure was a deferral (never hard), not the final answer",
    )
    p.add_argument("--json", action="store_true", help="machine output: one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    verdict = classify(
        None,
        None,
        args.response,
        command=args.command,
        provider=args.provider,
        mx_host=args.mx,
        final=not args.transient,
    )
    if args.json:
        print_json({"response": args.response, **verdict._asdict()})
    else:
        kind = "hard" if verdict.hard else "soft"
        print(f"{verdict.reason} ({kind}, blame: {verdict.blame}) by rule {verdict.rule}")
    return 0
