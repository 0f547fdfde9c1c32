"""Recipient domain -> mailbox provider: the bounded ``provider`` label.

:meth:`ProviderResolver.provider_for` answers from the first of:

1. the in-process memo (repeated domains cost one dict lookup);
2. the static map of well-known consumer domains (``gmail.com`` -> google);
3. the store's cache (:class:`ProviderCache`) while younger than ``ttl_seconds``;
4. the domain's MX records: the most preferred host(s), matched against the MX
   suffix map by longest suffix (``aspmx.l.google.com`` -> google);
5. ``other``.

Both maps are data, ``monitor/data/providers.toml`` (:class:`ProviderRules`).

A domain that takes no mail (NXDOMAIN, no MX, RFC 7505 null MX) or whose lookup
failed (timeout, SERVFAIL) is ``other`` for ``negative_ttl_seconds``; when the
lookup failed and the store holds an expired answer, that answer is used instead
(serve-stale, as RFC 8767 does for resolvers), so a DNS outage does not move
traffic between ``provider`` label values. Only real answers reach the store:
:class:`ProviderCache` has no expiry field, and a timeout must not pin a domain
to ``other`` for a week. After ``breaker_threshold`` consecutive timeouts DNS is
not asked for ``breaker_cooldown_seconds``: a bulk ingest on a machine without
DNS never waits on it.

Every value returned is a :class:`monitor.model.Provider` member.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import NamedTuple, Protocol

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from monitor.errors import ConfigError
from monitor.model import Provider

__all__ = [
    "MemoryProviderCache",
    "ProviderCache",
    "ProviderResolver",
    "ProviderRules",
    "ProviderRulesError",
    "ResolverStats",
]

log = logging.getLogger(__name__)

_PACKAGED_RULES = "data/providers.toml"
_RULE_KEYS = frozenset({"domains", "mx_suffixes"})
_NOT_A_HOSTNAME = frozenset(" \t[]@/\\:;,()<>\"'")


class ProviderRulesError(ConfigError):
    """A provider rules file is unreadable or malformed; the message names file and entry."""


class ProviderCache(Protocol):
    """Where resolved providers outlive the process (the store implements it).

    ``resolved_at`` is epoch seconds; the resolver decides freshness::

        class Store:
            def get_provider(self, domain):
                row = ...  # SELECT provider, resolved_at FROM provider_cache WHERE domain = ?
                return None if row is None else (row.provider, row.resolved_at)

            def put_provider(self, domain, provider, mx_hosts, resolved_at):
                ...  # upsert (domain, provider, mx_hosts, resolved_at)
    """

    def get_provider(self, domain: str) -> tuple[str, float] | None: ...

    def put_provider(
        self, domain: str, provider: str, mx_hosts: list[str], resolved_at: float
    ) -> None: ...


class CachedProvider(NamedTuple):
    provider: str
    mx_hosts: list[str]
    resolved_at: float


class MemoryProviderCache:
    """A :class:`ProviderCache` in a dict: for tests and runs without a store."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedProvider] = {}

    def get_provider(self, domain: str) -> tuple[str, float] | None:
        entry = self.entries.get(domain)
        return None if entry is None else (entry.provider, entry.resolved_at)

    def put_provider(
        self, domain: str, provider: str, mx_hosts: list[str], resolved_at: float
    ) -> None:
        self.entries[domain] = CachedProvider(provider, list(mx_hosts), resolved_at)


@dataclass(frozen=True, slots=True)
class ProviderRules:
    """The static domain map and the MX suffix map."""

    domains: Mapping[str, Provider]
    mx_suffixes: Mapping[str, Provider]

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> ProviderRules:
        """The packaged rules, extended and overridden by the file at ``path`` if given."""
        packaged = resources.files("monitor").joinpath(_PACKAGED_RULES)
        rules = cls.from_toml(packaged.read_text("utf-8"), source=f"monitor/{_PACKAGED_RULES}")
        if path is not None:
            try:
                text = Path(path).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ProviderRulesError(f"{os.fspath(path)}: cannot read: {exc}") from exc
            rules = rules.extended(cls.from_toml(text, source=os.fspath(path)))
        return rules

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> ProviderRules:
        """Parse rules in the ``providers.toml`` format."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProviderRulesError(f"{source}: {exc}") from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, source: str = "<dict>") -> ProviderRules:
        """Rules from ``{"providers": {name: {"domains": [...], "mx_suffixes": [...]}}}``."""
        unknown = set(data) - {"providers"}
        if unknown:
            raise ProviderRulesError(f"{source}: unknown keys {sorted(unknown)}")
        providers = data.get("providers", {})
        if not isinstance(providers, Mapping):
            raise ProviderRulesError(f"{source}: 'providers' must be a table")
        domains: dict[str, Provider] = {}
        suffixes: dict[str, Provider] = {}
        for name, table in providers.items():
            where = f"{source}: providers.{name}"
            try:
                provider = Provider(name)
            except ValueError:
                known = ", ".join(p.value for p in Provider)
                raise ProviderRulesError(f"{where}: not a provider (one of {known})") from None
            if not isinstance(table, Mapping) or not set(table) <= _RULE_KEYS:
                raise ProviderRulesError(f"{where}: a table with keys {sorted(_RULE_KEYS)}")
            _collect(domains, table.get("domains", []), provider, f"{where}.domains")
            _collect(suffixes, table.get("mx_suffixes", []), provider, f"{where}.mx_suffixes")
        return cls(domains, suffixes)

    def extended(self, other: ProviderRules) -> ProviderRules:
        """These rules with ``other``'s added; ``other`` wins where both name an entry."""
        return ProviderRules(
            {**self.domains, **other.domains}, {**self.mx_suffixes, **other.mx_suffixes}
        )

    def for_domain(self, domain: str) -> Provider | None:
        """The provider of a well-known domain (exact match), else None."""
        return self.domains.get(domain)

    def for_mx_host(self, host: str) -> tuple[Provider, str] | None:
        """``(provider, matched suffix)`` by longest suffix of ``host``, else None."""
        labels = host.rstrip(".").lower().split(".")
        for start in range(len(labels) - 1):  # longest first; a bare TLD never matches
            suffix = ".".join(labels[start:])
            provider = self.mx_suffixes.get(suffix)
            if provider is not None:
                return provider, suffix
        return None


def _collect(into: dict[str, Provider], entries: object, provider: Provider, where: str) -> None:
    if not isinstance(entries, list):
        raise ProviderRulesError(f"{where}: must be a list of domain names")
    for entry in entries:
        name = entry.strip().rstrip(".").lower() if isinstance(entry, str) else ""
        if "." not in name or not _is_hostname(name):
            raise ProviderRulesError(f"{where}: {entry!r} is not a domain name with a dot")
        if into.get(name, provider) is not provider:
            raise ProviderRulesError(f"{where}: {name} is already mapped to {into[name]}")
        into[name] = provider


def _is_hostname(name: str) -> bool:
    return 0 < len(name) <= 253 and "" not in name.split(".") and not _NOT_A_HOSTNAME & set(name)


@dataclass
class ResolverStats:
    """What the resolver did, by outcome (memo hits are not counted: they are the fast path)."""

    static_hits: int = 0
    cache_hits: int = 0
    dns_queries: int = 0
    no_mail: int = 0  # NXDOMAIN, no MX, null MX, not a domain name
    dns_timeouts: int = 0
    dns_errors: int = 0  # SERVFAIL, REFUSED, no usable nameserver
    dns_skipped: int = 0  # not asked: offline, or the circuit breaker is open
    stale_served: int = 0


class _Lookup(NamedTuple):
    kind: str  # "answer", "no_mail", "timeout", "error"
    mx: tuple[tuple[int, str], ...] = ()


@dataclass
class _Breaker:
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


class ProviderResolver:
    """Maps recipient domains to :class:`~monitor.model.Provider` values.

    ::

        resolver = ProviderResolver(cache=store)
        resolver.provider_for("acme-corp.com")  # Provider.GOOGLE, if its MX is aspmx.l.google.com
    """

    def __init__(
        self,
        *,
        resolver: dns.resolver.Resolver | None = None,
        cache: ProviderCache | None = None,
        rules: ProviderRules | None = None,
        resolve_mx: bool = True,
        ttl_seconds: float = 7 * 86400,
        negative_ttl_seconds: float = 3600,
        lifetime_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
        breaker_threshold: int = 5,
        breaker_cooldown_seconds: float = 300.0,
        memo_size: int = 100_000,
    ) -> None:
        self.rules = rules if rules is not None else ProviderRules.load()
        self.stats = ResolverStats()
        self._resolver = resolver
        self._cache = cache
        self._resolve_mx = resolve_mx
        self._ttl = ttl_seconds
        self._negative_ttl = negative_ttl_seconds
        self._lifetime = lifetime_seconds
        self._clock = clock
        self._breaker = _Breaker(breaker_threshold, breaker_cooldown_seconds)
        self._memo: dict[str, tuple[Provider, float]] = {}
        self._memo_size = max(1, memo_size)
        self._memo_lock = threading.Lock()

    def provider_for(self, domain: str | None) -> Provider:
        """The mailbox provider of ``domain`` (``other`` when unknown or None)."""
        if not domain:
            return Provider.OTHER
        hit = self._memo.get(domain)
        if hit is not None and hit[1] > self._clock():
            return hit[0]
        name = domain.strip().rstrip(".").lower()
        hit = self._memo.get(name) if name != domain else None
        if hit is None or hit[1] <= self._clock():
            hit = self._resolve(name)
            if name != domain:
                self._remember(name, *hit)
        self._remember(domain, *hit)
        return hit[0]

    def _resolve(self, domain: str) -> tuple[Provider, float]:
        """``(provider, until when to believe it)`` for a normalised domain past the memo."""
        static = self.rules.for_domain(domain)
        if static is not None:
            self.stats.static_hits += 1
            return static, math.inf
        if "." not in domain or not _is_hostname(domain):
            self.stats.no_mail += 1  # an address literal, a bare name, garbage: never routable
            return Provider.OTHER, math.inf
        now = self._clock()
        stale: Provider | None = None
        cached = self._cache.get_provider(domain) if self._cache is not None else None
        if cached is not None:
            provider = _as_provider(cached[0])
            if provider is not None and now - cached[1] < self._ttl:
                self.stats.cache_hits += 1
                return provider, cached[1] + self._ttl
            stale = provider
        if not self._resolve_mx:
            self.stats.dns_skipped += 1
            return self._fallback(stale), now + self._negative_ttl
        if self._breaker.is_open(now):
            self.stats.dns_skipped += 1
            return self._fallback(stale), self._breaker.open_until
        return self._from_dns(domain, stale, now)

    def _from_dns(self, domain: str, stale: Provider | None, now: float) -> tuple[Provider, float]:
        lookup = self._lookup_mx(domain, now)
        if lookup.kind == "timeout":
            self._breaker.failure(self._clock(), domain)
            return self._fallback(stale), now + self._negative_ttl
        self._breaker.success()
        if lookup.kind == "error":
            return self._fallback(stale), now + self._negative_ttl
        if lookup.kind == "no_mail":
            self.stats.no_mail += 1
            return Provider.OTHER, now + self._negative_ttl
        provider = self._match(lookup.mx)
        if self._cache is not None:
            hosts = [host for _, host in sorted(lookup.mx)]
            self._cache.put_provider(domain, provider.value, hosts, now)
        return provider, now + self._ttl

    def _lookup_mx(self, domain: str, now: float) -> _Lookup:
        resolver = self._resolver
        if resolver is None:
            try:
                resolver = self._resolver = dns.resolver.Resolver()
            except (dns.exception.DNSException, OSError) as exc:
                log.warning("no DNS resolver configured (%s): MX lookups paused", exc)
                self._breaker.trip(now)
                return _Lookup("timeout")
        try:
            qname = dns.name.from_text(domain)  # absolute: the search list never applies
        except (dns.exception.DNSException, UnicodeError):
            return _Lookup("no_mail")
        self.stats.dns_queries += 1
        try:
            answer = resolver.resolve(
                qname, dns.rdatatype.MX, search=False, lifetime=self._lifetime
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return _Lookup("no_mail")
        except dns.exception.Timeout:
            self.stats.dns_timeouts += 1
            log.debug("MX lookup for %s timed out", domain)
            return _Lookup("timeout")
        except (dns.exception.DNSException, OSError) as exc:
            self.stats.dns_errors += 1
            log.debug("MX lookup for %s failed: %s", domain, exc)
            return _Lookup("error")
        mx = tuple(
            (rdata.preference, rdata.exchange.to_text(omit_final_dot=True).lower())
            for rdata in answer
            if rdata.exchange != dns.name.root  # RFC 7505 null MX: "MX 0 ." takes no mail
        )
        return _Lookup("answer", mx) if mx else _Lookup("no_mail")

    def _match(self, mx: Iterable[tuple[int, str]]) -> Provider:
        """Longest suffix match over the most preferred hosts; ties go to the first host by name."""
        records = list(mx)
        best = min(preference for preference, _ in records)
        matches = [
            (len(found[1]), host, found[0])
            for preference, host in records
            if preference == best and (found := self.rules.for_mx_host(host)) is not None
        ]
        if not matches:
            return Provider.OTHER
        matches.sort(key=lambda m: (-m[0], m[1]))
        return matches[0][2]

    def _fallback(self, stale: Provider | None) -> Provider:
        if stale is None:
            return Provider.OTHER
        self.stats.stale_served += 1
        return stale

    def _remember(self, domain: str, provider: Provider, expires_at: float) -> None:
        with self._memo_lock:
            if domain not in self._memo and len(self._memo) >= self._memo_size:
                del self._memo[next(iter(self._memo))]  # oldest first: cheap, and good enough
            self._memo[domain] = (provider, expires_at)


def _as_provider(value: str) -> Provider | None:
    try:
        return Provider(value)
    except ValueError:
        log.debug("ignoring cached provider %r: not a Provider value", value)
        return None
