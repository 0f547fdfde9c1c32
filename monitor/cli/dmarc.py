"""``mailmon dmarc summary``, ``mailmon dmarc fetch`` (the report mailbox, once) and the
report side of ``mailmon ingest dmarc PATH``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from monitor.cli.common import config_of, count, open_store, parse_since, print_json
from monitor.config import Config
from monitor.driver import Driver

__all__ = ["ingest_reports", "register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dmarc",
        parents=[common],
        help="DMARC and SMTP TLS report results",
        description="What the DMARC aggregate and SMTP TLS reports in the store say. "
        "Reports come in with `mailmon ingest dmarc PATH`, `mailmon dmarc fetch` (the "
        "[dmarc.imap] mailbox) or the dmarc_reports and dmarc_imap jobs.",
    )
    commands = p.add_subparsers(dest="dmarc_command", required=True, metavar="COMMAND")
    s = commands.add_parser(
        "summary",
        parents=[common],
        help="pass rate, top and unknown sources, policy, per domain",
        description="Per policy domain: messages reported, the DMARC pass rate (SPF or "
        "DKIM aligned and passing), the published policy, the top sources by volume with "
        "their alignment, the unknown sources (IPs that sent as the domain and never "
        "passed), and TLS-RPT sessions.",
    )
    s.add_argument("--domain", metavar="D", help="only this policy (or From:) domain")
    s.add_argument("--since", metavar="WHEN",
                   help="reports whose interval begins after WHEN: a duration back from now "
                   "(7d) or an ISO 8601 time (default: all)")  # fmt: skip
    s.add_argument("--top", type=count(1), default=10, metavar="N",
                   help="sources shown per list (default 10)")  # fmt: skip
    s.add_argument("--resolve", action="store_true",
                   help="add the reverse DNS name of the sources shown ([dmarc] nameservers, "
                   "at most resolve_max_ips, cached in the store)")  # fmt: skip
    s.add_argument("--json", action="store_true", help="machine output: a JSON array")
    s.set_defaults(run=summary)
    f = commands.add_parser(
        "fetch",
        parents=[common],
        help="read the report mailbox ([dmarc.imap]) once",
        description="Read each new message of the [dmarc.imap] folder, store its report, "
        "then move it to the archive folder (refused: the failed folder), as the dmarc_imap "
        "job does. Reading a message again stores nothing twice. Exit status 1 when a "
        "report was refused (the others are stored all the same), 2 when the mailbox "
        "cannot be read (nothing unread is moved).",
    )
    f.add_argument("--read-only", action="store_true", default=None,
                   help="set no flag and move nothing, whatever [dmarc.imap] read_only says; "
                   "a UID checkpoint skips what was read")  # fmt: skip
    f.add_argument("--json", action="store_true", help="machine output: the summary as JSON")
    f.set_defaults(run=fetch)


def fetch(args: argparse.Namespace) -> int:
    from monitor.collectors.reports import reports_for
    from monitor.collectors.reports.imap import ReportMailbox
    from monitor.errors import ConfigError
    from monitor.metrics import Metrics
    from monitor.pipeline import Pipeline

    config = config_of(args)
    if config.dmarc.imap is None:
        raise ConfigError("mailmon dmarc fetch needs a [dmarc.imap] table in the config file")
    with open_store(args, config) as store:
        metrics = Metrics()
        pipeline = Pipeline(store, metrics=metrics, batch_size=config.database.batch_size,
                            max_future_seconds=config.ingest.max_future_seconds)  # fmt: skip
        mailbox = ReportMailbox(reports_for(config, Driver(pipeline, metrics)),
                                config.dmarc.imap, read_only=args.read_only)  # fmt: skip
        result = mailbox.run()
    if args.json:
        print_json(result)
    else:
        print(", ".join(f"{k}: {v}" for k, v in result.items() if k != "failed_messages"))
        for ref in result["failed_messages"]:
            print(f"refused: {ref}")
    return 1 if result["refused"] else 0


def summary(args: argparse.Namespace) -> int:
    from monitor.collectors.reports.records import DmarcRow, TlsrptPolicy
    from monitor.collectors.reports.summary import source_ips, summarize

    config = config_of(args)
    since = parse_since(args.since)
    with open_store(args, config, create=False) as store:
        rows = [r for r in store.records(DmarcRow.kind, since=since) if isinstance(r, DmarcRow)]
        tls = [r for r in store.records(TlsrptPolicy.kind, since=since)
               if isinstance(r, TlsrptPolicy)]  # fmt: skip
        result = summarize(rows, tls, domain=args.domain, top=args.top)
        if args.resolve:
            from monitor.collectors.reports.rdns import PtrResolver

            d = config.dmarc
            resolver = PtrResolver(store, nameservers=d.nameservers, port=d.dns_port,
                                   timeout=d.dns_timeout_seconds, concurrency=d.dns_concurrency,
                                   max_ips=d.resolve_max_ips,
                                   ttl_seconds=d.resolve_cache_ttl_seconds)  # fmt: skip
            ptr = resolver.names(source_ips(result, d.resolve_max_ips))
            result = summarize(rows, tls, domain=args.domain, top=args.top, ptr=ptr)
    if args.json:
        print_json(result)
    else:
        _print(result)
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _print(result: list[dict[str, Any]]) -> None:
    if not result:
        print("no DMARC or TLS reports stored for this period")
        return
    for d in result:
        policy = d["policy"] or {}
        shown = " ".join(f"{k}={v}" for k, v in policy.items() if v is not None) or "-"
        print(f"{d['domain']}: {d['messages']:,} messages in {d['reports']} reports, "
              f"DMARC pass {_pct(d['pass_rate'])}; policy {shown}")  # fmt: skip
        for title, key in (("top sources", "top_sources"), ("unknown sources", "unknown_sources")):
            if not d[key]:
                continue
            print(f"  {title}:")
            for s in d[key]:
                name = s.get("reverse_dns") or s.get("as_name") or ""
                print(f"    {s['ip']:<40} {s['messages']:>9,}  pass {_pct(s['pass_rate']):>6}  "
                      f"dkim {s['dkim_aligned']:,} spf {s['spf_aligned']:,}  {name}")  # fmt: skip
        tls = d["tls_sessions"]
        if tls["successful"] or tls["failed"]:
            print(f"  TLS sessions: {tls['successful']:,} ok, {tls['failed']:,} failed")


def ingest_reports(args: argparse.Namespace, config: Config, driver: Driver) -> dict[str, Any]:
    """``mailmon ingest dmarc PATH...``: every report of each path; a summary."""
    from monitor.collectors.reports import reports_for

    reports = reports_for(config, driver)
    bar = None
    if not args.no_progress and not args.json and sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
    task = None

    def tick(n: int, total: int) -> None:
        if bar is not None and task is not None:
            bar.update(task, completed=n, total=total)

    if bar is not None:
        bar.start()
    try:
        for path in args.paths:
            if bar is not None:
                task = bar.add_task(path, total=None)
            reports.ingest_path(path, tick=tick)
    finally:
        if bar is not None:
            bar.stop()
    return reports.summary.to_dict()
