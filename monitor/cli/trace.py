"""``mailmon trace QUERY``: the timeline of a message, queue id or recipient."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from monitor.cli.common import config_of, count, open_store, print_json

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "trace",
        parents=[common],
        help="timeline of one message or recipient",
        description="QUERY is a Message-ID (with or without <>), a queue id or "
        "a recipient address.",
    )
    p.add_argument("query")
    p.add_argument("--limit", type=count(1), default=200, help="at most N deliveries (default 200)")
    p.add_argument("--json", action="store_true", help="machine output")
    p.set_defaults(run=run)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _delivery_json(found: dict[str, Any]) -> dict[str, Any]:
    d = found["delivery"]
    return {
        "message_id": d["message_id"],
        "queue_id": d["queue_id"],
        "sender": d["sender"],
        "recipient": d["recipient"],
        "recipient_domain": d["recipient_domain"],
        "provider": d["provider"],
        "state": d["state"],
        "reason": d["reason"],
        "hard": d["hard"],
        "blame": d["blame"],
        "rule": d["rule"],
        "submitted_at": _iso(d["submitted_at"]),
        "final_at": _iso(d["final_at"]),
        "attempts": d["attempts"],
        "deferrals": d["deferrals"],
        "events": [e.to_dict() for e in found["events"]],
    }


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    from monitor.cli.threads import print_thread, thread_json
    from monitor.threads.build import thread_of

    with open_store(args, config, create=False) as store:
        found = store.trace(args.query, limit=args.limit)
        ids = list(dict.fromkeys(f["delivery"]["message_id"] for f in found
                                 if f["delivery"]["message_id"]))  # fmt: skip
        thread = None
        if len(ids) == 1:  # one message: its conversation (docs/threads.md)
            with store.engine.connect() as conn:
                thread = thread_of(conn, ids[0])
    if args.json:
        print_json({"query": args.query, "deliveries": [_delivery_json(f) for f in found],
                    "thread": thread_json(thread) if thread else None})  # fmt: skip
        return 0 if found else 1
    if not found:
        print(f"nothing found for {args.query}")
        return 1
    for item in found:
        _print_delivery(item)
    if thread and len(thread["messages"]) > 1:
        print_thread(thread)
    return 0


def _print_delivery(item: dict[str, Any]) -> None:
    d = item["delivery"]
    verdict = d["state"]
    if d["reason"]:
        blame = f", blame: {d['blame']}" if d["blame"] else ""
        verdict += f" ({d['reason']}{', hard' if d['hard'] else ''}{blame})"
    mid = f"<{d['message_id']}>" if d["message_id"] else "(no Message-ID)"
    print(f"{mid} -> {d['recipient'] or '(all recipients)'}: {verdict}")
    print(
        f"  queue id {d['queue_id'] or '-'}, sender <{d['sender'] or ''}>, "
        f"provider {d['provider'] or '-'}, {d['attempts']} attempt(s)"
    )
    for e in item["events"]:
        when = e.occurred_at.strftime("%Y-%m-%d %H:%M:%S")
        detail = []
        if e.attempt:
            detail.append(f"#{e.attempt}")
        if e.reply_code or e.enhanced_status:
            detail.append(" ".join(str(x) for x in (e.reply_code, e.enhanced_status) if x))
        if e.reason:
            detail.append(f"[{e.reason}" + (f" by rule {e.rule}]" if e.rule else "]"))
        if e.relay:
            detail.append(f"relay={e.relay}")
        if e.delay_seconds is not None:
            detail.append(f"delay={e.delay_seconds:g}s")
        print(f"  {when}Z  {e.type.value:<10} {' '.join(detail)}")
        if e.diagnostic:
            print(f"  {'':20}  {e.diagnostic[:300]}")
    print()
