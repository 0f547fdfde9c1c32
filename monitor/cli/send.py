"""``mailmon send``: compose and submit one tracked message through ``[send]``'s relay."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from monitor.cli.common import config_of, open_store, print_json

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "send", parents=[common], help="send one tracked message through the relay",
        description="Compose one message (its own Message-ID; In-Reply-To/References from "
        "the thread of --in-reply-to; a VERP return path and a quoted reference per "
        "recipient; List-Unsubscribe and DKIM as [send] says), submit it through the "
        "[send] relay and record `submitted` with its headers (docs/send.md).",
    )  # fmt: skip
    p.add_argument("--to", action="append", required=True, metavar="ADDR", help="repeatable")
    p.add_argument("--subject", help="required unless --in-reply-to")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text", default="", help="the plain-text body")
    text.add_argument("--text-file", metavar="FILE", help="... read from FILE ('-': stdin)")
    p.add_argument("--html-file", metavar="FILE", help="an HTML alternative")
    p.add_argument("--from", dest="from_address", metavar="ADDR",
                   help="default: [send] from_address")  # fmt: skip
    p.add_argument("--reply-to", metavar="ADDR")
    p.add_argument("--in-reply-to", metavar="MESSAGE_ID", help="the message this answers")
    p.add_argument("--tag", action="append", default=[], metavar="TAG",
                   help="e.g. stream:receipts (repeatable)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(run=run)


def _read(name: str) -> str:
    return sys.stdin.read() if name == "-" else Path(name).read_text("utf-8")


def run(args: argparse.Namespace) -> int:
    from monitor.metrics import Metrics
    from monitor.pipeline import Pipeline
    from monitor.send import Draft, send

    config = config_of(args)
    draft = Draft(to=tuple(args.to), subject=args.subject,
                  text=_read(args.text_file) if args.text_file else args.text,
                  html=_read(args.html_file) if args.html_file else None,
                  from_address=args.from_address, reply_to=args.reply_to,
                  in_reply_to=args.in_reply_to, tags=tuple(args.tag))  # fmt: skip
    with open_store(args, config) as store:
        pipeline = Pipeline(store, metrics=Metrics())
        try:
            sent = send(draft, config.send, pipeline)
        finally:
            pipeline.close()
    if args.json:
        print_json({"message_id": sent.message_id, "subject": sent.subject,
                    "recipients": sent.recipients})  # fmt: skip
    else:
        print(f"<{sent.message_id}> {sent.subject!r}")
        for r in sent.recipients:
            print(f"  {r['recipient']}: {r['status']} {r['code']} {r['reply']}")
    return 0 if sent.accepted == len(sent.recipients) else 1
