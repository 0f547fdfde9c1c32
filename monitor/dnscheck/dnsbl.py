"""DNS blocklist lookups of our sending IPs and domains, with the lists' return codes as data.

    lists = load_lists(names=["spamhaus-zen", "spamhaus-dbl"])
    for result in check_dnsbl(resolver, lists, ips=["192.0.2.10"], domains=["example.com"]):
        print(result.target, result.list, result.listed, result.meaning, result.error)

A list is asked ``A`` for the IP's octets reversed (IPv6: its nibbles, RFC 5782 §2.4) or
the domain, then its zone.  NXDOMAIN: not listed.  An answer the list documents as a
code is a listing with its meaning; one it documents as a refusal (Spamhaus answers
``127.255.255.254`` to public resolvers) is an error, as is any answer outside
``127.0.0.0/8`` (RFC 5782 §2.1: a resolver rewriting NXDOMAIN) and a timeout.
The lists live in ``monitor/data/blocklists.toml``; ``[dns] blocklists_file`` replaces it.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import dns.exception
import dns.resolver

from monitor.errors import ConfigError

__all__ = ["DEFAULT_LISTS", "Blocklist", "DnsblResult", "check_dnsbl", "load_lists", "query_name"]

#: The lists asked unless ``[dns] lists`` says otherwise.
DEFAULT_LISTS = ("spamhaus-zen", "spamhaus-dbl", "barracuda", "spamcop", "uceprotect-l1")
_PACKAGED = "data/blocklists.toml"


@dataclass(frozen=True)
class Blocklist:
    """One DNSBL: its name (the ``list`` label), zone, what it lists and its answers."""

    name: str
    zone: str
    kind: Literal["ip", "domain"]
    codes: Mapping[str, str] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DnsblResult:
    """What one list said about one target."""

    target: str
    list: str
    zone: str
    listed: bool
    code: str | None = None
    meaning: str | None = None
    error: str | None = None


def load_lists(names: Sequence[str] = DEFAULT_LISTS, path: str | None = None) -> list[Blocklist]:
    """The lists ``names`` from ``path`` (default: the packaged file), in that order."""
    try:
        if path is None:
            text = resources.files("monitor").joinpath(_PACKAGED).read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        raw = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"[dns] blocklists_file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path or _PACKAGED}: invalid TOML: {exc}") from None
    known: dict[str, Blocklist] = {}
    for entry in raw.get("list", []):
        try:
            item = Blocklist(
                name=str(entry["name"]), zone=str(entry["zone"]).strip(".").lower(),
                kind=entry["kind"], codes=dict(entry.get("codes", {})),
                refused=dict(entry.get("refused", {})),
            )  # fmt: skip
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{path or _PACKAGED}: a [[list]] lacks {exc}") from None
        if item.kind not in ("ip", "domain"):
            raise ConfigError(f"{path or _PACKAGED}: list {item.name}: kind must be ip or domain")
        known[item.name] = item
    missing = [n for n in names if n not in known]
    if missing:
        raise ConfigError(f"[dns] lists: unknown list {', '.join(missing)}; "
                          f"known: {', '.join(sorted(known))}")  # fmt: skip
    return [known[n] for n in names]


def query_name(target: str, blocklist: Blocklist) -> str:
    """The name to ask: reversed IPv4 octets / IPv6 nibbles (RFC 5782 §2.1, §2.4), or the domain."""
    if blocklist.kind == "domain":
        return f"{target.strip('.').lower()}.{blocklist.zone}"
    address = ipaddress.ip_address(target)
    reverse = address.reverse_pointer  # 4.3.2.1.in-addr.arpa / nibbles.ip6.arpa
    return reverse.rsplit(".", 2)[0] + "." + blocklist.zone


def check_dnsbl(
    resolver: dns.resolver.Resolver,
    lists: Iterable[Blocklist],
    *,
    ips: Sequence[str] = (),
    domains: Sequence[str] = (),
) -> Iterator[DnsblResult]:
    """Ask each list about each target of its kind."""
    for blocklist in lists:
        for target in ips if blocklist.kind == "ip" else domains:
            yield _lookup(resolver, blocklist, target)


def _lookup(resolver: dns.resolver.Resolver, blocklist: Blocklist, target: str) -> DnsblResult:
    def result(**kw: object) -> DnsblResult:
        return DnsblResult(target, blocklist.name, blocklist.zone, **kw)  # type: ignore[arg-type]

    try:
        name = query_name(target, blocklist)
    except ValueError:
        return result(listed=False, error=f"{target} is not an IP address")
    try:
        answer = resolver.resolve(name, "A")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return result(listed=False)
    except dns.exception.DNSException as exc:
        return result(listed=False, error=f"lookup failed: {exc}")
    codes = sorted({r.address for r in answer}, key=ipaddress.ip_address)
    refused = [c for c in codes if c in blocklist.refused]
    if refused:
        return result(listed=False, code=refused[0], error=blocklist.refused[refused[0]])
    outside = [c for c in codes if ipaddress.ip_address(c) not in _LOOPBACK]
    if outside:
        return result(listed=False, code=outside[0], error=f"answer {outside[0]} is outside "
                      "127.0.0.0/8: the resolver rewrites NXDOMAIN, the result is unknown")
    meanings = [blocklist.codes.get(c, f"listed (return code {c} not documented)") for c in codes]
    return result(listed=True, code=",".join(codes), meaning="; ".join(meanings))


_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
