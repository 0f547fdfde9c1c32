"""The records DNS posture checks and DNSBL lookups store, with history (one per check)."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.records import Record
from monitor.store.records import register_record

__all__ = ["STATUSES", "DnsCheck", "DnsblListing"]

#: A check's status values, best first.
STATUSES = ("pass", "warn", "fail")


@register_record
@dataclass(frozen=True, slots=True)
class DnsCheck(Record):
    """One posture check of one of our domains (``occurred_at``: when it was checked)."""

    kind = "dns_checks"
    identity_fields = ("domain", "check")
    indexes = (("domain", "check"),)

    domain: str
    check: str  # spf, dmarc, dkim:<selector>, mx, mta_sts, tlsrpt, bimi
    status: str  # pass, warn, fail
    reason: str
    value: str | None = None  # the record(s) as published, for the history


@register_record
@dataclass(frozen=True, slots=True)
class DnsblListing(Record):
    """One DNSBL lookup of one of our sending IPs or domains (``occurred_at``: its time)."""

    kind = "dnsbl_listings"
    identity_fields = ("target", "zone")
    indexes = (("target",),)

    target: str  # a sending IP or one of our domains
    zone: str  # the list's zone, e.g. zen.spamhaus.org
    listed: bool
    code: str | None = None  # the answer, e.g. 127.0.0.2
    meaning: str | None = None  # what the list says the code means
    error: str | None = None  # the lookup failed, or the list refused the resolver


# The gauges of the kinds above (every Metrics imports this module).
import monitor.dnscheck.metrics  # noqa: E402, F401
