"""``mailmon classify``: why did this fail?  DSN / ARF / auto-reply files, or one SMTP reply.

    mailmon classify bounce.eml inbox.mbox - --json     # one JSON object per recipient
    mailmon classify --response '550 5.1.1 <a@example.org>: User unknown'

Files are parsed by :func:`monitor.collectors.mail.dsn.parse` (``.eml``, mbox files message by
message, ``-`` for stdin); a file that cannot be read yields an error line, not a crash,
and the exit status 1.  Providers (of a report's sender, of ``--mx``) are named by the
packaged rules and the config's ``[providers] rules_file``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from monitor.classify import classify
from monitor.cli.common import config_of, print_json
from monitor.collectors.mail.dsn import DEFAULT_MAX_BYTES, Report, parse
from monitor.collectors.mail.mailfiles import MailItem, read_messages
from monitor.model import Provider
from monitor.provider_rules import ProviderRules

__all__ = ["recipient_rows", "register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "classify",
        parents=[common],
        help="classify DSN/ARF/auto-reply files or one failed SMTP reply",
        description="Classify bounce, complaint and auto-reply emails (FILE: .eml, mbox, - "
        "for stdin), or one SMTP reply line with --response "
        "'550 5.1.1 <a@example.org>: User unknown'.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="email files (.eml, mbox, -)")
    p.add_argument("--response", metavar="TEXT", help="classify this reply line instead")
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
    p.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help="read at most this much of one email; the rest is ignored and the result "
        "marked truncated (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="machine output: JSON lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rules = ProviderRules.load(config_of(args).providers.rules_file)
    if args.response is not None:
        return _response(args, rules)
    if not args.files:
        print("mailmon classify: give FILE... or --response TEXT", file=sys.stderr)
        return 2
    failed = False
    for path in args.files:
        try:
            for item in read_messages(path, max_bytes=args.max_bytes):
                report = parse(item.data, max_bytes=args.max_bytes, provider_rules=rules)
                for row in recipient_rows(report, item):
                    _emit(row, args.json)
        except OSError as exc:
            failed = True
            _emit({"file": path, "error": exc.strerror or str(exc)}, args.json)
    return 1 if failed else 0


def recipient_rows(report: Report, item: MailItem) -> list[dict[str, object]]:
    """The output objects of one parsed email: one per recipient (one when it has none)."""
    common: dict[str, object] = {
        "original_message_id": report.original.message_id,
        "kind": report.kind,
        "file": item.file,
    }
    if item.position:
        common["message"] = item.position
    if report.best_effort:
        common["best_effort"] = True
        common["truncated"] = report.truncated
        common["defects"] = report.defects
    if not report.recipients:
        return [{"recipient": None, "reason": "undefined", "hard": False, **common}]
    rows = []
    listed = [(r, False) for r in report.recipients] + [(r, True) for r in report.nested]
    for r, nested in listed:
        extra: dict[str, object] = {"nested": True} if nested else {}
        rows.append(
            {
                "recipient": r.recipient,
                "status": r.status,
                "reply_code": r.reply_code,
                "reason": r.reason,
                "hard": r.hard,
                "diagnostic": r.diagnostic,
                "blame": r.blame,
                "rule": r.rule,
                "action": r.action,
                "remote_mta": r.remote_mta,
                "original_recipient": r.original_recipient,
                **extra,
                **common,
            }
        )
    return rows


def _emit(row: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
        return
    where = str(row["file"]) + (f"#{row['message']}" if "message" in row else "")
    if "error" in row:
        print(f"{where}: error: {row['error']}")
        return
    kind = "hard" if row.get("hard") else "soft"
    note = " (best effort)" if row.get("best_effort") else ""
    if row.get("nested"):
        note += " (from a report returned inside this one)"
    print(
        f"{where}: {row.get('recipient') or '-'} {row.get('status') or ''} "
        f"{row['reason']} ({kind}, blame: {row.get('blame', 'unknown')}) "
        f"rule {row.get('rule') or '-'}{note}"
    )


def _response(args: argparse.Namespace, rules: ProviderRules) -> int:
    verdict = classify(
        None,
        None,
        args.response,
        command=args.command,
        provider=args.provider,
        mx_host=args.mx,
        final=not args.transient,
        provider_rules=rules,
    )
    if args.json:
        print_json({"response": args.response, **verdict._asdict()})
    else:
        kind = "hard" if verdict.hard else "soft"
        print(f"{verdict.reason} ({kind}, blame: {verdict.blame}) by rule {verdict.rule}")
    return 0
