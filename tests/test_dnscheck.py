"""DNS posture checks and DNSBL lookups against a DNS server on 127.0.0.1: every check's
pass, warn and fail, lists' codes and refusals, `mailmon dns check`, the dns_check job and
the gauges `serve` exports.  A guard refuses any packet to an address off loopback."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dns_server import DNSServer
from policy_server import PolicyServer
from posture_zones import (
    BLOCKLISTS,
    CLEAN_IP,
    LISTED_IP,
    POLICIES,
    REFUSED_IP,
    REWRITTEN_IP,
    SELECTORS,
    zones,
)
from prometheus_client import generate_latest
from test_cli import mailmon
from test_service import _free_port

from monitor.config import load_config
from monitor.dnscheck.dnsbl import Blocklist, check_dnsbl, load_lists, query_name
from monitor.dnscheck.posture import PolicyFetch, check_domain
from monitor.dnscheck.records import DnsblListing, DnsCheck
from monitor.driver import Driver
from monitor.jobs import builtin
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.store import Store


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection or datagram to an address off loopback, or a name looked up by the
    system resolver, fails the test: nothing may ask the outside world."""
    real_connect, real_sendto = socket.socket.connect, socket.socket.sendto

    def guard(address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"a packet to {host} off loopback")

    def connect(self: socket.socket, address: Any) -> None:
        guard(address)
        real_connect(self, address)

    def sendto(self: socket.socket, data: bytes, *args: Any) -> int:
        guard(args[-1])
        return real_sendto(self, data, *args)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        try:
            guard((str(host), 0))  # an address: no lookup, checked as the connection is
        except ValueError:
            raise AssertionError(f"the system resolver asked for {host}") from None
        return real_getaddrinfo(host, *args, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="module")
def server() -> Iterator[DNSServer]:
    with DNSServer(zones()) as s:
        yield s


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyServer]:
    with PolicyServer(tmp_path_factory.mktemp("mta-sts"), POLICIES) as s:
        yield s


@pytest.fixture
def resolver(server: DNSServer, loopback_only: None) -> Any:
    server.clear_faults()
    return server.resolver(lifetime=1.0)


def _results(resolver: Any, domain: str, selectors: tuple[str, ...] = ()) -> dict[str, Any]:
    return {r.check: r for r in check_domain(domain, resolver, dkim_selectors=selectors)}


# (domain, check, status, words in the reason)
CASES = [
    ("good.test", "spf", "pass", "-all"),
    ("softfail.test", "spf", "warn", "~all"),
    ("neutral.test", "spf", "warn", "?all"),
    ("open.test", "spf", "fail", "+all"),
    ("lookups.test", "spf", "fail", "16/10 maximum DNS lookups"),
    ("badspf.test", "spf", "fail", "invalid SPF record"),
    ("bare.test", "spf", "fail", "no SPF record"),
    ("good.test", "dmarc", "pass", "alignment dkim strict, spf relaxed"),
    ("softfail.test", "dmarc", "warn", "p=none"),
    ("extrua.test", "dmarc", "warn", "no extrua.test._report._dmarc.reports.test record"),
    ("authrua.test", "dmarc", "pass", "rua agg@reports.test"),
    ("badspf.test", "dmarc", "fail", "invalid DMARC record"),
    ("bare.test", "dmarc", "fail", "no DMARC record"),
    ("good.test", "dkim:s2048", "pass", "RSA 2048 bits"),
    ("good.test", "dkim:s1024", "warn", "RSA 1024 bits"),
    ("good.test", "dkim:s512", "fail", "RSA 512 bits: under 1024"),
    ("good.test", "dkim:ed", "pass", "Ed25519"),
    ("good.test", "dkim:revoked", "fail", "revoked"),
    ("good.test", "dkim:testing", "warn", "t=y"),
    ("good.test", "dkim:absent", "fail", "no DKIM key at absent._domainkey.good.test"),
    ("good.test", "mx", "pass", "1 MX host"),
    ("authrua.test", "mx", "warn", "without an address: gone.authrua.test"),
    ("noaddr.test", "mx", "fail", "no MX host has an address"),
    ("softfail.test", "mx", "fail", "no MX records"),
    ("bare.test", "mx", "fail", "null MX"),
    ("good.test", "mta_sts", "pass", "policy file not fetched"),
    ("softfail.test", "mta_sts", "warn", "no MTA-STS record"),
    ("noaddr.test", "mta_sts", "fail", "invalid MTA-STS record"),
    ("good.test", "tlsrpt", "pass", "record valid"),
    ("softfail.test", "tlsrpt", "warn", "no TLS-RPT record"),
    ("noaddr.test", "tlsrpt", "fail", "ftp://x is not a valid"),
    ("good.test", "bimi", "pass", "logo and certificate"),
    ("neutral.test", "bimi", "warn", "no mark certificate"),
    ("open.test", "bimi", "warn", "p=none"),
    ("softfail.test", "bimi", "warn", "no BIMI record"),
]


def test_every_check_passes_warns_and_fails_with_its_reason(resolver: Any) -> None:
    """Each check gives pass, warn or fail on the zone built for it, and says why; the
    published record is kept as the value."""
    found: dict[str, dict[str, Any]] = {}
    for domain, check, status, words in CASES:
        if domain not in found:
            found[domain] = _results(resolver, domain, SELECTORS if domain == "good.test" else ())
        result = found[domain][check]
        assert (result.status, result.error) == (status, False), (domain, check, result)
        assert words in result.reason, (domain, check, result.reason)
    assert found["good.test"]["spf"].value == "v=spf1 ip4:192.0.2.10 -all"
    assert found["good.test"]["dkim:s2048"].value.startswith("v=DKIM1; k=rsa; p=MII")  # two strings joined
    assert list(found["good.test"]) == ["spf", "dmarc", *(f"dkim:{s}" for s in SELECTORS),
                                        "mx", "mta_sts", "tlsrpt", "bimi"]  # fmt: skip


def test_a_failed_lookup_fails_and_says_the_lookup_failed(server: DNSServer, resolver: Any) -> None:
    """SERVFAIL or silence for one record: that check fails as a lookup error, the others
    are answered."""
    server.servfail("_dmarc.flaky.test")
    server.drop("flaky.test")  # the SPF and MX queries time out
    results = _results(resolver, "flaky.test")
    for check in ("dmarc", "spf", "mx"):
        assert results[check].status == "fail" and results[check].error, results[check]
        assert results[check].reason.startswith("lookup failed"), results[check].reason
    assert results["tlsrpt"].status == "pass" and not results["tlsrpt"].error


# (domain, status, words in the reason) with the policy fetched
POLICY_CASES = [
    ("good.test", "pass", "policy fetched and covers the MX hosts (mode enforce, max_age 604800 s, mx mx.good.test)"),
    ("neutral.test", "warn", "mode testing"),
    ("open.test", "fail", "MX hosts the policy does not name: mx.open.test; senders enforcing it refuse"),
    ("flaky.test", "warn", "max_age under a day"),
    ("lookups.test", "fail", "cannot be fetched: https://mta-sts.lookups.test/.well-known/mta-sts.txt: HTTP 404"),
    ("badspf.test", "fail", "Content-Type text/html, not text/plain"),
    ("authrua.test", "fail", "invalid MTA-STS policy"),
    ("extrua.test", "fail", "cannot be fetched: mta-sts.extrua.test does not exist"),
    ("softfail.test", "warn", "no MTA-STS record"),  # no record: nothing fetched
]


def test_mta_sts_policy_fetched_over_https_from_the_host_our_resolver_names(
        resolver: Any, policies: PolicyServer, tmp_path: Path) -> None:
    """The policy comes from https://mta-sts.DOMAIN at the address the test DNS gives, over
    TLS verified against the test CA: enforce and covering the MX hosts passes; testing
    mode or a short max_age warns; MX hosts it does not name, a 404, another content type,
    a bad policy or no policy host fail; a certificate nobody vouches for fails too."""
    fetch = PolicyFetch(policies.port, policies.ca_file, 2.0)
    for domain, status, words in POLICY_CASES:
        result = _fetched(resolver, domain, fetch)
        assert (result.status, result.error) == (status, False), (domain, result)
        assert words in result.reason, (domain, result.reason)
    assert _fetched(resolver, "good.test", fetch).value.endswith("mx: mx.good.test\r\nmax_age: 604800")
    with PolicyServer(tmp_path / "other", {"good.test": POLICIES["good.test"]}) as other:
        other_ca = other.ca_file  # another CA, which the good.test certificate is not from
    untrusted = _fetched(resolver, "good.test", PolicyFetch(policies.port, other_ca, 2.0))
    assert untrusted.status == "fail" and "TLS to mta-sts.good.test (127.0.0.1)" in untrusted.reason
    assert "unable to get local issuer certificate" in untrusted.reason


def _fetched(resolver: Any, domain: str, fetch: PolicyFetch) -> Any:
    return next(r for r in check_domain(domain, resolver, mta_sts_policy=fetch) if r.check == "mta_sts")


def _lists() -> list[Blocklist]:
    return [
        Blocklist("zen", "zen.test", "ip", {"127.0.0.4": "XBL: a compromised host", "127.0.0.10": "PBL"},
                  {"127.255.255.254": "refused: query through a public or open resolver"}),
        Blocklist("bl", "bl.test", "ip", {"127.0.0.2": "listed"}),
        Blocklist("dbl", "dbl.test", "domain", {"127.0.1.2": "DBL: spam domain"}),
        Blocklist("down", "down.example", "ip"),
    ]


def test_dnsbl_listed_clean_refused_and_unknown(resolver: Any) -> None:
    """A listing carries its codes and their meanings; NXDOMAIN is clean; the refusal code
    for public resolvers, an answer outside 127/8 and a list that does not answer are
    errors, never listings."""
    results = {(r.target, r.list): r for r in check_dnsbl(
        resolver, _lists(), ips=[CLEAN_IP, LISTED_IP, REFUSED_IP, REWRITTEN_IP],
        domains=["good.test", "open.test"])}  # fmt: skip
    listed = results[(LISTED_IP, "zen")]
    assert (listed.listed, listed.code, listed.error) == (True, "127.0.0.4,127.0.0.10", None)
    assert listed.meaning == "XBL: a compromised host; PBL"
    assert results[(LISTED_IP, "bl")].listed
    clean = results[(CLEAN_IP, "zen")]
    assert (clean.listed, clean.code, clean.error) == (False, None, None)
    refused = results[(REFUSED_IP, "zen")]
    assert (refused.listed, refused.code) == (False, "127.255.255.254")
    assert "public or open resolver" in str(refused.error)
    rewritten = results[(REWRITTEN_IP, "bl")]
    assert not rewritten.listed and "outside 127.0.0.0/8" in str(rewritten.error)
    down = results[(CLEAN_IP, "down")]
    assert not down.listed and str(down.error).startswith("lookup failed")
    assert results[("open.test", "dbl")].listed and results[("open.test", "dbl")].meaning == "DBL: spam domain"
    assert not results[("good.test", "dbl")].listed
    assert ("good.test", "zen") not in results and (CLEAN_IP, "dbl") not in results  # by kind


def test_query_names_and_the_packaged_lists() -> None:
    """IPv4 octets and IPv6 nibbles reversed (RFC 5782); the packaged lists know Spamhaus's
    codes and its refusal answers, and an unknown list name is a clear error."""
    zen, dbl = load_lists(["spamhaus-zen", "spamhaus-dbl"])
    assert query_name("192.0.2.1", zen) == "1.2.0.192.zen.spamhaus.org"
    assert query_name("2001:db8::1", zen) == "1.0.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2.zen.spamhaus.org"
    assert query_name("Example.COM.", dbl) == "example.com.dbl.spamhaus.org"
    assert zen.codes["127.0.0.4"].startswith("XBL") and zen.codes["127.0.0.10"].startswith("PBL")
    assert set(zen.refused) == {"127.255.255.252", "127.255.255.254", "127.255.255.255"}
    names = [b.name for b in load_lists()]
    assert names == ["spamhaus-zen", "spamhaus-dbl", "barracuda", "spamcop", "uceprotect-l1"]
    from monitor.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown list nope"):
        load_lists(["nope"])


# -- the command, the job, serve ------------------------------------------------------


def _config(tmp_path: Path, server: DNSServer, policies: PolicyServer, *, domains: str = '["good.test"]',
            lists: str = '["zen", "bl", "dbl"]', ips: tuple[str, ...] = (CLEAN_IP,),
            extra: str = "") -> Path:  # fmt: skip
    (tmp_path / "lists.toml").write_text(BLOCKLISTS)
    config = tmp_path / "mailmon.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "m.db"}"\n{extra}'
        f'[dns]\ndomains = {domains}\ndkim_selectors = ["s2048"]\nsending_ips = {json.dumps(list(ips))}\n'
        f'nameservers = ["127.0.0.1"]\ndns_port = {server.port}\ntimeout_seconds = 1\n'
        f'blocklists_file = "{tmp_path / "lists.toml"}"\nlists = {lists}\n'
        f'mta_sts_port = {policies.port}\nmta_sts_ca_file = "{policies.ca_file}"\n'
    )
    return config


def test_cli_checks_prints_stores_and_exits_1_on_a_failure(tmp_path: Path, server: DNSServer, policies: PolicyServer) -> None:
    """`dns check` of the configured domain passes (exit 0) and stores each result; a
    failing domain exits 1 in text and in JSON, with the DNSBL results beside."""
    server.clear_faults()
    config = _config(tmp_path, server, policies)
    ok = mailmon("dns", "check", "--config", str(config))
    assert "pass  spf" in ok.stdout and "clean  192.0.2.10" in ok.stdout
    assert "Warning" not in ok.stderr, ok.stderr  # no library noise on the terminal
    assert "7 checks: 7 pass, 0 warn, 0 fail; DNSBL: 0 listed, 0 errors of 3 lookups" in ok.stdout
    bad = mailmon("dns", "check", "open.test", "--json", "--config", str(config), check=False)
    assert bad.returncode == 1, bad.stderr
    out = json.loads(bad.stdout)
    assert out["failed"] is True
    spf = next(c for c in out["checks"] if c["check"] == "spf")
    assert (spf["domain"], spf["status"], spf["value"]) == ("open.test", "fail", "v=spf1 +all")
    dbl = next(r for r in out["dnsbl"] if r["list"] == "dbl")
    assert (dbl["target"], dbl["listed"], dbl["code"]) == ("open.test", True, "127.0.1.2")
    text = mailmon("dns", "check", "open.test", "--config", str(config), check=False)
    assert text.returncode == 1 and "fail  spf          +all" in text.stdout
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        checks = [r for r in store.records(DnsCheck.kind) if isinstance(r, DnsCheck)]
        listings = store.records(DnsblListing.kind)
    assert {c.domain for c in checks} == {"good.test", "open.test"} and len(checks) == 7 * 3
    assert len(listings) == 3 + 3 + 3


def test_cli_listed_ip_exits_1_and_regression_is_shown(tmp_path: Path, server: DNSServer, policies: PolicyServer) -> None:
    """A listed sending IP fails the run; a check worse than before it last changed is
    reported as regressed, and stays so on the next run until fixed."""
    server.clear_faults()
    config = _config(tmp_path, server, policies, ips=(LISTED_IP,))
    listed = mailmon("dns", "check", "--json", "--config", str(config), check=False)
    assert listed.returncode == 1
    assert [r["list"] for r in json.loads(listed.stdout)["dnsbl"] if r["listed"]] == ["zen", "bl"]
    config = _config(tmp_path, server, policies)
    assert json.loads(mailmon("dns", "check", "--json", "--config", str(config)).stdout)["regressed"] == []
    good = zones()["good.test."]
    try:
        server.set_zone("good.test.", good.replace("ip4:192.0.2.10 -all", "ip4:192.0.2.10 ~all"))
        for _ in range(2):
            out = json.loads(mailmon("dns", "check", "--json", "--config", str(config)).stdout)
            assert out["regressed"] == [{"domain": "good.test", "check": "spf", "status": "warn"}]
        assert "warn  spf          ~all" in mailmon("dns", "check", "--config", str(config)).stdout
    finally:
        server.set_zone("good.test.", good)
    assert json.loads(mailmon("dns", "check", "--json", "--config", str(config)).stdout)["regressed"] == []


def _sample(metrics: Metrics, line: str) -> bool:
    return line in generate_latest(metrics.registry).decode()


def test_job_stores_records_and_sets_the_gauges(tmp_path: Path, server: DNSServer, policies: PolicyServer,
                                               loopback_only: None) -> None:
    """The dns_check job stores a run's checks and listings, sets mailmon_dns_check,
    mailmon_dnsbl_listed and mailmon_dns_check_regressed, and counts failed lookups while
    keeping the last known value."""
    server.clear_faults()
    config = load_config(_config(tmp_path, server, policies, ips=(CLEAN_IP, LISTED_IP, REFUSED_IP),
                                 lists='["zen", "bl"]'))  # fmt: skip
    metrics = Metrics()
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        job = builtin.dns_check(config, Driver(Pipeline(store, metrics=metrics), metrics))
        job()
        assert len(store.records(DnsCheck.kind)) == 7 and len(store.records(DnsblListing.kind)) == 6
        assert _sample(metrics, 'mailmon_dns_check{check="spf",domain="good.test"} 1.0')
        assert _sample(metrics, 'mailmon_dns_check{check="dkim:s2048",domain="good.test"} 1.0')
        assert _sample(metrics, 'mailmon_dns_check_regressed{check="spf",domain="good.test"} 0.0')
        assert _sample(metrics, f'mailmon_dnsbl_listed{{list="zen.test",target="{LISTED_IP}"}} 1.0')
        assert _sample(metrics, f'mailmon_dnsbl_listed{{list="zen.test",target="{CLEAN_IP}"}} 0.0')
        assert not _sample(metrics, f'mailmon_dnsbl_listed{{list="zen.test",target="{REFUSED_IP}"}}')  # an error, no result
        assert _sample(metrics, 'mailmon_dns_lookup_errors_total{check="dnsbl"} 1.0')
        good = zones()["good.test."]
        try:
            server.set_zone("good.test.", good.replace("p=reject; adkim", "p=none; adkim"))
            job()
            assert _sample(metrics, 'mailmon_dns_check{check="dmarc",domain="good.test"} 0.5')
            assert _sample(metrics, 'mailmon_dns_check_regressed{check="dmarc",domain="good.test"} 1.0')
            server.servfail("_dmarc.good.test")
            job()  # unknown: the gauges keep the last verdict, the error is counted
            assert _sample(metrics, 'mailmon_dns_check{check="dmarc",domain="good.test"} 0.5')
            assert _sample(metrics, 'mailmon_dns_check_regressed{check="dmarc",domain="good.test"} 1.0')
            assert _sample(metrics, 'mailmon_dns_lookup_errors_total{check="dmarc"} 1.0')
        finally:
            server.clear_faults()
            server.set_zone("good.test.", good)
        job()
        assert _sample(metrics, 'mailmon_dns_check_regressed{check="dmarc",domain="good.test"} 0.0')
        assert len(store.records(DnsCheck.kind)) == 4 * 7


def test_serve_runs_the_job_at_start_and_exports_the_gauges(tmp_path: Path, server: DNSServer,
                                                           policies: PolicyServer) -> None:
    """`mailmon serve` runs dns_check as it starts: /metrics shows the posture and DNSBL
    gauges and `mailmon jobs` lists the job hourly."""
    server.clear_faults()
    port = _free_port()
    config = _config(tmp_path, server, policies, ips=(CLEAN_IP, LISTED_IP),
                     extra=f"[service]\nlisten_port = {port}\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    want = f'mailmon_dnsbl_listed{{list="bl.test",target="{LISTED_IP}"}} 1.0'
    text = ""
    try:
        deadline = time.monotonic() + 30
        while want not in text and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            time.sleep(0.2)
        assert want in text
        assert 'mailmon_dns_check{check="bimi",domain="good.test"} 1.0' in text
        assert 'mailmon_dns_check_regressed{check="mx",domain="good.test"} 0.0' in text
        jobs = json.loads(mailmon("jobs", "--json", "--config", str(config)).stdout)
        row = next(r for r in jobs if r["job"] == "dns_check")
        assert row["trigger"] == "every 3600 s" and row["last_success"]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0]
    assert proc.returncode == 0, out


def test_settings_default_from_the_rest_of_the_config(tmp_path: Path) -> None:
    """[dns] domains default to [dmarc] domains and sending IPs to [metrics] sending_ips;
    the job is on when there is something to check, off otherwise; bad values are errors."""
    from monitor.dnscheck.run import DnsSettings
    from monitor.errors import ConfigError
    from monitor.jobs.catalog import effective

    path = tmp_path / "mailmon.toml"
    path.write_text('[dmarc]\ndomains = ["Example.COM."]\n[metrics]\nsending_ips = ["192.0.2.1", "other-name"]\n')
    config = load_config(path)
    settings = DnsSettings.of(config)
    assert (settings.domains, settings.dnsbl_domains, settings.sending_ips) == (
        ("example.com",), ("example.com",), ("192.0.2.1",))
    assert [b.zone for b in settings.lists][:2] == ["zen.spamhaus.org", "dbl.spamhaus.org"]
    assert not effective(config, "dns_check").enabled  # [dns] turns it on, not [dmarc] alone
    path.write_text('[dns]\ndomains = ["example.com"]\n')
    assert effective(load_config(path), "dns_check").enabled
    assert effective(load_config(path), "dns_check").interval_seconds == 3600
    path.write_text('[dns]\nsending_ips = ["192.0.2.1"]\n')
    assert effective(load_config(path), "dns_check").enabled
    path.write_text("")
    assert not effective(load_config(path), "dns_check").enabled
    for table, says in [('[dns]\nsending_ips = ["300.1.2.3"]\n', "dns.sending_ips"),
                        ('[dns]\nresolver = "x"\n', "dns.resolver: Extra inputs")]:
        path.write_text(table)
        with pytest.raises(ConfigError, match=says):
            load_config(path)
    path.write_text('[dns]\ndomains = ["example.com"]\nlists = ["spamhaus-zen", "nope"]\n')
    with pytest.raises(ConfigError, match="unknown list nope"):
        DnsSettings.of(load_config(path))
    path.write_text("")
    nothing = mailmon("dns", "check", "--config", str(path), "--db", f"sqlite:///{tmp_path / 'm.db'}", check=False)
    assert nothing.returncode == 2 and "no domain given and none configured" in nothing.stderr


def test_a_serve_without_dns_checks_does_not_load_them() -> None:
    """Without [dns] the job is not scheduled and checkdmarc is not imported at start-up."""
    import subprocess
    import sys

    code = ("import sys; from monitor.config import Config; from monitor.jobs import builtin; "
            "builtin.dns_check(Config(), None)(); print('checkdmarc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
