"""Fetch a domain's MTA-STS policy (RFC 8461 §3.3) from the host our resolver names.

    text = fetch_policy("example.com", resolver)      # https://mta-sts.example.com/.well-known/mta-sts.txt

The policy host's address comes from the configured resolver, not the system's, and the
connection is made to it with TLS to the name ``mta-sts.DOMAIN`` (SNI and certificate),
as a sending MTA does: HTTP 200 only (no redirects, §3.3), ``text/plain``, at most 64 KiB.
``port`` and ``cafile`` exist so a test can point it at a server of its own.
"""

from __future__ import annotations

import http.client
import socket
import ssl

import dns.exception
import dns.resolver

from monitor.dnscheck.lookup import LookupFailed

__all__ = ["MAX_POLICY_BYTES", "PolicyUnavailable", "fetch_policy"]

#: Larger answers are refused (RFC 8461 §3.3 lets senders cap it; 64 KiB is ample).
MAX_POLICY_BYTES = 64 << 10
_PATH = "/.well-known/mta-sts.txt"


class PolicyUnavailable(Exception):
    """The policy could not be fetched: the reason senders would see."""


def fetch_policy(domain: str, resolver: dns.resolver.Resolver, *, port: int = 443,
                 cafile: str | None = None, timeout: float = 5.0) -> str:  # fmt: skip
    """The policy text; :class:`PolicyUnavailable` (or :class:`LookupFailed`) otherwise."""
    host = f"mta-sts.{domain}"
    addresses = _addresses(host, resolver)
    if not addresses:
        raise PolicyUnavailable(f"{host} has no address")
    context = ssl.create_default_context(cafile=cafile)
    problem = ""
    for address in addresses[:2]:
        try:
            return _get(address, host, port, context, timeout)
        except ssl.SSLError as exc:
            detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
            problem = f"TLS to {host} ({address}): {detail}"
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{host} ({address}:{port}): {exc}"
    raise PolicyUnavailable(problem)


def _addresses(host: str, resolver: dns.resolver.Resolver) -> list[str]:
    out: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(host, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise PolicyUnavailable(f"{host} does not exist") from None
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"{host} {rdtype}: {exc}") from None
        if answer.rrset is not None:
            out += [r.address for r in answer.rrset]
    return out


def _get(address: str, host: str, port: int, context: ssl.SSLContext, timeout: float) -> str:
    raw = socket.create_connection((address, port), timeout=timeout)
    try:
        tls = context.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = tls  # connected to the address our resolver gave, TLS to the policy host
    try:
        conn.request("GET", _PATH, headers={"Host": host, "User-Agent": "mailmon"})
        response = conn.getresponse()
        if response.status != 200:
            raise PolicyUnavailable(f"https://{host}{_PATH}: HTTP {response.status} (only "
                                    "200 counts, redirects are not followed: RFC 8461 "
                                    "§3.3)")  # fmt: skip
        kind = (response.getheader("Content-Type") or "").partition(";")[0].strip().lower()
        if kind != "text/plain":
            raise PolicyUnavailable(f"https://{host}{_PATH}: Content-Type {kind or 'missing'}, "
                                    "not text/plain (RFC 8461 §3.2)")  # fmt: skip
        body = response.read(MAX_POLICY_BYTES + 1)
        if len(body) > MAX_POLICY_BYTES:
            raise PolicyUnavailable(f"https://{host}{_PATH}: larger than {MAX_POLICY_BYTES} bytes")
        return body.decode("utf-8", "replace")
    finally:
        conn.close()
