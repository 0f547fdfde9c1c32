"""``mailmon webhooks dead|retry``: inbound events the application's webhook did not take."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.cli.common import config_of, iso, open_store, print_json
from monitor.errors import ConfigError

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "webhooks", parents=[common], help="events forwarded to the application's webhook",
        description="Inbound events are POSTed, signed, to [forward] url (docs/mailbox.md); "
        "those it did not take after every attempt are kept as dead letters.",
    )  # fmt: skip
    commands = p.add_subparsers(dest="webhooks_command", required=True, metavar="COMMAND")
    d = commands.add_parser("dead", parents=[common], help="the dead letters")
    d.add_argument("--json", action="store_true", help="machine output: a JSON array")
    d.set_defaults(run=dead)
    r = commands.add_parser(
        "retry", parents=[common], help="send dead letters (or stored events) again",
        description="Send every dead letter again (or those of --id); each delivered one is "
        "deleted. --replay sends any stored event again by its id.",
    )  # fmt: skip
    r.add_argument("--id", action="append", metavar="EVENT_ID", help="only these dead letters")
    r.add_argument("--replay", action="append", metavar="EVENT_ID",
                   help="send this stored event again (repeatable)")  # fmt: skip
    r.add_argument("--json", action="store_true", help="machine output")
    r.set_defaults(run=retry)


def dead(args: argparse.Namespace) -> int:
    from monitor.forward import DeadLetter

    config = config_of(args)
    with open_store(args, config, create=False) as store:
        rows = [r for r in store.records(DeadLetter.kind) if isinstance(r, DeadLetter)]
    data = [{"event_id": r.event_id, "at": iso(r.occurred_at.timestamp()),
             "attempts": r.attempts, "error": r.error} for r in rows]  # fmt: skip
    if args.json:
        print_json(data)
    else:
        for d in data:
            print(f"{d['at']} {d['event_id']} after {d['attempts']} attempts: {d['error']}")
    return 0


def retry(args: argparse.Namespace) -> int:
    from monitor.forward import Forwarder

    config = config_of(args)
    if not config.forward.url:
        raise ConfigError("no [forward] url in the config file")
    with open_store(args, config, create=False) as store:
        forwarder = Forwarder(config.forward, store)
        try:
            done = {} if args.replay and not args.id else forwarder.retry(args.id)
            replayed = {e: forwarder.replay(e) for e in (args.replay or [])}
        finally:
            forwarder.close()
    if args.json:
        print_json({"retried": done, "replayed": replayed})
    else:
        for event_id, ok in done.items():
            print(f"{event_id}: {'delivered' if ok else 'failed again'}")
        for event_id, replay_ok in replayed.items():
            said = "no such event" if replay_ok is None else "delivered" if replay_ok else "failed"
            print(f"{event_id}: {said}")
    failed = [k for k, v in done.items() if not v] + [k for k, v in replayed.items() if not v]
    return 1 if failed else 0
