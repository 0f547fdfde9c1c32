"""``mailmon dns check [DOMAIN]``: DNS posture of our domains and DNSBL listings."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.cli.common import config_of, open_store, print_json

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dns",
        parents=[common],
        help="DNS posture (SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT, BIMI) and DNSBL listings",
        description="Checks of our domains' DNS records and of the DNS blocklists, "
        "as the dns_check job runs them (docs/dns.md).",
    )
    commands = p.add_subparsers(dest="dns_command", required=True, metavar="COMMAND")
    c = commands.add_parser(
        "check",
        parents=[common],
        help="check a domain (default: every [dns] domain) and the DNSBLs now",
        description="Check DOMAIN (default: every domain of [dns] domains, else [dmarc] "
        "domains): SPF, DMARC, DKIM for [dns] dkim_selectors, MX, MTA-STS, TLS-RPT, BIMI, each "
        "pass, warn or fail with its reason; then ask the [dns] lists about [dns] "
        "sending_ips and the domain(s). The results are stored with their history. "
        "Exit status 1 when a check fails (a failed lookup included) or a list lists us.",
    )
    c.add_argument("domain", nargs="?", metavar="DOMAIN", help="the domain to check")
    c.add_argument("--json", action="store_true", help="machine output: one JSON object")
    c.set_defaults(run=check)


def check(args: argparse.Namespace) -> int:
    from monitor.dnscheck.run import DnsSettings, regressions, run_posture, store_run
    from monitor.errors import ConfigError
    from monitor.pipeline import Pipeline

    config = config_of(args)
    settings = DnsSettings.of(config)
    domains = [args.domain] if args.domain else None
    if domains is None and not settings.configured:
        raise ConfigError("no domain given and none configured ([dns] domains, "
                          "[dmarc] domains or [dns] sending_ips)")  # fmt: skip
    run = run_posture(settings, domains=domains)
    with open_store(args, config) as store:
        pipeline = Pipeline(store, batch_size=config.database.batch_size)
        store_run(pipeline, run)
        pipeline.flush()
        run.regressed = regressions(store, run, days=settings.history_days)
    if args.json:
        print_json(run.to_dict())
    else:
        _print(run)
    return 1 if run.failed else 0


def _print(run: Any) -> None:
    regressed = {(c.domain, c.check) for c in run.regressed}
    domain = None
    for c in run.checks:
        if c.domain != domain:
            domain = c.domain
            print(domain)
        mark = "  (regressed)" if (c.domain, c.check) in regressed else ""
        print(f"  {c.status:<5} {c.check:<12} {c.reason}{mark}")
    if run.listings:
        print("DNSBL")
    for r in run.listings:
        state = "error" if r.error else "listed" if r.listed else "clean"
        detail = r.error or (f"{r.code} {r.meaning}" if r.listed else "")
        print(f"  {state:<6} {r.target:<40} {r.list:<16} {detail}".rstrip())
    counts = {s: sum(c.status == s for c in run.checks) for s in ("pass", "warn", "fail")}
    print(f"{len(run.checks)} checks: {counts['pass']} pass, {counts['warn']} warn, "
          f"{counts['fail']} fail; DNSBL: {sum(r.listed for r in run.listings)} listed, "
          f"{sum(bool(r.error) for r in run.listings)} errors of {len(run.listings)} "
          f"lookups")  # fmt: skip
