"""The ``mailmon`` command line: one module per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from monitor import __version__, native
from monitor.cli import (
    classify,
    dashboards,
    dmarc,
    dns,
    incidents,
    ingest,
    jobs,
    mailbox,
    probe,
    report,
    rollup,
    send,
    serve,
    stats,
    threads,
    trace,
    webhooks,
)
from monitor.errors import MailmonError

__all__ = ["main"]

_COMMANDS = (serve, ingest, stats, trace, classify, incidents, rollup, jobs, dashboards, dmarc,
             dns, report, probe, mailbox, threads, send, webhooks)  # fmt: skip


def _common_options(default: object = None) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        metavar="URL",
        default=default,
        help="database URL (default: MAILMON_DB_URL, "
        "the config file, else a SQLite file in the data directory)",
    )
    common.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="config file (default: MAILMON_CONFIG, ./mailmon.toml, /etc/mailmon/mailmon.toml)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="log debug detail to stderr",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailmon",
        description="Email deliverability observability and monitoring.",
        parents=[_common_options()],
    )
    parser.add_argument(
        "--version", action="version",
        version=f"mailmon {__version__}; parsing modules: {native.REASON}",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The options are accepted before and after the subcommand; the subcommand's copy
    # sets nothing unless given, or its default would overwrite `mailmon --db URL CMD`.
    after = _common_options(argparse.SUPPRESS)
    for module in _COMMANDS:
        module.register(sub, after)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args) or 0)
    except MailmonError as exc:
        print(f"mailmon: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mailmon: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
