"""``mailmon mailbox poll|watch|list``: the inbound mailboxes of ``[[mailboxes]]``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from monitor.cli.common import config_of, iso, open_store, parse_since, print_json
from monitor.config import Config, MailboxSettings
from monitor.errors import ConfigError

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "mailbox",
        parents=[common],
        help="read the inbound mailboxes: bounces, complaints, auto-replies, replies",
        description="The IMAP mailboxes of [[mailboxes]] (docs/mailbox.md): each message is "
        "read once (UIDVALIDITY + last UID kept in the store), routed (DSN -> bounced, ARF "
        "-> complained, auto-reply -> auto_replied, reply -> replied, else unmatched) and "
        "linked to the outbound message it is about.",
    )
    commands = p.add_subparsers(dest="mailbox_command", required=True, metavar="COMMAND")
    for name, text, run in (
        ("poll", "read what is new in each mailbox once, then stop", poll),
        ("watch", "read, then wait for more (IMAP IDLE, else polling) until stopped", watch),
    ):
        c = commands.add_parser(name, parents=[common], help=text, description=text + ".")
        c.add_argument("--name", action="append", metavar="NAME",
                       help="only this mailbox (repeatable; default: all)")  # fmt: skip
        if name == "poll":
            c.add_argument("--json", action="store_true", help="machine output")
        c.set_defaults(run=run)
    s = commands.add_parser(
        "list", parents=[common], help="the inbound messages read, newest last",
        description="The inbound messages read: mailbox, what each was, the outbound "
        "message it was linked to and how, replies to the no-reply address flagged.",
    )  # fmt: skip
    s.add_argument("--name", action="append", metavar="NAME", help="only this mailbox")
    s.add_argument("--category", choices=("bounce", "complaint", "auto_reply", "reply",
                                           "unmatched"))  # fmt: skip
    s.add_argument("--since", metavar="WHEN", help="a duration back from now (7d) or a time")
    s.add_argument("--json", action="store_true", help="machine output: a JSON array")
    s.set_defaults(run=list_messages)


def _chosen(config: Config, names: list[str] | None) -> list[MailboxSettings]:
    boxes = list(config.mailboxes)
    if not boxes:
        raise ConfigError("no [[mailboxes]] in the config file (docs/mailbox.md)")
    if names:
        unknown = sorted(set(names) - {b.name for b in boxes})
        if unknown:
            raise ConfigError(f"no mailbox named {', '.join(unknown)}; the mailboxes are "
                              f"{', '.join(b.name for b in boxes)}")  # fmt: skip
        boxes = [b for b in boxes if b.name in names]
    return boxes


def _driver(args: argparse.Namespace, config: Config, forwarder: Any = None) -> Any:
    from monitor.driver import Driver
    from monitor.metrics import Metrics
    from monitor.pipeline import Pipeline
    from monitor.providers import resolver_for

    store = open_store(args, config)
    metrics = Metrics()
    pipeline = Pipeline(store, resolver=resolver_for(config, store), metrics=metrics,
                        batch_size=config.database.batch_size,
                        max_future_seconds=config.ingest.max_future_seconds,
                        on_write=forwarder.offer if forwarder else None)  # fmt: skip
    return Driver(pipeline, metrics)


def _forwarder(args: argparse.Namespace, config: Config) -> Any:
    """The webhook forwarder of ``[forward]``, or None when no url is set."""
    if not config.forward.url:
        return None
    from monitor.forward import Forwarder

    return Forwarder(config.forward, open_store(args, config))


def poll(args: argparse.Namespace) -> int:
    from monitor.collectors.mailbox import reader_for

    config = config_of(args)
    boxes = _chosen(config, args.name)
    forwarder = _forwarder(args, config)
    driver = _driver(args, config, forwarder)
    out: list[dict[str, Any]] = []
    failed = False
    try:
        for settings in boxes:
            reader = reader_for(settings, driver)
            try:
                result = reader.poll()
            except Exception as exc:  # one mailbox down must not hide the others
                failed = True
                print(f"mailbox {settings.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                out.append({"mailbox": settings.name, "error": f"{type(exc).__name__}: {exc}"})
                continue
            finally:
                reader.close()
            out.append({
                "mailbox": settings.name, "folder": settings.folder,
                "uidvalidity": result.uidvalidity, "rescan": result.rescan,
                "messages": result.messages, "last_uid": result.last_uid,
                "moved": result.moved, "events_stored": result.stored,
                "categories": result.categories,
                "unreadable": dict(reader.source.stats.unparsed),
                "read_in_part": reader.source.errors,
            })  # fmt: skip
    finally:
        driver.pipeline.close()
        driver.pipeline.store.close()
        if forwarder is not None:  # every new event delivered or dead-lettered first
            forwarder.drain()
            forwarder.close()
            forwarder.store.close()
    if args.json:
        print_json(out)
    else:
        for row in out:
            if "error" in row:
                continue
            cats = ", ".join(f"{k} {v}" for k, v in sorted(row["categories"].items())) or "-"
            print(f"{row['mailbox']}: {row['messages']} messages ({cats}), "
                  f"{row['events_stored']} events stored, last UID {row['last_uid']}"
                  + (" (UIDVALIDITY changed: read again)" if row["rescan"] else ""))  # fmt: skip
    return 1 if failed else 0


def watch(args: argparse.Namespace) -> int:
    from monitor.collectors.mailbox import reader_for

    config = config_of(args)
    boxes = _chosen(config, args.name)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    threads = []
    drivers = []
    forwarder = _forwarder(args, config)
    for settings in boxes:  # a pipeline per mailbox: each thread writes its own batches
        driver = _driver(args, config, forwarder)
        drivers.append(driver)
        reader = reader_for(settings, driver)
        thread = threading.Thread(target=reader.watch, args=(stop,), daemon=True,
                                  name=f"mailbox-{settings.name}")  # fmt: skip
        thread.start()
        threads.append(thread)
    while not stop.wait(1.0):
        pass
    for thread in threads:
        thread.join(timeout=30)
    for driver in drivers:
        driver.pipeline.close()
        driver.pipeline.store.close()
    if forwarder is not None:
        forwarder.close()
        forwarder.store.close()
    return 0


def list_messages(args: argparse.Namespace) -> int:
    from monitor.collectors.mailbox.records import InboundMessage

    config = config_of(args)
    with open_store(args, config, create=False) as store:
        rows = [r for r in store.records(InboundMessage.kind, since=parse_since(args.since))
                if isinstance(r, InboundMessage)]  # fmt: skip
    if args.name:
        rows = [r for r in rows if r.mailbox in args.name]
    if args.category:
        rows = [r for r in rows if r.category == args.category]
    data = [{
        "at": iso(r.occurred_at.timestamp()), "mailbox": r.mailbox, "message_id": r.message_id,
        "category": r.category, "link": r.link, "linked_message_id": r.linked_message_id,
        "sender": r.sender, "subject": r.subject, "to_noreply": r.to_noreply,
        "events": r.events, "error": r.error,
    } for r in rows]  # fmt: skip
    if args.json:
        print_json(data)
        return 0
    for d in data:
        linked = f"<{d['linked_message_id']}> by {d['link']}" if d["linked_message_id"] else "-"
        flag = " [to no-reply]" if d["to_noreply"] else ""
        print(f"{d['at']} {d['mailbox']:<10} {d['category']:<10} {d['sender'] or '-'} -> "
              f"{linked}{flag}")  # fmt: skip
    return 0
