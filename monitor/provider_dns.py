"""One MX lookup and what it means for caching: the DNS half of the provider resolver.

:func:`lookup_mx` asks for a domain's MX records and sorts the outcome into an answer,
no mail (NXDOMAIN, NODATA, RFC 7505 null MX: with the negative TTL the answer carries),
a timeout or an error.  :class:`Breaker` stops asking a DNS that keeps timing out.

dnspython is imported by the functions that use it: importing ``dns.resolver`` imports
its DNS-over-HTTPS client too (about 0.2 s), which an ingest without MX lookups (and
every other command that only loads the provider rules) never needs.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import dns.message
    import dns.resolver

__all__ = ["Breaker", "Lookup", "lookup_mx", "nameserver_resolver"]

log = logging.getLogger(__name__)


class Lookup(NamedTuple):
    kind: str  # "answer", "no_mail", "timeout", "error"
    mx: tuple[tuple[int, str], ...] = ()
    ttl: float | None = None  # how long a "no_mail" may be believed, when the answer says


def lookup_mx(resolver: dns.resolver.Resolver, domain: str, lifetime: float) -> Lookup:
    """The MX records of ``domain`` (a normalised host name), or why there are none."""
    import dns.exception
    import dns.name
    import dns.rdatatype
    import dns.resolver

    try:
        qname = dns.name.from_text(domain)  # absolute: the search list never applies
    except (dns.exception.DNSException, UnicodeError):
        return Lookup("no_mail")
    try:
        answer = resolver.resolve(qname, dns.rdatatype.MX, search=False, lifetime=lifetime)
    except dns.resolver.NXDOMAIN as exc:
        responses = exc.kwargs.get("responses") or {}
        return Lookup("no_mail", ttl=_negative_ttl(responses.get(qname)))
    except dns.resolver.NoAnswer as exc:
        return Lookup("no_mail", ttl=_negative_ttl(exc.kwargs.get("response")))
    except dns.exception.Timeout:
        log.debug("MX lookup for %s timed out", domain)
        return Lookup("timeout")
    except (dns.exception.DNSException, OSError) as exc:
        log.debug("MX lookup for %s failed: %s", domain, exc)
        return Lookup("error")
    mx = tuple(
        (rdata.preference, rdata.exchange.to_text(omit_final_dot=True).lower())
        for rdata in answer
        if rdata.exchange != dns.name.root  # RFC 7505 null MX: "MX 0 ." takes no mail
    )
    if mx:
        return Lookup("answer", mx)
    return Lookup("no_mail", ttl=float(answer.rrset.ttl) if answer.rrset is not None else None)


def _negative_ttl(response: dns.message.Message | None) -> float | None:
    """RFC 2308 §5: a negative answer lives for min(SOA TTL, SOA MINIMUM) of its authority."""
    import dns.rdatatype

    if response is None:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, next(iter(rrset)).minimum))
    return None


def nameserver_resolver(nameservers: tuple[str, ...]) -> dns.resolver.Resolver:
    """A stub resolver asking only ``nameservers`` (``"host"`` or ``"host:port"``, IPv4 or
    ``[v6]:port``), instead of the system's /etc/resolv.conf."""
    import dns.nameserver
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    servers: list[dns.nameserver.Nameserver] = []
    for entry in nameservers:
        host, port = entry, 53
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif entry.count(":") == 1:
            host, _, number = entry.partition(":")
            port = int(number)
        servers.append(dns.nameserver.Do53Nameserver(host, port))
    resolver.nameservers = servers
    return resolver


@dataclass
class Breaker:
    """Opens after ``threshold`` timeouts in a row: no DNS for ``cooldown_seconds``."""

    threshold: int
    cooldown_seconds: float
    failures: int = 0
    open_until: float = -math.inf
    lock: threading.Lock = field(default_factory=threading.Lock)

    def is_open(self, now: float) -> bool:
        return now < self.open_until

    def success(self) -> None:
        self.failures = 0

    def failure(self, now: float, domain: str) -> None:
        """Count a timeout; the threshold-th in a row (or one after a pause) opens it."""
        with self.lock:
            self.failures += 1
            if self.failures >= self.threshold and not self.is_open(now):
                self.open_until = now + self.cooldown_seconds
                log.warning(
                    "DNS unresponsive (%d timeouts in a row, last for %s): MX lookups "
                    "paused for %.0f s, unknown domains count as provider 'other'",
                    self.failures,
                    domain,
                    self.cooldown_seconds,
                )

    def trip(self, now: float) -> None:
        with self.lock:
            self.failures = max(self.failures, self.threshold)
            self.open_until = now + self.cooldown_seconds
