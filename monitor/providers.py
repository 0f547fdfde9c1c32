"""Recipient domain -> mailbox provider: the bounded ``provider`` label.

:meth:`ProviderResolver.provider_soon` answers at once from the first of:

1. the in-process memo (repeated domains cost one dict lookup);
2. the static map of well-known consumer domains (``gmail.com`` -> google);
3. the relay host the log line names, when it is the domain's MX (the relay rule below);
4. the store's cache (:class:`ProviderCache`) while fresh;

and otherwise starts a lookup of the domain's MX records on a bounded pool of threads
and returns None: the caller holds the event and later calls
:meth:`ProviderResolver.wait_for`, by when the answer has usually arrived.
:meth:`ProviderResolver.provider_for` is the blocking form.  The most preferred MX
host(s) are matched against the MX suffix map by longest suffix
(``aspmx.l.google.com`` -> google); no match is ``other``.  Both maps are data,
``monitor/data/providers.toml`` (:class:`ProviderRules`).

The relay rule: a delivery attempt names the host the MTA connected to (Postfix
``relay=host[ip]:port``, Exim ``H=host [ip]``, KumoMTA's peer).  When the MTA looked up
the recipient domain's MX itself, that host *is* its MX, so it decides the provider
through the same suffix map without DNS.  It does not when the MTA hands mail to a
smarthost (``relay=smtp.sendgrid.net[...]:587``, ``relay=[10.0.0.5]``), so a relay host
decides only when it is a host name that matches the suffix map, on port 25 or no port
logged (smarthost submission uses 587, 465 or 2525), and is not listed in
``smarthosts``; a relay host seen carrying mail for a well-known domain of another
provider (the static map) is a smarthost too, and is not trusted again.  A relay answer
lives in the memo only, never in the store: the log re-derives it on every read.  It
stands in for the MX lookup, so with ``resolve_mx`` off it is not used either: a
domain's provider then never depends on which of its lines was read first (a resumed
read would otherwise count a domain as ``other`` that a whole read counted as google).

A domain that takes no mail (NXDOMAIN, no MX, RFC 7505 null MX) is ``other`` for the
answer's negative TTL (RFC 2308 §5; at least a minute, at most
``negative_ttl_seconds``); a lookup that failed (timeout, SERVFAIL) for
``failure_ttl_seconds``.  Both are kept in the memo and in the store, so a re-ingest does
not ask again; but when the lookup failed and the store holds an expired real answer,
that answer is used instead and kept (serve-stale, as RFC 8767 does for resolvers), so a
DNS outage does not move traffic between ``provider`` label values.  After
``breaker_threshold`` consecutive timeouts DNS is not asked for
``breaker_cooldown_seconds``: a bulk ingest on a machine without DNS never waits on it.

Every value returned is a :class:`monitor.model.Provider` member.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, NamedTuple, Protocol

from monitor.config import Config
from monitor.model import Provider
from monitor.provider_dns import Breaker, lookup_mx, nameserver_resolver
from monitor.provider_rules import ProviderRules, ProviderRulesError, is_hostname

if TYPE_CHECKING:
    import dns.resolver

__all__ = [
    "CachedProvider",
    "MemoryProviderCache",
    "ProviderCache",
    "ProviderResolver",
    "ProviderRules",
    "ProviderRulesError",
    "ResolverStats",
    "resolver_for",
]

log = logging.getLogger(__name__)

_MIN_NEGATIVE_TTL = 60.0  # a zero-TTL NXDOMAIN must not cost a query per event in bulk


class CachedProvider(NamedTuple):
    """One store entry: ``expires_at`` None means fresh for the resolver's ``ttl_seconds``
    after ``resolved_at``; negative answers carry their own expiry."""

    provider: str
    mx_hosts: list[str]
    resolved_at: float
    expires_at: float | None = None


class ProviderCache(Protocol):
    """Where resolved providers outlive the process (the store implements it).

    Times are epoch seconds; the resolver decides freshness::

        class Store:
            def get_provider(self, domain):
                row = ...  # SELECT provider, resolved_at, expires_at FROM provider_cache ...
                return None if row is None else (row.provider, row.resolved_at, row.expires_at)

            def put_providers(self, entries):
                ...  # upsert every (domain, CachedProvider) in one transaction
    """

    def get_provider(self, domain: str) -> tuple[str, float, float | None] | None: ...

    def put_providers(self, entries: Mapping[str, CachedProvider]) -> None: ...


class MemoryProviderCache:
    """A :class:`ProviderCache` in a dict: for tests and runs without a store."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedProvider] = {}

    def get_provider(self, domain: str) -> tuple[str, float, float | None] | None:
        entry = self.entries.get(domain)
        return None if entry is None else (entry.provider, entry.resolved_at, entry.expires_at)

    def put_provider(
        self,
        domain: str,
        provider: str,
        mx_hosts: list[str],
        resolved_at: float,
        expires_at: float | None = None,
    ) -> None:
        self.entries[domain] = CachedProvider(provider, list(mx_hosts), resolved_at, expires_at)

    def put_providers(self, entries: Mapping[str, CachedProvider]) -> None:
        self.entries.update(entries)


@dataclass
class ResolverStats:
    """What the resolver did, by outcome (memo hits are not counted: they are the fast path)."""

    static_hits: int = 0
    relay_hits: int = 0  # decided by the relay host the line names
    relay_first: int = 0  # lookups put off, then not asked: a relay host decided first
    cache_hits: int = 0
    dns_queries: int = 0
    answers: int = 0  # domains resolved by an MX answer
    no_mail: int = 0  # NXDOMAIN, no MX, null MX, not a domain name
    dns_timeouts: int = 0
    dns_errors: int = 0  # SERVFAIL, REFUSED, no usable nameserver
    dns_skipped: int = 0  # not asked: offline, or the circuit breaker is open
    stale_served: int = 0
    dns_seconds: float = 0.0  # summed over lookups, which overlap
    wait_seconds: float = 0.0  # how long callers waited for lookups in flight

    def as_dict(self) -> dict[str, float]:
        return {f.name: round(getattr(self, f.name), 3) for f in fields(self)}


_Answer = tuple[Provider, float]  # (provider, until when to believe it)


class ProviderResolver:
    """Maps recipient domains to :class:`~monitor.model.Provider` values.

    ::

        resolver = ProviderResolver(cache=store)
        resolver.provider_for("acme-corp.com")  # Provider.GOOGLE, if its MX is aspmx.l.google.com
        resolver.provider_soon("new.example")   # None: a lookup started; wait_for() gets it
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
        failure_ttl_seconds: float = 300,
        lifetime_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
        breaker_threshold: int = 5,
        breaker_cooldown_seconds: float = 300.0,
        memo_size: int = 100_000,
        concurrency: int = 16,
        smarthosts: Iterable[str] = (),
        defer_seconds: float = 0.0,
    ) -> None:
        self.rules = rules if rules is not None else ProviderRules.load()
        self.stats = ResolverStats()
        self._resolver = resolver
        self._cache = cache
        self._resolve_mx = resolve_mx
        self._ttl = ttl_seconds
        self._negative_ttl = negative_ttl_seconds
        self._failure_ttl = failure_ttl_seconds
        self._lifetime = lifetime_seconds
        self._clock = clock
        self._breaker = Breaker(breaker_threshold, breaker_cooldown_seconds)
        self._memo: dict[str, _Answer] = {}
        self._memo_size = max(1, memo_size)
        self._memo_lock = threading.Lock()
        self._concurrency = max(1, concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: dict[str, Future[_Answer]] = {}
        self._unsaved: dict[str, CachedProvider] = {}
        self._lock = threading.Lock()  # _inflight, _unsaved, _smarthosts and stats
        self._smarthosts = {h.strip().strip("[]").rstrip(".").lower() for h in smarthosts}
        # provider_soon puts a lookup off by this long (see there); domain -> when it is
        # due, in the order put off, so the due ones are at the front.
        self._defer = max(0.0, defer_seconds)
        self._deferred: dict[str, float] = {}
        self._due = math.inf  # when the first one put off is due (read without the lock)

    # -- asking -------------------------------------------------------------------

    def provider_for(self, domain: str | None, relay: str | None = None) -> Provider:
        """The mailbox provider of ``domain`` (``other`` when unknown or None); may wait."""
        provider = self.wait_for(domain, relay)
        self.save()
        return provider

    def provider_soon(self, domain: str | None, relay: str | None = None) -> Provider | None:
        """The provider if known without waiting; else None, with its lookup under way.

        With ``defer_seconds`` the lookup is only put off that long: a back-fill reads a
        message's delivery line (whose relay host names the provider, no DNS needed) a few
        hundred lines after the line that first names its domain. :meth:`start_deferred`
        (the pipeline calls it before it waits for a batch's providers) or a later call
        past the delay starts the lookups still needed.
        """
        if self._defer and self._due <= time.monotonic():
            self.start_deferred(everything=False)
        if domain:  # the memo first, as _soon looks: most events name a domain seen before
            hit = self._memo.get(domain)
            if hit is not None and hit[1] > self._clock():
                return hit[0]
        found = self._soon(domain, relay, defer=self._defer > 0)
        return None if found is None or isinstance(found, Future) else found

    def start_deferred(self, *, everything: bool = True) -> None:
        """Start the lookups :meth:`provider_soon` put off (only the due ones, unless
        ``everything``), except for domains a relay host decided meanwhile."""
        now = time.monotonic()
        with self._lock:
            due: list[str] = []
            for domain, when in self._deferred.items():
                if when > now and not everything:
                    break
                due.append(domain)
            for domain in due:
                del self._deferred[domain]
            self._due = next(iter(self._deferred.values())) if self._deferred else math.inf
        for domain in due:
            # Asked again from the top: the memo holds what a relay decided meanwhile.
            if not isinstance(self._soon(domain, None), Future):
                self._count("relay_first")

    def wait_for(self, domain: str | None, relay: str | None = None) -> Provider:
        """The provider, waiting for its lookup if one is in flight (the store is not
        written: :meth:`save` does that, once for many domains)."""
        found = self._soon(domain, relay)
        if not isinstance(found, Future):
            assert found is not None  # only provider_soon puts a lookup off
            return found
        started = time.monotonic()
        provider, expires_at = found.result()
        self._count("wait_seconds", time.monotonic() - started)
        if domain is not None:
            self._remember(domain, provider, expires_at)
        return provider

    def save(self) -> None:
        """Write the answers learned since the last save to the store's cache, at once."""
        if self._cache is None:
            return
        with self._lock:
            entries, self._unsaved = self._unsaved, {}
        if entries:
            try:
                self._cache.put_providers(entries)
            except BaseException:
                with self._lock:  # kept for the next save; newer answers win
                    self._unsaved = {**entries, **self._unsaved}
                raise

    def close(self) -> None:
        """Stop the lookup threads (lookups not started are dropped)."""
        pool, self._pool = self._pool, None
        with self._lock:
            self._deferred.clear()
            self._due = math.inf
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- the fast path --------------------------------------------------------------

    def _soon(
        self, domain: str | None, relay: str | None, defer: bool = False
    ) -> Provider | Future[_Answer] | None:
        """The provider, its lookup under way, or None: put off (``defer``)."""
        if not domain:
            return Provider.OTHER
        hit = self._memo.get(domain)
        if hit is not None and hit[1] > self._clock():
            return hit[0]
        name = domain.strip().rstrip(".").lower()
        if name != domain:
            hit = self._memo.get(name)
            if hit is not None and hit[1] > self._clock():
                self._remember(domain, *hit)
                return hit[0]
        found = self._known(name, relay, defer)
        if found is None or isinstance(found, Future):
            return found
        self._remember(name, *found)
        if name != domain:
            self._remember(domain, *found)
        return found[0]

    def _known(
        self, domain: str, relay: str | None, defer: bool = False
    ) -> _Answer | Future[_Answer] | None:
        """What is known of a normalised domain past the memo, its lookup under way, or
        None: its lookup put off (``defer``)."""
        static = self.rules.for_domain(domain)
        if static is not None:
            self._count("static_hits")
            if relay:
                self._check_relay(relay, static, domain)
            return static, math.inf
        if "." not in domain or not is_hostname(domain):
            self._count("no_mail")  # an address literal, a bare name, garbage: never routable
            return Provider.OTHER, math.inf
        now = self._clock()
        if relay and self._resolve_mx:
            by_relay = self._from_relay(relay)
            if by_relay is not None:
                self._count("relay_hits")
                return by_relay, now + self._ttl
        stale: Provider | None = None
        cached = self._cache.get_provider(domain) if self._cache is not None else None
        if cached is not None:
            name, resolved_at, expires_at = cached
            provider = _as_provider(name)
            fresh_until = resolved_at + self._ttl if expires_at is None else expires_at
            if provider is not None and now < fresh_until:
                self._count("cache_hits")
                return provider, fresh_until
            if expires_at is None:
                stale = provider  # only a real answer is worth serving stale
        if not self._resolve_mx:
            self._count("dns_skipped")
            return self._fallback(stale), now + self._negative_ttl
        if self._breaker.is_open(now):
            self._count("dns_skipped")
            return self._fallback(stale), self._breaker.open_until
        if defer:
            return self._put_off(domain)
        return self._start(domain, stale)

    def _put_off(self, domain: str) -> Future[_Answer] | None:
        with self._lock:
            future = self._inflight.get(domain)
            if future is None and domain not in self._deferred:
                due = time.monotonic() + self._defer
                if not self._deferred:
                    self._due = due
                self._deferred[domain] = due
        return future

    # -- relay hosts -------------------------------------------------------------------

    def _from_relay(self, relay: str) -> Provider | None:
        host = _mx_relay_host(relay)
        if host is None or self._is_smarthost(host):
            return None
        found = self.rules.for_mx_host(host)
        return None if found is None else found[0]

    def _is_smarthost(self, host: str) -> bool:
        labels = host.split(".")
        return any(".".join(labels[i:]) in self._smarthosts for i in range(len(labels)))

    def _check_relay(self, relay: str, provider: Provider, domain: str) -> None:
        """A relay host that carries a well-known domain of another provider is a smarthost."""
        host = _mx_relay_host(relay)
        if host is None or self._is_smarthost(host):
            return
        found = self.rules.for_mx_host(host)
        if found is not None and found[0] is not provider:
            with self._lock:
                self._smarthosts.add(host)
            log.warning(
                "relay %s (%s) carries mail for %s (%s): treated as a smarthost, it no "
                "longer decides providers; list it in [providers] smarthosts",
                host, found[0].value, domain, provider.value,
            )  # fmt: skip

    # -- DNS, on the pool -----------------------------------------------------------------

    def _start(self, domain: str, stale: Provider | None) -> Future[_Answer]:
        with self._lock:
            self._deferred.pop(domain, None)
            future = self._inflight.get(domain)
            if future is None:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        self._concurrency, thread_name_prefix="mailmon-mx"
                    )
                future = self._pool.submit(self._from_dns, domain, stale)
                self._inflight[domain] = future
        return future

    def _from_dns(self, domain: str, stale: Provider | None) -> _Answer:
        try:
            answer, entry = self._ask(domain, stale)
            with self._memo_lock:
                current = self._memo.get(domain)
            if current is not None and current[1] > self._clock():
                answer = current  # the relay decided meanwhile: keep one answer per run
            self._remember(domain, *answer)
            if entry is not None and self._cache is not None:
                with self._lock:
                    self._unsaved[domain] = entry
            return answer
        finally:
            with self._lock:
                self._inflight.pop(domain, None)

    def _ask(self, domain: str, stale: Provider | None) -> tuple[_Answer, CachedProvider | None]:
        """The answer for the memo and the entry for the store (None: keep the store's)."""
        resolver = self._resolver
        now = self._clock()
        if resolver is None:
            import dns.exception  # here: see monitor.provider_dns
            import dns.resolver

            try:
                resolver = self._resolver = dns.resolver.Resolver()
            except (dns.exception.DNSException, OSError) as exc:
                log.warning("no DNS resolver configured (%s): MX lookups paused", exc)
                self._breaker.trip(now)
                self._count("dns_skipped")
                return (self._fallback(stale), self._breaker.open_until), None
        self._count("dns_queries")
        started = time.monotonic()
        lookup = lookup_mx(resolver, domain, self._lifetime)
        self._count("dns_seconds", time.monotonic() - started)
        if lookup.kind in ("timeout", "error"):
            if lookup.kind == "timeout":
                self._count("dns_timeouts")
                self._breaker.failure(self._clock(), domain)
            else:
                self._count("dns_errors")
                self._breaker.success()
            until = now + self._failure_ttl
            if stale is not None:
                return (self._fallback(stale), until), None
            return (Provider.OTHER, until), CachedProvider(Provider.OTHER.value, [], now, until)
        self._breaker.success()
        if lookup.kind == "no_mail":
            self._count("no_mail")
            ttl = self._negative_ttl if lookup.ttl is None else lookup.ttl
            until = now + min(max(ttl, _MIN_NEGATIVE_TTL), self._negative_ttl)
            return (Provider.OTHER, until), CachedProvider(Provider.OTHER.value, [], now, until)
        self._count("answers")
        provider = self._match(lookup.mx)
        hosts = [host for _, host in sorted(lookup.mx)]
        return (provider, now + self._ttl), CachedProvider(provider.value, hosts, now)

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
        self._count("stale_served")
        return stale

    def _count(self, name: str, amount: float = 1) -> None:
        with self._lock:  # lookups run on several threads
            setattr(self.stats, name, getattr(self.stats, name) + amount)

    def _remember(self, domain: str, provider: Provider, expires_at: float) -> None:
        with self._memo_lock:
            if domain not in self._memo and len(self._memo) >= self._memo_size:
                del self._memo[next(iter(self._memo))]  # oldest first: cheap, and good enough
            self._memo[domain] = (provider, expires_at)


def _mx_relay_host(relay: str) -> str | None:
    """The host of ``name[ip]:port`` / ``name[ip]`` / ``name`` when it may be an MX:
    a host name with a dot, reached on port 25 or an unlogged port."""
    name, bracket, rest = relay.strip().partition("[")
    port = None
    if bracket:
        _, _, after = rest.partition("]")
        if after.startswith(":") and after[1:].isdigit():
            port = int(after[1:])
    if port not in (None, 25):  # 587, 465, 2525: submission to a smarthost
        return None
    host = name.rstrip(".").lower()
    if "." not in host or not is_hostname(host) or host.replace(".", "").isdigit():
        return None
    return host


def _as_provider(value: str) -> Provider | None:
    try:
        return Provider(value)
    except ValueError:
        log.debug("ignoring cached provider %r: not a Provider value", value)
        return None


def resolver_for(
    config: Config, store: ProviderCache, *, defer_seconds: float = 0.0
) -> ProviderResolver:
    """The resolver ``[providers]`` describes, caching in ``store`` (``defer_seconds``:
    see :meth:`ProviderResolver.provider_soon`)."""
    p = config.providers
    return ProviderResolver(
        resolver=nameserver_resolver(p.nameservers) if p.nameservers else None,
        cache=store,
        rules=ProviderRules.load(p.rules_file),
        resolve_mx=p.resolve_mx,
        ttl_seconds=p.cache_ttl_seconds,
        negative_ttl_seconds=p.negative_ttl_seconds,
        failure_ttl_seconds=p.failure_ttl_seconds,
        lifetime_seconds=p.dns_timeout_seconds,
        concurrency=p.dns_concurrency,
        smarthosts=p.smarthosts,
        defer_seconds=defer_seconds,
    )
