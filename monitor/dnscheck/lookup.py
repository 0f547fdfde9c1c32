"""The resolver posture checks and DNSBL lookups ask, and the TXT reads they share.

Every query goes to the resolver ``[dns] nameservers`` names (the system's when empty),
never anywhere else: checkdmarc is called one function at a time with this resolver,
because ``checkdmarc.check_domains`` also fetches MTA-STS policies and MX DNSSEC data
through the system resolver.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.exception
import dns.nameserver
import dns.resolver

__all__ = ["LOOKUP_FAILED", "LookupFailed", "make_resolver", "txt_records"]

#: The start of the reason of a check whose lookup failed (a timeout, SERVFAIL, REFUSED):
#: the posture is unknown, not broken; regressions skip these results.
LOOKUP_FAILED = "lookup failed"


class LookupFailed(Exception):
    """A query got no usable answer (not: the name or record does not exist)."""


def make_resolver(
    nameservers: Sequence[str] = (), *, port: int = 53, timeout: float = 5.0
) -> dns.resolver.Resolver:
    """A stub resolver asking ``nameservers`` on ``port`` (the system's when empty)."""
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(ns, port) for ns in nameservers]
    else:
        resolver = dns.resolver.Resolver()
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT records at ``name``, each one's strings joined (RFC 7208 §3.3); [] if none.

    Raises :class:`LookupFailed` when the question got no answer at all.
    """
    try:
        answer = resolver.resolve(name, "TXT", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.DNSException as exc:
        raise LookupFailed(f"{name} TXT: {exc}") from None
    if answer.rrset is None:
        return []
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset]
