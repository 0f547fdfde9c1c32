"""Report builders for the DMARC tests and bench: aggregate XML and TLS-RPT JSON in the
reporters' shape, with the rows, counts and results a test asks for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from conftest import CORPORA

DMARC = CORPORA / "dmarc"
#: Our domains for the corpus: its reports are about these (Netease's RUF and RFC 8460's
#: example are not: refused as foreign).
CORPUS_DOMAINS = ("example.com", "example.de", "indemed.com", "ab.id.au", "borschow.com",
                  "twlnet.com", "cardinalhealth.ca", "domain.de")  # fmt: skip


@dataclass(frozen=True)
class Row:
    ip: str
    count: int
    dkim: str = "pass"  # policy_evaluated
    spf: str = "pass"
    disposition: str = "none"
    header_from: str = "example.com"


def aggregate(
    rows: Sequence[Row],
    *,
    org: str = "google.com",
    email: str = "noreply-dmarc-support@google.com",
    report_id: str = "1234567890",
    domain: str = "example.com",
    begin: int = 1_764_979_200,  # 2025-12-06 00:00 UTC
    end: int = 1_765_065_599,
    p: str = "reject",
) -> bytes:
    """A DMARC aggregate report (RFC 7489 appendix C) with ``rows``."""
    records = "".join(f"""
  <record>
    <row>
      <source_ip>{r.ip}</source_ip>
      <count>{r.count}</count>
      <policy_evaluated><disposition>{r.disposition}</disposition><dkim>{r.dkim}</dkim><spf>{r.spf}</spf></policy_evaluated>
    </row>
    <identifiers><header_from>{r.header_from}</header_from></identifiers>
    <auth_results>
      <dkim><domain>{r.header_from}</domain><selector>s1</selector><result>{r.dkim}</result></dkim>
      <spf><domain>{r.header_from}</domain><result>{r.spf}</result></spf>
    </auth_results>
  </record>""" for r in rows)
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>{org}</org_name>
    <email>{email}</email>
    <report_id>{report_id}</report_id>
    <date_range><begin>{begin}</begin><end>{end}</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf><p>{p}</p><sp>{p}</sp><pct>100</pct>
  </policy_published>{records}
</feedback>
""".encode()


def tls_report(domain: str = "example.com", ok: int = 100, failed: int = 0,
               report_id: str = "2025-12-06T00:00:00Z_example.com") -> bytes:  # fmt: skip
    """An SMTP TLS report (RFC 8460 section 4) with one policy."""
    policy: dict[str, object] = {
        "policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: enforce"],
                   "policy-domain": domain},
        "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
    }  # fmt: skip
    if failed:
        policy["failure-details"] = [{"result-type": "certificate-expired",
                                      "receiving-mx-hostname": f"mx.{domain}",
                                      "failed-session-count": failed}]  # fmt: skip
    return json.dumps({
        "organization-name": "Google Inc.", "contact-info": "smtp-tls-reporting@google.com",
        "report-id": report_id,
        "date-range": {"start-datetime": "2025-12-06T00:00:00Z",
                       "end-datetime": "2025-12-06T23:59:59Z"},
        "policies": [policy],
    }).encode()  # fmt: skip


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE feedback [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<feedback><report_metadata><org_name>&lol9;</org_name></report_metadata></feedback>
"""
