"""Reverse DNS of report source IPs, for ``mailmon dmarc summary --resolve`` only.

Never at ingest: in other tools it dominates DMARC ingest time (one PTR query per row,
hours for a large Google report).  Here it is asked for, concurrent (a bounded pool),
capped per run (the busiest IPs first), and cached in the store with a TTL (a record
kind, ``dmarc_ptr``: the answer and when it was asked), so the next summary asks again
only for what expired.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import dns.exception
import dns.resolver
import dns.reversename

from monitor.records import Record
from monitor.store import Store
from monitor.store.records import register_record

__all__ = ["PtrAnswer", "PtrResolver"]


@register_record
@dataclass(frozen=True, slots=True)
class PtrAnswer(Record):
    """The PTR name of ``ip`` when it was looked up (None: no name; ``error``: no answer)."""

    kind = "dmarc_ptr"
    identity_fields = ("ip",)
    indexes = (("ip",),)

    ip: str
    name: str | None
    error: str | None = None


class PtrResolver:
    """Looks up PTR names through ``nameservers`` (the system's when empty)."""

    def __init__(
        self,
        store: Store,
        *,
        nameservers: Sequence[str] = (),
        port: int = 53,
        timeout: float = 2.0,
        concurrency: int = 16,
        max_ips: int = 200,
        ttl_seconds: float = 86400.0,
    ) -> None:
        self.store = store
        self.resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            self.resolver.nameservers = list(nameservers)
        self.resolver.port = port
        self.resolver.lifetime = timeout
        self.concurrency = concurrency
        self.max_ips = max_ips
        self.ttl = ttl_seconds
        self.asked = 0  # queries sent in this process
        self.cached = 0  # answers taken from the store

    def names(self, ips: Sequence[str]) -> dict[str, str | None]:
        """PTR names of at most ``max_ips`` of ``ips`` (in order), from the cache or DNS."""
        wanted = [ip for ip in dict.fromkeys(ips) if _is_ip(ip)][: self.max_ips]
        if not wanted:
            return {}
        now = time.time()
        known: dict[str, str | None] = {}
        for rec in self.store.records(PtrAnswer.kind, since=now - self.ttl):
            assert isinstance(rec, PtrAnswer)
            if rec.ip in wanted and rec.error is None:
                known[rec.ip] = rec.name
        self.cached += len(known)
        missing = [ip for ip in wanted if ip not in known]
        answers: list[PtrAnswer] = []
        if missing:
            with ThreadPoolExecutor(min(self.concurrency, len(missing)),
                                    thread_name_prefix="mailmon-ptr") as pool:  # fmt: skip
                answers = list(pool.map(self._ask, missing))
            self.asked += len(missing)
            self.store.write([], records=answers)
        known.update((a.ip, a.name) for a in answers)
        return {ip: known.get(ip) for ip in wanted}

    def _ask(self, ip: str) -> PtrAnswer:
        at = datetime.now(UTC)
        try:
            answer = self.resolver.resolve(dns.reversename.from_address(ip), "PTR")
            name = str(answer[0].target).rstrip(".").lower() if len(answer) else None
            return PtrAnswer("dmarc", at, ip, name)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return PtrAnswer("dmarc", at, ip, None)
        except dns.exception.DNSException as exc:  # timeout, SERVFAIL: not cached as an answer
            return PtrAnswer("dmarc", at, ip, None, error=type(exc).__name__)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
