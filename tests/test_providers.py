"""Recipient domain -> mailbox provider, against a real DNS server on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
from dns_server import DNSServer
from factories import Clock

from monitor.errors import ConfigError
from monitor.model import Provider
from monitor.providers import (
    MemoryProviderCache,
    ProviderResolver,
    ProviderRules,
    ProviderRulesError,
)

RULES = ProviderRules.load()

#: Real-world MX host shapes, one or more per suffix family, and the provider they mean.
MX_EXAMPLES = {
    "aspmx.l.google.com": Provider.GOOGLE,
    "smtp.google.com": Provider.GOOGLE,
    "aspmx2.googlemail.com": Provider.GOOGLE,
    "contoso-test.mail.protection.outlook.com": Provider.MICROSOFT,
    "hotmail-com.olc.protection.outlook.com": Provider.MICROSOFT,
    "contoso-com.o-v1.mx.microsoft": Provider.MICROSOFT,
    "mta5.am0.yahoodns.net": Provider.YAHOO,
    "mx-aol.mail.gm0.yahoodns.net": Provider.YAHOO,
    "mx01.mail.icloud.com": Provider.APPLE,
    "mx1a1.comcast.net": Provider.COMCAST,
    "mx00.emig.gmx.net": Provider.GMX,
    "mx-ha02.web.de": Provider.GMX,
    "smtp-in.orange.fr": Provider.ORANGE,
    "mxs.mail.ru": Provider.MAILRU,
    "mx.yandex.net": Provider.YANDEX,
    "mx.zoho.eu": Provider.ZOHO,
    "mail.protonmail.ch": Provider.PROTON,
    "in1-smtp.messagingengine.com": Provider.FASTMAIL,
    "mx0a-00123401.pphosted.com": Provider.PROOFPOINT,
    "us-smtp-inbound-1.mimecast.com": Provider.MIMECAST,
    "d123456a.ess.barracudanetworks.com": Provider.BARRACUDA,
    "mx1.hc1234-56.iphmx.com": Provider.CISCO,
    "mx.example.net": Provider.OTHER,
    "mail.notgoogle.com": Provider.OTHER,
}
SUFFIXES = sorted(RULES.mx_suffixes.items())


def _zone() -> str:
    lines = [
        "acme-corp MX 10 aspmx.l.google.com.",
        "acme-corp MX 20 alt1.aspmx.l.google.com.",
        "contoso MX 0 contoso-test.mail.protection.outlook.com.",
        "nomx A 192.0.2.1",
        "null MX 0 .",
        "gateway MX 5 mx0a-001.pphosted.com.",
        "gateway MX 10 aspmx.l.google.com.",
        "backup MX 10 aspmx.l.google.com.",
        "backup MX 20 mx.backup.example.",
        "own-primary MX 10 mx.own-primary.test.",
        "own-primary MX 20 aspmx.l.google.com.",
        "split MX 10 mx.a.example.net.",
        "split MX 10 mx.b.example.net.",
        "mover MX 10 aspmx.l.google.com.",
    ]
    lines += [f"ex-{i} MX 10 {host}." for i, host in enumerate(MX_EXAMPLES)]
    lines += [f"sfx-{i} MX 10 mx1.{suffix}." for i, (suffix, _) in enumerate(SUFFIXES)]
    lines += [f"slow-{i} MX 10 aspmx.l.google.com." for i in range(8)]
    return "\n".join(lines) + "\n"



@pytest.fixture
def server() -> Iterator[DNSServer]:
    with DNSServer({"test.": _zone()}) as dns_server:
        yield dns_server


@pytest.fixture
def clock() -> Clock:
    return Clock()


def resolver_for(
    server: DNSServer, clock: Clock | None = None, **options: object
) -> ProviderResolver:
    """A ProviderResolver that asks only ``server``, with a short lifetime."""
    options.setdefault("lifetime_seconds", 1.0)
    return ProviderResolver(
        resolver=server.resolver(),
        clock=clock or Clock(),
        **options,  # type: ignore[arg-type]
    )


# -- static map ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("gmail.com", Provider.GOOGLE),
        ("googlemail.com", Provider.GOOGLE),
        ("outlook.com", Provider.MICROSOFT),
        ("hotmail.co.uk", Provider.MICROSOFT),
        ("live.fr", Provider.MICROSOFT),
        ("msn.com", Provider.MICROSOFT),
        ("yahoo.fr", Provider.YAHOO),
        ("aol.com", Provider.YAHOO),
        ("ymail.com", Provider.YAHOO),
        ("rocketmail.com", Provider.YAHOO),
        ("icloud.com", Provider.APPLE),
        ("me.com", Provider.APPLE),
        ("mac.com", Provider.APPLE),
        ("comcast.net", Provider.COMCAST),
        ("gmx.de", Provider.GMX),
        ("web.de", Provider.GMX),
        ("wanadoo.fr", Provider.ORANGE),
        ("bk.ru", Provider.MAILRU),
        ("yandex.ru", Provider.YANDEX),
        ("zoho.com", Provider.ZOHO),
        ("proton.me", Provider.PROTON),
        ("fastmail.com", Provider.FASTMAIL),
        ("GMail.COM.", Provider.GOOGLE),
        (" Hotmail.com ", Provider.MICROSOFT),
    ],
)
def test_static_domains_need_no_dns(server: DNSServer, domain: str, expected: Provider) -> None:
    """Well-known consumer domains resolve from the static map without a DNS query."""
    assert resolver_for(server).provider_for(domain) is expected
    assert server.count() == 0


def test_yahoo_japan_is_not_yahoo_by_name() -> None:
    """yahoo.co.jp (Yahoo! JAPAN, another mail system) is left to its MX, not the name map."""
    assert RULES.for_domain("yahoo.co.jp") is None


# -- MX resolution ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "host", "expected"),
    [(i, host, provider) for i, (host, provider) in enumerate(MX_EXAMPLES.items())],
    ids=list(MX_EXAMPLES),
)
def test_mx_host_shapes_resolve(
    server: DNSServer, index: int, host: str, expected: Provider
) -> None:
    """A domain whose MX is a provider's real host shape resolves to that provider."""
    assert resolver_for(server).provider_for(f"ex-{index}.test") is expected
    assert server.count(f"ex-{index}.test", "MX") == 1


def test_every_packaged_suffix_resolves(server: DNSServer) -> None:
    """Every MX suffix in the packaged rules maps a host under it to its provider."""
    resolver = resolver_for(server)
    got = {suffix: resolver.provider_for(f"sfx-{i}.test") for i, (suffix, _) in enumerate(SUFFIXES)}
    assert got == dict(SUFFIXES)


def test_microsoft_and_google_examples_from_the_brief(server: DNSServer) -> None:
    """acme-corp (Google MX) and contoso (Exchange Online MX) resolve over DNS."""
    resolver = resolver_for(server)
    assert resolver.provider_for("acme-corp.test") is Provider.GOOGLE
    assert resolver.provider_for("contoso.test") is Provider.MICROSOFT


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("gateway.test", Provider.PROOFPOINT),  # the filter in front receives the mail
        ("backup.test", Provider.GOOGLE),  # an unknown backup MX does not matter
        ("own-primary.test", Provider.OTHER),  # an own primary MX wins over a known backup
    ],
)
def test_most_preferred_mx_decides(server: DNSServer, domain: str, expected: Provider) -> None:
    """Only the lowest-preference MX host(s) decide the provider."""
    assert resolver_for(server).provider_for(domain) is expected


def test_longest_suffix_wins(server: DNSServer) -> None:
    """Among the most preferred hosts, the longest matching suffix decides."""
    rules = ProviderRules.from_dict(
        {
            "providers": {
                "google": {"mx_suffixes": ["example.net"]},
                "microsoft": {"mx_suffixes": ["b.example.net"]},
            }
        }
    )
    assert rules.for_mx_host("mx.b.example.net") == (Provider.MICROSOFT, "b.example.net")
    assert rules.for_mx_host("mx.a.example.net") == (Provider.GOOGLE, "example.net")
    assert resolver_for(server, rules=rules).provider_for("split.test") is Provider.MICROSOFT


def test_suffixes_match_at_label_boundaries() -> None:
    """A suffix matches whole labels only: notgoogle.com is not google.com."""
    assert RULES.for_mx_host("mail.notgoogle.com") is None
    assert RULES.for_mx_host("ASPMX.L.GOOGLE.COM.") == (Provider.GOOGLE, "google.com")


# -- domains that take no mail ---------------------------------------------------


#: A zone whose negative answers say how long they live: SOA TTL 900, MINIMUM 1200
#: (RFC 2308 §5: the lesser, 900), and a null MX with TTL 600.
NEGATIVE_ZONE = """
@ 900 SOA ns1 hostmaster 1 3600 600 86400 1200
nomx A 192.0.2.1
null 600 MX 0 .
"""


@pytest.mark.parametrize(
    ("domain", "ttl"), [("gone.neg.test", 900), ("nomx.neg.test", 900), ("null.neg.test", 600)]
)
def test_no_mail_domains_are_cached_for_the_answers_negative_ttl(
    clock: Clock, domain: str, ttl: int
) -> None:
    """NXDOMAIN, no MX and null MX give other for the TTL the answer carries, also in the store."""
    cache = MemoryProviderCache()
    with DNSServer({"neg.test.": NEGATIVE_ZONE}) as server:
        resolver = resolver_for(server, clock, cache=cache, negative_ttl_seconds=3600)
        assert resolver.provider_for(domain) is Provider.OTHER
        assert resolver.provider_for(domain) is Provider.OTHER
        assert cache.entries[domain].expires_at == clock.now + ttl
        again = resolver_for(server, clock, cache=cache)  # a re-ingest: the store answers
        assert again.provider_for(domain) is Provider.OTHER
        assert server.count(domain, "MX") == 1
        clock.advance(ttl - 1)
        assert resolver.provider_for(domain) is Provider.OTHER
        assert server.count(domain, "MX") == 1
        clock.advance(2)
        assert resolver.provider_for(domain) is Provider.OTHER
        assert server.count(domain, "MX") == 2
        assert resolver.stats.no_mail == 2


def test_negative_ttl_is_capped(clock: Clock) -> None:
    """A negative answer is believed at most negative_ttl_seconds, whatever its SOA says."""
    with DNSServer({"neg.test.": NEGATIVE_ZONE}) as server:
        resolver = resolver_for(server, clock, negative_ttl_seconds=120)
        resolver.provider_for("gone.neg.test")
        clock.advance(121)
        resolver.provider_for("gone.neg.test")
        assert server.count("gone.neg.test", "MX") == 2


# -- caching ---------------------------------------------------------------------


def test_repeated_domain_asks_dns_once(server: DNSServer) -> None:
    """A second lookup of the same domain is answered in-process, without a query."""
    cache = MemoryProviderCache()
    resolver = resolver_for(server, cache=cache)
    assert resolver.provider_for("acme-corp.test") is Provider.GOOGLE
    assert resolver.provider_for("acme-corp.test") is Provider.GOOGLE
    assert resolver.provider_for("ACME-Corp.test.") is Provider.GOOGLE
    assert server.count() == 1
    entry = cache.entries["acme-corp.test"]
    assert entry.provider == "google"
    assert entry.mx_hosts == ["aspmx.l.google.com", "alt1.aspmx.l.google.com"]


def test_store_cache_serves_other_processes(server: DNSServer, clock: Clock) -> None:
    """A fresh entry in the store answers a new resolver without a DNS query."""
    cache = MemoryProviderCache()
    assert resolver_for(server, clock, cache=cache).provider_for("contoso.test") == "microsoft"
    second = resolver_for(server, clock, cache=cache)
    assert second.provider_for("contoso.test") is Provider.MICROSOFT
    assert server.count("contoso.test") == 1
    assert second.stats.cache_hits == 1


def test_ttl_expiry_asks_dns_again(server: DNSServer, clock: Clock) -> None:
    """After ttl_seconds the domain is looked up again and a changed MX is seen."""
    cache = MemoryProviderCache()
    resolver = resolver_for(server, clock, cache=cache, ttl_seconds=7 * 86400)
    assert resolver.provider_for("mover.test") is Provider.GOOGLE
    server.set_zone(
        "test.",
        _zone().replace(
            "mover MX 10 aspmx.l.google.com.", "mover MX 10 x.mail.protection.outlook.com."
        ),
    )
    clock.advance(7 * 86400 - 1)
    assert resolver.provider_for("mover.test") is Provider.GOOGLE
    assert server.count("mover.test") == 1
    clock.advance(2)
    assert resolver.provider_for("mover.test") is Provider.MICROSOFT
    assert server.count("mover.test") == 2
    assert cache.entries["mover.test"].resolved_at == clock.now


def test_expired_store_entry_is_refreshed(server: DNSServer, clock: Clock) -> None:
    """A store entry older than the ttl is replaced by a fresh DNS answer."""
    cache = MemoryProviderCache()
    cache.put_provider("acme-corp.test", "microsoft", ["old.example"], clock.now - 8 * 86400)
    resolver = resolver_for(server, clock, cache=cache)
    assert resolver.provider_for("acme-corp.test") is Provider.GOOGLE
    assert cache.entries["acme-corp.test"].resolved_at == clock.now


def test_store_values_outside_the_label_set_are_ignored(server: DNSServer) -> None:
    """A cached provider that is not a Provider member is treated as absent."""
    cache = MemoryProviderCache()
    cache.put_provider("acme-corp.test", "hotmail", [], time.time())
    resolver = ProviderResolver(resolver=server.resolver(), cache=cache)
    assert resolver.provider_for("acme-corp.test") is Provider.GOOGLE
    assert server.count("acme-corp.test") == 1


def test_memo_is_bounded(server: DNSServer) -> None:
    """With memo_size=1, a domain pushed out of the memo is resolved again."""
    resolver = resolver_for(server, memo_size=1)
    for domain in ("acme-corp.test", "contoso.test", "acme-corp.test"):
        resolver.provider_for(domain)
    assert server.count("acme-corp.test") == 2


# -- failures ----------------------------------------------------------------------


def test_timeout_is_other_and_negatively_cached(server: DNSServer, clock: Clock) -> None:
    """A lookup that times out gives other now and is not retried within the negative ttl."""
    server.drop("slow-0.test")
    cache = MemoryProviderCache()
    resolver = resolver_for(server, clock, cache=cache, lifetime_seconds=0.2)
    started = time.monotonic()
    assert resolver.provider_for("slow-0.test") is Provider.OTHER
    assert time.monotonic() - started < 2
    asked = server.count("slow-0.test")
    assert resolver.provider_for("slow-0.test") is Provider.OTHER
    assert server.count("slow-0.test") == asked
    entry = cache.entries["slow-0.test"]  # a re-ingest within the failure ttl does not wait
    assert (entry.provider, entry.expires_at) == ("other", clock.now + 300)
    assert resolver.stats.dns_timeouts == 1


def test_servfail_is_other_for_the_failure_ttl(server: DNSServer, clock: Clock) -> None:
    """A SERVFAIL gives other for failure_ttl_seconds (in the store too), then is re-asked."""
    server.servfail("acme-corp.test")
    cache = MemoryProviderCache()
    resolver = resolver_for(server, clock, cache=cache, failure_ttl_seconds=60)
    assert resolver.provider_for("acme-corp.test") is Provider.OTHER
    assert resolver.provider_for("acme-corp.test") is Provider.OTHER
    assert server.count("acme-corp.test") == 1
    assert cache.entries["acme-corp.test"].expires_at == clock.now + 60
    server.clear_faults()
    clock.advance(61)
    assert resolver.provider_for("acme-corp.test") is Provider.GOOGLE
    assert resolver.stats.dns_errors == 1


def test_failed_lookup_serves_the_stale_store_entry(server: DNSServer, clock: Clock) -> None:
    """When DNS times out, an expired store entry beats other and stays (no label flapping)."""
    server.drop("slow-0.test")
    cache = MemoryProviderCache()
    cache.put_provider("slow-0.test", "google", ["aspmx.l.google.com"], clock.now - 30 * 86400)
    resolver = resolver_for(server, clock, cache=cache, lifetime_seconds=0.1)
    assert resolver.provider_for("slow-0.test") is Provider.GOOGLE
    assert resolver.stats.stale_served == 1
    assert cache.entries["slow-0.test"].provider == "google"


def test_circuit_breaker_stops_dns_after_five_timeouts(server: DNSServer, clock: Clock) -> None:
    """Five timeouts in a row pause DNS for five minutes; then lookups resume."""
    for i in range(6):
        server.drop(f"slow-{i}.test")
    resolver = resolver_for(server, clock, lifetime_seconds=0.05)
    for i in range(5):
        assert resolver.provider_for(f"slow-{i}.test") is Provider.OTHER
        assert server.count(f"slow-{i}.test") >= 1
    started = time.monotonic()
    assert resolver.provider_for("acme-corp.test") is Provider.OTHER
    assert resolver.provider_for("contoso.test") is Provider.OTHER
    assert time.monotonic() - started < 0.5  # no 50 ms lifetime was waited out
    assert server.count("acme-corp.test") == server.count("contoso.test") == 0
    assert resolver.stats.dns_skipped == 2
    clock.advance(299)
    assert resolver.provider_for("acme-corp.test") is Provider.OTHER
    assert server.count("acme-corp.test") == 0
    clock.advance(2)
    assert resolver.provider_for("acme-corp.test") is Provider.GOOGLE
    assert server.count("acme-corp.test") == 1


def test_circuit_breaker_reopens_on_the_first_timeout_after_a_pause(
    server: DNSServer, clock: Clock
) -> None:
    """After the pause, one more timeout (no success between) pauses DNS again."""
    for i in range(6):
        server.drop(f"slow-{i}.test")
    resolver = resolver_for(server, clock, lifetime_seconds=0.05)
    for i in range(5):
        resolver.provider_for(f"slow-{i}.test")
    clock.advance(301)
    assert resolver.provider_for("slow-5.test") is Provider.OTHER
    assert resolver.provider_for("contoso.test") is Provider.OTHER
    assert server.count("contoso.test") == 0


def test_a_success_resets_the_timeout_count(server: DNSServer, clock: Clock) -> None:
    """Timeouts interleaved with answers never open the breaker."""
    for i in range(8):
        server.drop(f"slow-{i}.test")
    resolver = resolver_for(server, clock, lifetime_seconds=0.05)
    for i in range(4):
        resolver.provider_for(f"slow-{i}.test")
    assert resolver.provider_for("acme-corp.test") is Provider.GOOGLE
    for i in range(4, 8):
        resolver.provider_for(f"slow-{i}.test")
    assert resolver.provider_for("contoso.test") is Provider.MICROSOFT


def test_missing_resolver_configuration_pauses_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a usable system resolver configuration, lookups give other and DNS pauses."""
    built: list[int] = []

    def unconfigured(*args: object, **kwargs: object) -> None:
        built.append(1)
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    monkeypatch.setattr(dns.resolver, "Resolver", unconfigured)
    resolver = ProviderResolver(clock=Clock())
    assert resolver.provider_for("acme.example") is Provider.OTHER
    assert resolver.provider_for("contoso.example") is Provider.OTHER
    assert resolver.provider_for("gmail.com") is Provider.GOOGLE
    assert built == [1]


# -- offline --------------------------------------------------------------------------


def test_offline_mode_uses_static_map_and_store_only(server: DNSServer, clock: Clock) -> None:
    """resolve_mx=False answers from the static map and the store (even expired), never DNS."""
    cache = MemoryProviderCache()
    cache.put_provider("fresh.test", "microsoft", [], clock.now)
    cache.put_provider("old.test", "proofpoint", [], clock.now - 365 * 86400)
    resolver = resolver_for(server, clock, cache=cache, resolve_mx=False)
    assert resolver.provider_for("gmail.com") is Provider.GOOGLE
    assert resolver.provider_for("fresh.test") is Provider.MICROSOFT
    assert resolver.provider_for("old.test") is Provider.PROOFPOINT
    assert resolver.provider_for("acme-corp.test") is Provider.OTHER
    assert server.count() == 0


def test_offline_mode_never_builds_a_system_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a resolver and with resolve_mx=False no DNS configuration is read."""

    def no_system_resolver(*args: object, **kwargs: object) -> None:
        raise AssertionError("the system resolver was built")

    monkeypatch.setattr(dns.resolver, "Resolver", no_system_resolver)
    resolver = ProviderResolver(resolve_mx=False)
    assert resolver.provider_for("unknown.invalid") is Provider.OTHER
    assert resolver.provider_for("icloud.com") is Provider.APPLE


# -- the label set ------------------------------------------------------------------


def test_every_answer_is_a_provider_member(server: DNSServer) -> None:
    """Whatever the input, provider_for returns a Provider member (a bounded label)."""
    resolver = resolver_for(server, lifetime_seconds=0.2)
    inputs: list[str | None] = [
        None,
        "",
        "   ",
        ".",
        "localhost",
        "[192.0.2.1]",
        "a..b.test",
        "x" * 70 + ".test",
        ("a." * 130) + "test",
        "bücher.test",
        "user@acme-corp.test",
        "outside.example.com",
        *(f"ex-{i}.test" for i in range(len(MX_EXAMPLES))),
        "acme-corp.test",
        "gmail.com",
    ]
    for value in inputs:
        assert isinstance(resolver.provider_for(value), Provider), value


def test_packaged_rules_cover_every_provider() -> None:
    """Every provider label except other has MX suffixes, so each can come out of DNS."""
    assert set(RULES.mx_suffixes.values()) == set(Provider) - {Provider.OTHER}
    assert all(isinstance(p, Provider) for p in RULES.domains.values())


# -- rules files ----------------------------------------------------------------------


def test_config_file_extends_and_overrides(tmp_path: Path) -> None:
    """An extra rules file adds entries and wins over the packaged ones."""
    extra = tmp_path / "providers.toml"
    extra.write_text(
        '[providers.zoho]\ndomains = ["example.org"]\n'
        '[providers.other]\ndomains = ["gmail.com"]\nmx_suffixes = ["pphosted.com"]\n'
    )
    rules = ProviderRules.load(extra)
    assert rules.for_domain("example.org") is Provider.ZOHO
    assert rules.for_domain("gmail.com") is Provider.OTHER
    assert rules.for_mx_host("mx0a-1.pphosted.com") == (Provider.OTHER, "pphosted.com")
    assert rules.for_domain("hotmail.com") is Provider.MICROSOFT


def test_missing_rules_file_is_a_config_error(tmp_path: Path) -> None:
    """A configured rules file that cannot be read is reported as a ConfigError."""
    with pytest.raises(ConfigError, match="cannot read"):
        ProviderRules.load(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[providers.hotmail]\ndomains = ["x.test"]', "not a provider"),
        ('[providers.google]\ndomain = ["x.test"]', "a table with keys"),
        ('[providers.google]\ndomains = "x.test"', "must be a list"),
        ('[providers.google]\ndomains = ["localhost"]', "not a domain name"),
        ('[providers.google]\nmx_suffixes = ["bad host.test"]', "not a domain name"),
        (
            '[providers.google]\ndomains = ["x.test"]\n[providers.yahoo]\ndomains = ["x.test"]',
            "already mapped",
        ),
        ('version = 2\n[providers.google]\ndomains = ["x.test"]', "unknown keys"),
        ("[providers.google\n", "extra.toml"),
    ],
)
def test_malformed_rules_are_rejected(text: str, message: str) -> None:
    """A rules file with an unknown provider, key or malformed entry fails loudly."""
    with pytest.raises(ProviderRulesError, match=message):
        ProviderRules.from_toml(text, source="extra.toml")


# -- the test DNS server itself -------------------------------------------------------


def test_dns_server_answers_like_an_authoritative_server(server: DNSServer) -> None:
    """The test server sets AA, gives NXDOMAIN with the SOA, and refuses other zones."""

    def ask(name: str, rdtype: str = "MX") -> dns.message.Message:
        return dns.query.udp(
            dns.message.make_query(name, rdtype), "127.0.0.1", timeout=2, port=server.port
        )

    found = ask("acme-corp.test")
    assert found.flags & dns.flags.AA and len(found.answer) == 1
    missing = ask("noreply.test")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority[0].rdtype == dns.rdatatype.SOA
    assert ask("nomx.test").rcode() == dns.rcode.NOERROR and not ask("nomx.test").answer
    assert ask("example.com").rcode() == dns.rcode.REFUSED


def test_dns_server_serves_tcp_and_wildcards() -> None:
    """Large answers fall back to TCP and wildcard names are synthesised."""
    big = " ".join(f'"{c * 200}"' for c in "abc")
    with DNSServer({"zen.test.": f"*.bl TXT {big}\n"}) as zen:
        resolver = zen.resolver()
        resolver.use_edns(-1)  # 512-byte UDP limit: the 600-byte TXT needs TCP
        answer = resolver.resolve("2.0.0.127.bl.zen.test", "TXT")
        assert b"".join(answer[0].strings) == b"a" * 200 + b"b" * 200 + b"c" * 200
        assert {q.transport for q in zen.queries} == {"udp", "tcp"}
