"""Test zones for the posture checks and DNSBL lookups, served by ``dns_server.DNSServer``.

One zone per kind of domain (``good.test`` passes everything, the others break one thing
each) and blocklist zones whose answers follow the lists' documented return codes.
``BLOCKLISTS`` is a ``[dns] blocklists_file`` naming those zones.
"""

from __future__ import annotations

import base64
from functools import cache

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from dns_server import txt

__all__ = ["BLOCKLISTS", "LISTED_IP", "POLICIES", "REFUSED_IP", "SELECTORS", "zones"]

#: DKIM selectors published on good.test (and nowhere else but ``absent``).
SELECTORS = ("s2048", "s1024", "s512", "ed", "revoked", "testing", "absent")

LISTED_IP = "192.0.2.66"  # listed on zen.test as XBL and on bl.test
REFUSED_IP = "192.0.2.77"  # zen.test answers the public-resolver refusal
REWRITTEN_IP = "192.0.2.88"  # bl.test answers outside 127/8 (an NXDOMAIN-rewriting resolver)
CLEAN_IP = "192.0.2.10"


@cache
def rsa_key(bits: int) -> str:
    """A base64 DER SubjectPublicKeyInfo of an RSA key of ``bits`` (under 1024, which no
    library generates any more, a public key on a made-up odd modulus of that size)."""
    if bits < 1024:
        key = rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 0xF1).public_key()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return base64.b64encode(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).decode()


def _ed25519() -> str:
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def _domain(name: str, *, spf: str | None = "v=spf1 ip4:192.0.2.10 -all",
            dmarc: str | None = None, mx: str | None = "10 mx", sts: str | None = "v=STSv1; id=20260101",
            tlsrpt: str | None = None, bimi: str | None = None, policy_host: bool = True,
            extra: str = "") -> str:
    """Zone text for ``name``: good records unless a keyword replaces or removes one."""
    dmarc = dmarc if dmarc is not None else f"v=DMARC1; p=reject; rua=mailto:dmarc@{name}"
    tlsrpt = tlsrpt if tlsrpt is not None else f"v=TLSRPTv1; rua=mailto:tlsrpt@{name}"
    lines = ["@ A 192.0.2.10", "mx A 192.0.2.10"]
    if spf:
        lines.append(f"@ TXT {txt(spf)}")
    if dmarc != "-":
        lines.append(f"_dmarc TXT {txt(dmarc)}")
    if mx:
        lines.append(f"@ MX {mx}")
    if sts:
        lines.append(f"_mta-sts TXT {txt(sts)}")
    if sts and policy_host:  # where POLICIES are served (policy_server.PolicyServer)
        lines.append("mta-sts A 127.0.0.1")
    if tlsrpt != "-":
        lines.append(f"_smtp._tls TXT {txt(tlsrpt)}")
    if bimi:
        lines.append(f"default._bimi TXT {txt(bimi)}")
    return "\n".join(lines) + "\n" + extra


_BIMI = "v=BIMI1; l=https://good.test/logo.svg; a=https://good.test/vmc.pem"


def zones() -> dict[str, str]:
    """Every test zone by origin."""
    dkim = {
        "s2048": f"v=DKIM1; k=rsa; p={rsa_key(2048)}",
        "s1024": f"v=DKIM1; k=rsa; p={rsa_key(1024)}",
        "s512": f"v=DKIM1; k=rsa; p={rsa_key(512)}",
        "ed": f"v=DKIM1; k=ed25519; p={_ed25519()}",
        "revoked": "v=DKIM1; k=rsa; p=",
        "testing": f"v=DKIM1; k=rsa; t=y; p={rsa_key(2048)}",
    }
    keys = "".join(f"{sel}._domainkey TXT {txt(value)}\n" for sel, value in dkim.items())
    includes = " ".join(f"include:i{n}.lookups.test" for n in range(11))
    out = {
        # The parent: DMARC's fallback to the organisational domain asks _dmarc.test.
        "test.": "",
        "good.test.": _domain("good.test", dmarc="v=DMARC1; p=reject; adkim=s; aspf=r; rua=mailto:dmarc@good.test",
                              bimi=_BIMI, extra=keys),
        "softfail.test.": _domain("softfail.test", spf="v=spf1 mx ~all", dmarc="v=DMARC1; p=none; rua=mailto:d@softfail.test",
                                  mx=None, sts=None, tlsrpt="-"),
        "neutral.test.": _domain("neutral.test", spf="v=spf1 a ?all", bimi="v=BIMI1; l=https://neutral.test/l.svg"),
        "open.test.": _domain("open.test", spf="v=spf1 +all",
                              bimi="v=BIMI1; l=https://open.test/l.svg; a=https://open.test/v.pem",
                              dmarc="v=DMARC1; p=none; rua=mailto:d@open.test"),
        "lookups.test.": _domain("lookups.test", spf=f"v=spf1 {includes} -all",
                                 extra="".join(f'i{n} TXT "v=spf1 a -all"\n' for n in range(11))),
        "badspf.test.": _domain("badspf.test", spf="v=spf1 ip4:192.0.2.300 -all", dmarc="v=DMARC1; p=bogus"),
        "bare.test.": _domain("bare.test", spf=None, dmarc="-", mx="0 .", sts=None, tlsrpt="-"),
        "extrua.test.": _domain("extrua.test", dmarc="v=DMARC1; p=quarantine; rua=mailto:agg@reports.test",
                                policy_host=False),
        "authrua.test.": _domain("authrua.test", dmarc="v=DMARC1; p=reject; rua=mailto:agg@reports.test",
                                 mx="10 gone\n@ MX 20 mx"),
        "noaddr.test.": _domain("noaddr.test", mx="10 gone", sts="v=STSv1; id=", tlsrpt="v=TLSRPTv1; rua=ftp://x"),
        "reports.test.": '@ MX 10 mx\nmx A 192.0.2.20\nauthrua.test._report._dmarc TXT "v=DMARC1"\n',
        "flaky.test.": _domain("flaky.test"),
        # Blocklists: the IP's octets reversed under the zone (RFC 5782 §2.1).
        "zen.test.": "66.2.0.192 A 127.0.0.4\n66.2.0.192 A 127.0.0.10\n77.2.0.192 A 127.255.255.254\n",
        "bl.test.": "66.2.0.192 A 127.0.0.2\n88.2.0.192 A 198.51.100.1\n",
        "dbl.test.": "open.test A 127.0.1.2\n",
    }
    return out


def _policy(mode: str, mx: str, max_age: int = 604800) -> str:
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n"


#: MTA-STS policies by domain, as PolicyServer answers: (HTTP status, content type, body).
POLICIES = {
    "good.test": (200, "text/plain", _policy("enforce", "mx.good.test")),
    "neutral.test": (200, "text/plain", _policy("testing", "*.neutral.test")),
    "open.test": (200, "text/plain", _policy("enforce", "*.elsewhere.test")),
    "badspf.test": (200, "text/html", _policy("enforce", "mx.badspf.test")),
    "authrua.test": (200, "text/plain", "version: STSv1\r\nmode: sometimes\r\n"),
    "flaky.test": (200, "text/plain; charset=utf-8", _policy("enforce", "*.flaky.test", max_age=3600)),
    "lookups.test": (404, "text/plain", "no policy here\n"),
    # extrua.test: no mta-sts host at all
}


BLOCKLISTS = """
[[list]]
name = "zen"
zone = "zen.test"
kind = "ip"
[list.codes]
"127.0.0.4" = "XBL: a compromised host"
"127.0.0.10" = "PBL (ISP): should not send mail directly"
[list.refused]
"127.255.255.254" = "refused: query through a public or open resolver"

[[list]]
name = "bl"
zone = "bl.test"
kind = "ip"
[list.codes]
"127.0.0.2" = "listed"

[[list]]
name = "dbl"
zone = "dbl.test"
kind = "domain"
[list.codes]
"127.0.1.2" = "DBL: spam domain"

[[list]]
name = "down"
zone = "down.example"
kind = "ip"
"""
