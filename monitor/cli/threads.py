"""``mailmon threads list|show|check``: conversations and what breaks them."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from monitor.cli.common import config_of, iso, open_store, parse_since, print_json

__all__ = ["print_thread", "register", "thread_json"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "threads", parents=[common], help="conversations: messages joined by their headers",
        description="Messages joined by Message-ID, In-Reply-To and References (outbound from "
        "the MTA log and its header_checks lines and the ESP webhooks, inbound from the "
        "mailboxes), each with its delivery state (docs/threads.md).",
    )  # fmt: skip
    commands = p.add_subparsers(dest="threads_command", required=True, metavar="COMMAND")
    s = commands.add_parser("show", parents=[common], help="the thread of one message",
                            description="Every message of the thread of MESSAGE_ID, oldest "
                            "first, with its direction, parent and delivery states.")  # fmt: skip
    s.add_argument("message_id", metavar="MESSAGE_ID")
    s.add_argument("--json", action="store_true", help="machine output")
    s.set_defaults(run=show)
    s = commands.add_parser("list", parents=[common], help="threads with inbound answers",
                            description="Outbound messages that were answered (replies, "
                            "auto-replies), newest activity last.")  # fmt: skip
    s.add_argument("--since", metavar="WHEN", help="answers after WHEN (7d, or a time)")
    s.add_argument("--json", action="store_true", help="machine output: a JSON array")
    s.set_defaults(run=list_threads)
    s = commands.add_parser(
        "check", parents=[common], help="broken-thread findings, counted and listed",
        description="Replies whose parent was never seen, outbound replies without "
        "In-Reply-To/References, replies that lost their Re:, malformed or reused "
        "Message-IDs, replies to the no-reply address.",
    )  # fmt: skip
    s.add_argument("--since", metavar="WHEN", help="messages after WHEN (7d, or a time)")
    s.add_argument("--until", metavar="WHEN", help="messages before WHEN")
    s.add_argument("--json", action="store_true", help="machine output")
    s.set_defaults(run=check)


def thread_json(thread: dict[str, Any]) -> dict[str, Any]:
    """A thread with ISO times, as ``--json`` and the API give it."""
    out = dict(thread)
    out["messages"] = [{**m, "at": iso(m["at"])} for m in thread["messages"]]
    return out


def print_thread(thread: dict[str, Any]) -> None:
    print(f"thread <{thread['thread_id']}>: {len(thread['messages'])} messages"
          + (" (cut)" if thread["truncated"] else ""))  # fmt: skip
    depth: dict[str, int] = {}
    for m in thread["messages"]:
        level = depth.get(m["parent"], -1) + 1 if m["parent"] else 0
        depth[m["message_id"]] = level
        states = ", ".join(f"{d['recipient']} {d['state']}" + (f" ({d['reason']})"
                           if d["reason"] else "") for d in m["deliveries"])  # fmt: skip
        what = m["category"] or ""
        flags = " [to no-reply]" if m["to_noreply"] else ""
        flags += "" if m["parent_seen"] else " [parent never seen]"
        print(f"  {'  ' * level}{iso(m['at']) or '-'} {m['direction']:<8} <{m['message_id']}> "
              f"{m['sender'] or '-'} {m['subject'] or ''!r} {what} {states}{flags}".rstrip())


def show(args: argparse.Namespace) -> int:
    from monitor.threads.build import thread_of

    config = config_of(args)
    with open_store(args, config, create=False) as store, store.engine.connect() as conn:
        thread = thread_of(conn, args.message_id)
    if thread is None:
        if args.json:
            print_json(None)
        else:
            print(f"no message {args.message_id}")
        return 1
    if args.json:
        print_json(thread_json(thread))
    else:
        print_thread(thread)
    return 0


def list_threads(args: argparse.Namespace) -> int:
    from monitor.collectors.mailbox.records import InboundMessage

    config = config_of(args)
    with open_store(args, config, create=False) as store:
        rows = [r for r in store.records(InboundMessage.kind, since=parse_since(args.since))
                if isinstance(r, InboundMessage) and r.linked_message_id
                and r.category in ("reply", "auto_reply")]  # fmt: skip
    by: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = by.setdefault(r.linked_message_id or "", {"thread_id": r.linked_message_id,
                          "answers": Counter(), "last_at": 0.0, "to_noreply": 0})  # fmt: skip
        t["answers"][r.category] += 1
        t["last_at"] = max(t["last_at"], r.occurred_at.timestamp())
        t["to_noreply"] += r.to_noreply
    out = sorted(({**t, "answers": dict(t["answers"]), "last_at": iso(t["last_at"])}
                  for t in by.values()), key=lambda t: t["last_at"] or "")  # fmt: skip
    if args.json:
        print_json(out)
        return 0
    for t in out:
        answers = ", ".join(f"{k} {v}" for k, v in sorted(t["answers"].items()))
        print(f"{t['last_at']} <{t['thread_id']}> {answers}"
              + (f", {t['to_noreply']} to no-reply" if t["to_noreply"] else ""))  # fmt: skip
    return 0


def check(args: argparse.Namespace) -> int:
    from monitor.threads.build import FINDINGS, findings

    config = config_of(args)
    since = parse_since(args.since)
    until = parse_since(args.until, option="--until")
    with open_store(args, config, create=False) as store, store.engine.connect() as conn:
        found = findings(conn, since=since, until=until)
    counts = dict.fromkeys(FINDINGS, 0) | Counter(f["kind"] for f in found)
    if args.json:
        print_json({"counts": counts, "findings": [{**f, "at": iso(f["at"])} for f in found]})
        return 0
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    for f in found:
        print(f"  {iso(f['at']) or '-'} {f['kind']:<22} {f['direction']:<8} "
              f"<{f['message_id']}> {f['detail']}")  # fmt: skip
    return 0
