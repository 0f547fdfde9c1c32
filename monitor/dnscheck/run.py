"""One posture run: every check of our domains and every DNSBL lookup, stored with history.

    settings = DnsSettings.of(config)
    run = run_posture(settings)                 # asks DNS, nothing stored yet
    store_run(pipeline, run)                    # DnsCheck and DnsblListing records
    run.regressed = regressions(store, run, days=settings.history_days)

``mailmon dns check`` and the ``dns_check`` job both do this; the job then sets the
gauges (``monitor.dnscheck.metrics``).  A check *regressed* when its status is worse
than the one it had before it last changed (over ``history_days``; results whose lookup
failed are left out of that history), so it stays regressed until it is fixed.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.config import Config
from monitor.dnscheck.dnsbl import Blocklist, DnsblResult, check_dnsbl, load_lists
from monitor.dnscheck.lookup import LOOKUP_FAILED, make_resolver
from monitor.dnscheck.posture import (
    CheckResult,
    PolicyFetch,
    check_domain,
    forget_cached_answers,
)
from monitor.dnscheck.records import STATUSES, DnsblListing, DnsCheck
from monitor.pipeline import Pipeline
from monitor.store import Store

__all__ = ["SOURCE", "DnsSettings", "PostureRun", "regressions", "run_posture", "store_run"]

#: The ``source`` of the records a posture run stores.
SOURCE = "dnscheck"


@dataclass(frozen=True)
class DnsSettings:
    """``[dns]`` with its defaults filled in from the rest of the config."""

    domains: tuple[str, ...]
    dkim_selectors: tuple[str, ...]
    bimi_selector: str
    sending_ips: tuple[str, ...]
    dnsbl_domains: tuple[str, ...]
    lists: tuple[Blocklist, ...]
    nameservers: tuple[str, ...]
    port: int
    timeout_seconds: float
    history_days: int
    mta_sts_policy: PolicyFetch | None = None

    @classmethod
    def of(cls, config: Config) -> DnsSettings:
        d = config.dns
        domains = d.domains or config.dmarc.domains
        ips = d.sending_ips or tuple(ip for ip in config.metrics.sending_ips if _is_ip(ip))
        return cls(
            domains=domains, dkim_selectors=d.dkim_selectors, bimi_selector=d.bimi_selector,
            sending_ips=ips, dnsbl_domains=d.dnsbl_domains or domains,
            lists=tuple(load_lists(d.lists, d.blocklists_file)), nameservers=d.nameservers,
            port=d.dns_port, timeout_seconds=d.timeout_seconds, history_days=d.history_days,
            mta_sts_policy=PolicyFetch(d.mta_sts_port, d.mta_sts_ca_file, d.timeout_seconds)
            if d.mta_sts_fetch_policy else None,
        )  # fmt: skip

    @property
    def configured(self) -> bool:
        return bool(self.domains or self.sending_ips or self.dnsbl_domains)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass
class PostureRun:
    """What one run found."""

    at: datetime
    checks: list[CheckResult] = field(default_factory=list)
    listings: list[DnsblResult] = field(default_factory=list)
    regressed: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """A check failed or a list lists us (``dns check`` exits 1)."""
        return any(c.status == "fail" for c in self.checks) or any(
            r.listed for r in self.listings)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.at.isoformat(),
            "failed": self.failed,
            "checks": [c.to_dict() for c in self.checks],
            "dnsbl": [{"target": r.target, "list": r.list, "zone": r.zone,
                       "listed": r.listed, "code": r.code, "meaning": r.meaning,
                       "error": r.error} for r in self.listings],
            "regressed": [{"domain": c.domain, "check": c.check, "status": c.status}
                          for c in self.regressed],
            "seconds": round(self.seconds, 3),
        }  # fmt: skip


def run_posture(settings: DnsSettings, *, domains: Sequence[str] | None = None,
                at: datetime | None = None) -> PostureRun:  # fmt: skip
    """Check ``domains`` (default: the configured ones) and ask the lists about our IPs
    and domains (with ``domains`` given: the IPs and those domains)."""
    started = time.monotonic()
    resolver = make_resolver(settings.nameservers, port=settings.port,
                             timeout=settings.timeout_seconds)  # fmt: skip
    chosen = tuple(settings.domains if domains is None else
                   (d.strip(".").lower() for d in domains))  # fmt: skip
    forget_cached_answers()
    run = PostureRun(at=at or datetime.now(UTC))
    for domain in chosen:
        run.checks.extend(check_domain(domain, resolver, dkim_selectors=settings.dkim_selectors,
                                       bimi_selector=settings.bimi_selector,
                                       mta_sts_policy=settings.mta_sts_policy))  # fmt: skip
    listed_domains = settings.dnsbl_domains if domains is None else chosen
    run.listings.extend(check_dnsbl(resolver, settings.lists, ips=settings.sending_ips,
                                    domains=listed_domains))  # fmt: skip
    run.seconds = time.monotonic() - started
    return run


def store_run(pipeline: Pipeline, run: PostureRun) -> None:
    """Store the run's results as records (written by the next flush)."""
    for c in run.checks:
        pipeline.put_record(DnsCheck(SOURCE, run.at, c.domain, c.check, c.status, c.reason,
                                     c.value))  # fmt: skip
    for r in run.listings:
        pipeline.put_record(DnsblListing(SOURCE, run.at, r.target, r.zone, r.listed, r.code,
                                         r.meaning, r.error))  # fmt: skip


def regressions(store: Store, run: PostureRun, *, days: int) -> list[CheckResult]:
    """The run's checks that are worse than they were before they last changed (call
    after the run is stored; a check whose lookup failed keeps its last known verdict)."""
    since = run.at.timestamp() - days * 86400
    history: dict[tuple[str, str], list[str]] = {}
    for rec in store.records(DnsCheck.kind, since=since):
        if isinstance(rec, DnsCheck) and not rec.reason.startswith(LOOKUP_FAILED):
            history.setdefault((rec.domain, rec.check), []).append(rec.status)
    out = []
    for c in run.checks:
        statuses = history.get((c.domain, c.check), [])
        if not statuses:  # only failed lookups so far: nothing to compare
            continue
        current = statuses[-1]
        before = next((s for s in reversed(statuses) if s != current), None)
        if before is not None and _rank(before) < _rank(current):
            out.append(c)
    return out


def _rank(status: str) -> int:
    return STATUSES.index(status) if status in STATUSES else len(STATUSES)
