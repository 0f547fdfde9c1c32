"""Posture checks of one of our domains: each a pass, warn or fail with its reason.

    resolver = make_resolver(["127.0.0.1"], port=5353)
    for result in check_domain("example.com", resolver, dkim_selectors=["s1"]):
        print(result.check, result.status, result.reason)

SPF, DMARC, MTA-STS, TLS-RPT and BIMI records are read and parsed by checkdmarc, one
function at a time with our resolver (see ``lookup``); DKIM keys and MX hosts are read
with dnspython.  What each status means is in docs/dns.md.  A check whose query got no
answer (timeout, SERVFAIL, REFUSED) fails with a reason that starts with
``lookup failed``: the posture is unknown, so it is counted as a lookup error too.
"""

from __future__ import annotations

import base64
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():  # dnspython's DNSSEC module, which checkdmarc imports, names DSA
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import checkdmarc
    import checkdmarc.utils
import dns.exception
import dns.resolver
from checkdmarc.bimi import BIMIError, BIMIRecordNotFound, query_bimi_record
from checkdmarc.dmarc import UnverifiedDMARCURIDestination, verify_dmarc_report_destination
from checkdmarc.mta_sts import (
    MTASTSError,
    MTASTSRecordNotFound,
    mx_in_mta_sts_patterns,
    parse_mta_sts_policy,
    parse_mta_sts_record,
    query_mta_sts_record,
)
from checkdmarc.smtp_tls_reporting import (
    SMTPTLSReportingError,
    SMTPTLSReportingRecordNotFound,
    parse_smtp_tls_reporting_record,
    query_smtp_tls_reporting_record,
)
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from monitor.dnscheck.lookup import LOOKUP_FAILED, LookupFailed, txt_records
from monitor.dnscheck.mtasts import PolicyUnavailable, fetch_policy
from monitor.dnscheck.records import STATUSES

__all__ = ["CHECKS", "STATUSES", "CheckResult", "PolicyFetch", "check_domain",
           "forget_cached_answers"]  # fmt: skip

log = logging.getLogger(__name__)

#: The checks of a domain (DKIM: one per configured selector, ``dkim:SELECTOR``).
CHECKS = ("spf", "dmarc", "dkim", "mx", "mta_sts", "tlsrpt", "bimi")
#: RFC 7208 §4.6.4: more DNS-querying terms than this is a permanent error.
SPF_MAX_LOOKUPS = 10
SPF_MAX_VOID_LOOKUPS = 2

_FAILED = re.compile(r"nameservers failed|timed out|timeout|SERVFAIL|REFUSED|"
                     r"no nameservers|lifetime expired", re.IGNORECASE)  # fmt: skip


@dataclass(frozen=True)
class CheckResult:
    """One check of one domain."""

    domain: str
    check: str
    status: str  # pass, warn, fail
    reason: str
    value: str | None = None  # the record(s) as published
    error: bool = False  # the lookup failed: the status says nothing about the records

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "check": self.check, "status": self.status,
                "reason": self.reason, "value": self.value, "lookup_error": self.error}  # fmt: skip


@dataclass(frozen=True)
class PolicyFetch:
    """How MTA-STS policies are fetched (``port`` and ``cafile``: for a test's server)."""

    port: int = 443
    cafile: str | None = None
    timeout: float = 5.0


def check_domain(
    domain: str,
    resolver: dns.resolver.Resolver,
    *,
    dkim_selectors: Sequence[str] = (),
    bimi_selector: str = "default",
    mta_sts_policy: PolicyFetch | None = None,
) -> Iterator[CheckResult]:
    """Every posture check of ``domain`` (one result per check, DKIM one per selector);
    the MTA-STS policy is fetched only with ``mta_sts_policy``."""
    domain = domain.strip(".").lower()
    dmarc_policy: list[str] = []
    mx_hosts: list[str] = []
    steps: list[tuple[str, Callable[[], CheckResult]]] = [
        ("spf", lambda: _spf(domain, resolver)),
        ("dmarc", lambda: _dmarc(domain, resolver, dmarc_policy)),
        *((f"dkim:{s}", lambda s=s: _dkim(domain, s, resolver)) for s in dkim_selectors),
        ("mx", lambda: _mx(domain, resolver, mx_hosts)),
        ("mta_sts", lambda: _mta_sts(domain, resolver, mta_sts_policy, mx_hosts)),
        ("tlsrpt", lambda: _tlsrpt(domain, resolver)),
        ("bimi", lambda: _bimi(domain, bimi_selector, resolver, dmarc_policy)),
    ]
    for check, step in steps:
        try:
            yield step()
        except LookupFailed as exc:
            yield _lookup_failed(domain, check, str(exc))
        except dns.exception.DNSException as exc:
            yield _lookup_failed(domain, check, str(exc) or type(exc).__name__)
        except Exception as exc:  # a library bug on odd records must not stop the others
            log.exception("%s: the %s check failed", domain, check)
            yield CheckResult(domain, check, "fail", f"check failed: {type(exc).__name__}: {exc}")


def forget_cached_answers() -> None:
    """Empty checkdmarc's process-wide answer cache: each run sees DNS as it is now (the
    cache is kept for its max age, whatever the records' TTLs, and keyed without the
    resolver asked)."""
    checkdmarc.utils.DNS_CACHE.clear()


def _lookup_failed(domain: str, check: str, detail: str) -> CheckResult:
    return CheckResult(domain, check, "fail", f"{LOOKUP_FAILED}: {detail}", error=True)


def _raise_if_failed(message: str) -> None:
    """checkdmarc says "not found" for a failed query too: tell the two apart."""
    if _FAILED.search(message):
        raise LookupFailed(message)


# -- SPF (RFC 7208) ---------------------------------------------------------------


def _spf(domain: str, resolver: dns.resolver.Resolver) -> CheckResult:
    r: dict[str, Any] = checkdmarc.check_spf(domain, resolver=resolver)
    record = r.get("record")
    if not r.get("valid"):
        error = str(r.get("error", "invalid"))
        _raise_if_failed(error)
        if record is None:
            return CheckResult(domain, "spf", "fail", f"no SPF record: {error}")
        return CheckResult(domain, "spf", "fail", f"invalid SPF record: {error}", record)
    lookups, void = r.get("dns_lookups") or 0, r.get("void_dns_lookups") or 0
    if lookups > SPF_MAX_LOOKUPS:
        return CheckResult(domain, "spf", "fail", f"{lookups} DNS lookups, more than the "
                           f"{SPF_MAX_LOOKUPS} RFC 7208 §4.6.4 allows: receivers "
                           "return permerror", record)  # fmt: skip
    if void > SPF_MAX_VOID_LOOKUPS:
        return CheckResult(domain, "spf", "fail", f"{void} void lookups, more than the "
                           f"{SPF_MAX_VOID_LOOKUPS} RFC 7208 §4.6.4 allows", record)  # fmt: skip
    qualifier = (r.get("parsed") or {}).get("all")
    counted = f"{lookups} DNS lookups of {SPF_MAX_LOOKUPS}"
    if qualifier == "pass":
        return CheckResult(domain, "spf", "fail", "+all: every host on the internet may "
                           "send as this domain", record)  # fmt: skip
    if qualifier in ("softfail", "neutral"):
        mark = "~all" if qualifier == "softfail" else "?all"
        return CheckResult(domain, "spf", "warn", f"{mark}: mail from other hosts is not "
                           f"refused by SPF (-all is stricter); {counted}", record)  # fmt: skip
    if qualifier is None and not (r.get("parsed") or {}).get("redirect"):
        return CheckResult(domain, "spf", "warn", f"no all mechanism: others default to "
                           f"neutral; {counted}", record)  # fmt: skip
    return CheckResult(domain, "spf", "pass", f"valid, -all; {counted}", record)


# -- DMARC (RFC 7489) --------------------------------------------------------------


def _tag(tags: dict[str, Any], name: str) -> Any:
    value = tags.get(name)
    return value.get("value") if isinstance(value, dict) else None


def _dmarc(domain: str, resolver: dns.resolver.Resolver, policy_out: list[str]) -> CheckResult:
    r: dict[str, Any] = dict(checkdmarc.check_dmarc(domain, resolver=resolver))
    record = r.get("record")
    if not r.get("valid"):
        error = str(r.get("error", "invalid"))
        _raise_if_failed(error)
        if record is None:
            return CheckResult(domain, "dmarc", "fail", f"no DMARC record: {error}")
        return CheckResult(domain, "dmarc", "fail", f"invalid DMARC record: {error}", record)
    tags = r.get("tags") or {}
    p, sp = _tag(tags, "p") or "none", _tag(tags, "sp") or "none"
    adkim, aspf = _tag(tags, "adkim") or "r", _tag(tags, "aspf") or "r"
    pct = _tag(tags, "pct")
    policy_out.append(p)
    modes = (f"alignment dkim {'strict' if adkim == 's' else 'relaxed'}, "
             f"spf {'strict' if aspf == 's' else 'relaxed'}")  # fmt: skip
    problems: list[str] = []
    if p == "none":
        problems.append("p=none: monitoring only, failing mail is delivered as usual")
    elif sp == "none":
        problems.append("sp=none: subdomains are not protected")
    if pct is not None and str(pct) != "100" and p != "none":
        problems.append(f"pct={pct}: the policy applies to part of the failing mail only")
    rua = [u.get("address", "") for u in (_tag(tags, "rua") or []) if isinstance(u, dict)]
    if not rua:
        problems.append("no rua: no aggregate reports are sent")
    problems += _unauthorised_rua(domain, rua, resolver)
    reason = f"p={p} sp={sp}, {modes}; rua {', '.join(rua) or '-'}"
    if problems:
        return CheckResult(domain, "dmarc", "warn", "; ".join(problems) + f" ({reason})", record)
    return CheckResult(domain, "dmarc", "pass", reason, record)


def _unauthorised_rua(domain: str, rua: Sequence[str], resolver: dns.resolver.Resolver
                      ) -> list[str]:  # fmt: skip
    """rua addresses in another organisational domain that did not authorise the reports:
    receivers send them nothing (RFC 7489 §7.1)."""
    out = []
    for address in rua:
        target = address.rpartition("@")[2].lower()
        if not target or target == domain:
            continue
        try:
            verify_dmarc_report_destination(domain, target, resolver=resolver)
        except UnverifiedDMARCURIDestination:
            out.append(f"rua {address}: {target} has no {domain}._report._dmarc.{target} "
                       "record authorising the reports (RFC 7489 §7.1)")  # fmt: skip
    return out


# -- DKIM (RFC 6376) --------------------------------------------------------------


def _dkim(domain: str, selector: str, resolver: dns.resolver.Resolver) -> CheckResult:
    check, name = f"dkim:{selector}", f"{selector}._domainkey.{domain}"
    records = [t for t in txt_records(resolver, name) if "p=" in t or t.startswith("v=DKIM1")]
    if not records:
        return CheckResult(domain, check, "fail", f"no DKIM key at {name}")
    record = records[0]
    tags = dict(_split_tag(part) for part in record.split(";") if "=" in part)
    key_type, key = tags.get("k", "rsa").lower(), re.sub(r"\s+", "", tags.get("p", ""))
    if not key:
        return CheckResult(domain, check, "fail", "the key is revoked (empty p=)", record)
    testing = "y" in tags.get("t", "").split(":")
    if key_type == "ed25519":
        status, reason = "pass", "Ed25519 key (RFC 8463)"
    elif key_type != "rsa":
        return CheckResult(domain, check, "fail", f"unknown key type k={key_type}", record)
    else:
        try:
            public = load_der_public_key(base64.b64decode(key, validate=True))
        except (ValueError, TypeError) as exc:
            return CheckResult(domain, check, "fail", f"the key does not decode: {exc}", record)
        if not isinstance(public, rsa.RSAPublicKey):
            return CheckResult(domain, check, "fail", "k=rsa but the key is not RSA", record)
        bits = public.key_size
        if bits < 1024:  # RFC 8301 §3.2: verifiers must not accept them
            return CheckResult(domain, check, "fail", f"RSA {bits} bits: under 1024, "
                               "verifiers ignore the signature (RFC 8301)", record)  # fmt: skip
        if bits < 2048:
            status, reason = "warn", f"RSA {bits} bits: 2048 is recommended (RFC 8301 §3.2)"
        else:
            status, reason = "pass", f"RSA {bits} bits"
    if len(records) > 1:
        status, reason = "warn", f"{len(records)} key records at {name}; {reason}"
    if testing and status == "pass":
        status, reason = "warn", f"t=y (testing mode): verifiers may ignore it; {reason}"
    return CheckResult(domain, check, status, reason, record)


def _split_tag(part: str) -> tuple[str, str]:
    key, _, value = part.partition("=")
    return key.strip().lower(), value.strip()


# -- MX ----------------------------------------------------------------------------


def _mx(domain: str, resolver: dns.resolver.Resolver, hosts_out: list[str]) -> CheckResult:
    try:
        answer = resolver.resolve(domain, "MX", raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return CheckResult(domain, "mx", "fail", f"{domain} does not exist (NXDOMAIN)")
    if answer.rrset is None:
        return CheckResult(domain, "mx", "fail", "no MX records: replies and bounces to this "
                           "domain have nowhere to go")  # fmt: skip
    hosts = sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer.rrset)
    value = ", ".join(f"{pref} {host or '.'}" for pref, host in hosts)
    hosts_out.extend(host for _, host in hosts if host not in ("", "."))
    if any(host in ("", ".") for _, host in hosts):  # RFC 7505 null MX
        return CheckResult(domain, "mx", "fail", "null MX (RFC 7505): the domain accepts no "
                           "mail, and receivers may refuse mail from it", value)  # fmt: skip
    unresolved = [host for _, host in hosts if not _has_address(host, resolver)]
    if len(unresolved) == len(hosts):
        return CheckResult(domain, "mx", "fail", "no MX host has an address: "
                           + ", ".join(unresolved), value)  # fmt: skip
    if unresolved:
        return CheckResult(domain, "mx", "warn", "MX hosts without an address: "
                           + ", ".join(unresolved), value)  # fmt: skip
    return CheckResult(domain, "mx", "pass", f"{len(hosts)} MX host(s) with addresses", value)


def _has_address(host: str, resolver: dns.resolver.Resolver) -> bool:
    for rdtype in ("A", "AAAA"):
        try:
            if resolver.resolve(host, rdtype, raise_on_no_answer=False).rrset is not None:
                return True
        except dns.resolver.NXDOMAIN:
            return False
    return False


# -- MTA-STS (RFC 8461), TLS-RPT (RFC 8460), BIMI ----------------------------------


def _mta_sts(domain: str, resolver: dns.resolver.Resolver, fetch: PolicyFetch | None,
             mx_hosts: Sequence[str]) -> CheckResult:  # fmt: skip
    try:
        r = query_mta_sts_record(domain, resolver=resolver)
    except MTASTSRecordNotFound as exc:
        _raise_if_failed(str(exc))
        return CheckResult(domain, "mta_sts", "warn", "no MTA-STS record: senders may "
                           "deliver to us without TLS (RFC 8461)")  # fmt: skip
    except MTASTSError as exc:
        _raise_if_failed(str(exc))
        return CheckResult(domain, "mta_sts", "fail", f"invalid MTA-STS record: {exc}")
    record = r["record"]
    try:
        parse_mta_sts_record(record)
    except MTASTSError as exc:
        return CheckResult(domain, "mta_sts", "fail", f"invalid MTA-STS record: {exc}", record)
    if fetch is None:
        return CheckResult(domain, "mta_sts", "pass", "record valid (policy file not fetched)",
                           record)  # fmt: skip
    try:
        text = fetch_policy(domain, resolver, port=fetch.port, cafile=fetch.cafile,
                            timeout=fetch.timeout)  # fmt: skip
    except PolicyUnavailable as exc:
        return CheckResult(domain, "mta_sts", "fail", f"the record announces a policy that "
                           f"cannot be fetched: {exc}", record)  # fmt: skip
    value = f"{record}\n{text.strip()}"
    try:
        policy = parse_mta_sts_policy(text)["policy"]
    except MTASTSError as exc:
        return CheckResult(domain, "mta_sts", "fail", f"invalid MTA-STS policy: {exc}", value)
    mode, max_age = policy.get("mode"), int(policy.get("max_age") or 0)
    patterns = [str(p) for p in policy.get("mx") or []]
    uncovered = [h for h in mx_hosts if not mx_in_mta_sts_patterns(h, patterns)]
    summary = f"mode {mode}, max_age {max_age} s, mx {', '.join(patterns) or '-'}"
    if uncovered and mode == "enforce":
        return CheckResult(domain, "mta_sts", "fail", f"MX hosts the policy does not name: "
                           f"{', '.join(uncovered)}; senders enforcing it refuse to deliver "
                           f"there ({summary})", value)  # fmt: skip
    if uncovered:
        return CheckResult(domain, "mta_sts", "warn", f"MX hosts the policy does not name: "
                           f"{', '.join(uncovered)} ({summary})", value)  # fmt: skip
    if mode != "enforce":
        return CheckResult(domain, "mta_sts", "warn", f"mode {mode}: senders report TLS "
                           f"failures but deliver anyway ({summary})", value)  # fmt: skip
    if max_age < 86400:
        return CheckResult(domain, "mta_sts", "warn", f"max_age under a day: senders "
                           f"refetch often, a short outage drops the policy ({summary})",
                           value)  # fmt: skip
    return CheckResult(domain, "mta_sts", "pass", f"policy fetched and covers the MX hosts "
                       f"({summary})", value)  # fmt: skip


def _tlsrpt(domain: str, resolver: dns.resolver.Resolver) -> CheckResult:
    try:
        r = query_smtp_tls_reporting_record(domain, resolver=resolver)
    except SMTPTLSReportingRecordNotFound as exc:
        _raise_if_failed(str(exc))
        return CheckResult(domain, "tlsrpt", "warn", "no TLS-RPT record: senders send no SMTP "
                           "TLS reports (RFC 8460)")  # fmt: skip
    except SMTPTLSReportingError as exc:
        _raise_if_failed(str(exc))
        return CheckResult(domain, "tlsrpt", "fail", f"invalid TLS-RPT record: {exc}")
    record = r["record"]
    try:
        parse_smtp_tls_reporting_record(record)
    except SMTPTLSReportingError as exc:
        return CheckResult(domain, "tlsrpt", "fail", f"invalid TLS-RPT record: {exc}", record)
    if "rua=" not in record.replace(" ", ""):
        return CheckResult(domain, "tlsrpt", "fail", "TLS-RPT record without rua", record)
    return CheckResult(domain, "tlsrpt", "pass", "record valid", record)


def _bimi(domain: str, selector: str, resolver: dns.resolver.Resolver,
          dmarc_policy: Sequence[str]) -> CheckResult:  # fmt: skip
    # The DNS record only: the logo (l=) and mark certificate (a=) are not downloaded.
    try:
        r = query_bimi_record(domain, selector=selector, resolver=resolver)
    except BIMIRecordNotFound as exc:
        _raise_if_failed(str(exc))
        return CheckResult(domain, "bimi", "warn", f"no BIMI record at {selector}._bimi."
                           f"{domain} (optional: a logo in supporting inboxes)")  # fmt: skip
    except BIMIError as exc:
        _raise_if_failed(str(exc))
        return CheckResult(domain, "bimi", "fail", f"invalid BIMI record: {exc}")
    record = r["record"]
    tags = dict(_split_tag(part) for part in record.split(";") if "=" in part)
    if not tags.get("l"):
        return CheckResult(domain, "bimi", "fail", "BIMI record without a logo (l=)", record)
    if dmarc_policy and dmarc_policy[0] == "none":
        return CheckResult(domain, "bimi", "warn", "BIMI needs DMARC p=quarantine or reject; "
                           "inboxes ignore it under p=none", record)  # fmt: skip
    if not tags.get("a"):
        return CheckResult(domain, "bimi", "warn", "no mark certificate (a=): Gmail and Apple "
                           "show no logo without one", record)  # fmt: skip
    return CheckResult(domain, "bimi", "pass", "record with logo and certificate (not "
                       "downloaded)", record)  # fmt: skip
