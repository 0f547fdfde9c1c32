"""The DNS of the ingest benchmark's resolution-ON run.

Every recipient domain of a generated log gets MX records (the host its delivery lines
name as ``relay=``, else ``mx.<domain>``), served by the tests' DNS server on 127.0.0.1,
which answers every query ``delay_seconds`` late, as a resolver a few cities away would::

    with log_dns(log, delay_seconds=0.03) as server:
        ...  # mailmon with [providers] nameservers = ["127.0.0.1:<server.port>"]
        server.count()  # queries it answered
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from dns_server import DNSServer  # noqa: E402

__all__ = ["log_dns", "mx_of_domains"]

_TO = re.compile(r"to=<[^@>]*@([^>]+)>, (?:orig_to=<[^>]*>, )?relay=([^,\[ ]+)")


def mx_of_domains(log: Path) -> dict[str, str]:
    """Each recipient domain of ``log`` -> the MX host to serve for it."""
    mx: dict[str, str] = {}
    with log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            m = _TO.search(line)
            if m is None:
                continue
            domain, relay = m.group(1).lower(), m.group(2).lower()
            if "." in relay and (domain not in mx or mx[domain].startswith("mx.")):
                mx[domain] = relay
            else:
                mx.setdefault(domain, f"mx.{domain}")
    return mx


def _zones(mx: dict[str, str]) -> dict[str, str]:
    """One zone per top-level domain, an MX record per domain."""
    by_tld: dict[str, list[str]] = defaultdict(list)
    for domain, host in mx.items():
        if not re.fullmatch(r"[a-z0-9.-]+", domain) or "." not in domain:
            continue  # not a name a zone file can hold: mailmon never asks for it
        tld = domain.rsplit(".", 1)[1]
        by_tld[tld].append(f"{domain}. MX 10 {host}.")
    return {f"{tld}.": "\n".join(records) + "\n" for tld, records in by_tld.items()}


def log_dns(log: Path, *, delay_seconds: float) -> DNSServer:
    """A (not yet started) DNS server answering MX queries for every domain of ``log``."""
    return DNSServer(_zones(mx_of_domains(log)), delay_seconds=delay_seconds)
