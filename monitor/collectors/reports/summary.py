"""What ``mailmon dmarc summary`` says per domain, from the stored report records.

Per policy domain: messages reported, the DMARC pass rate (a message passes when SPF or
DKIM is aligned and passing, RFC 7489 section 4.2), the policy it last published, the
top sources by volume with their alignment, and the *unknown* sources: IPs that sent
as the domain and never passed (a forger, or a service of ours nobody set up SPF or
DKIM for).  TLS-RPT sessions per policy domain beside.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.collectors.reports.records import DmarcRow, TlsrptPolicy

__all__ = ["SourceTally", "summarize"]


@dataclass
class SourceTally:
    """One source IP's messages for one domain."""

    ip: str
    messages: int = 0
    passed: int = 0
    dkim_aligned: int = 0
    spf_aligned: int = 0
    as_name: str | None = None
    country: str | None = None
    header_from: set[str] = field(default_factory=set)

    def to_dict(self, ptr: Mapping[str, str | None]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ip": self.ip, "messages": self.messages, "passed": self.passed,
            "pass_rate": _rate(self.passed, self.messages),
            "dkim_aligned": self.dkim_aligned, "spf_aligned": self.spf_aligned,
            "as_name": self.as_name, "country": self.country,
            "header_from": sorted(self.header_from),
        }  # fmt: skip
        if self.ip in ptr:
            out["reverse_dns"] = ptr[self.ip]
        return out


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class _Domain:
    messages: int = 0
    passed: int = 0
    reports: set[tuple[str, str, str]] = field(default_factory=set)
    dispositions: dict[str, int] = field(default_factory=dict)
    policy: dict[str, Any] | None = None
    policy_at: float = 0.0
    sources: dict[str, SourceTally] = field(default_factory=dict)


def summarize(
    rows: Iterable[DmarcRow],
    tls: Iterable[TlsrptPolicy] = (),
    *,
    domain: str | None = None,
    top: int = 10,
    ptr: Mapping[str, str | None] | None = None,
) -> list[dict[str, Any]]:
    """Per policy domain (only ``domain``'s when given), sorted by name."""
    ptr = ptr or {}
    want = domain.strip(".").lower() if domain else None
    domains: dict[str, _Domain] = {}
    for row in rows:
        if want and want not in (row.policy_domain, row.header_from):
            continue
        d = domains.setdefault(row.policy_domain, _Domain())
        d.messages += row.count
        d.passed += row.count if row.passed else 0
        d.reports.add((row.org_name, row.org_email, row.report_id))
        d.dispositions[row.disposition] = d.dispositions.get(row.disposition, 0) + row.count
        at = row.occurred_at.timestamp()
        if d.policy is None or at >= d.policy_at:
            d.policy_at = at
            d.policy = {"p": row.p, "sp": row.sp, "pct": row.pct, "adkim": row.adkim,
                        "aspf": row.aspf}  # fmt: skip
        s = d.sources.get(row.source_ip)
        if s is None:
            s = d.sources[row.source_ip] = SourceTally(row.source_ip, as_name=row.source_as_name,
                                                       country=row.source_country)  # fmt: skip
        s.messages += row.count
        s.passed += row.count if row.passed else 0
        s.dkim_aligned += row.count if row.dkim_aligned else 0
        s.spf_aligned += row.count if row.spf_aligned else 0
        s.header_from.add(row.header_from)
    sessions: dict[str, list[int]] = {}
    for policy in tls:
        if want and policy.policy_domain != want:
            continue
        pair = sessions.setdefault(policy.policy_domain, [0, 0])
        pair[0] += policy.successful_sessions
        pair[1] += policy.failed_sessions
    out = []
    for name in sorted(set(domains) | set(sessions)):
        d = domains.get(name, _Domain())
        ranked = sorted(d.sources.values(), key=lambda s: (-s.messages, s.ip))
        unknown = [s for s in ranked if s.passed == 0]
        ok, failed = sessions.get(name, [0, 0])
        out.append({
            "domain": name,
            "messages": d.messages,
            "passed": d.passed,
            "pass_rate": _rate(d.passed, d.messages),
            "reports": len(d.reports),
            "dispositions": dict(sorted(d.dispositions.items())),
            "policy": d.policy,
            "sources": len(ranked),
            "top_sources": [s.to_dict(ptr) for s in ranked[:top]],
            "unknown_sources": [s.to_dict(ptr) for s in unknown[:top]],
            "unknown_source_count": len(unknown),
            "tls_sessions": {"successful": ok, "failed": failed,
                             "success_rate": _rate(ok, ok + failed)},
        })  # fmt: skip
    return out


def source_ips(summary: list[dict[str, Any]], limit: int) -> list[str]:
    """The IPs a summary shows, busiest first, at most ``limit`` (what --resolve looks up)."""
    seen: dict[str, int] = {}
    for d in summary:
        for s in (*d["top_sources"], *d["unknown_sources"]):
            seen[s["ip"]] = max(seen.get(s["ip"], 0), s["messages"])
    return sorted(seen, key=lambda ip: (-seen[ip], ip))[:limit]
