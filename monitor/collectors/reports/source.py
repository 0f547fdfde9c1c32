"""Parsed reports -> records: the source the driver runs for every way a report comes in.

    source = ReportSource()
    records = source.feed(parsed, "reports/google.xml")   # DmarcRow, DmarcFailure, TlsrptPolicy

and the domain check in front of it: :func:`keep_ours` refuses a report about a domain
that is not one of ``[dmarc] domains`` (someone else's reports sent to our address, or
a forged one that would skew our numbers), and drops the foreign policies of a TLS
report that also covers ours.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from monitor.collectors.reports.parse import Parsed
from monitor.collectors.reports.records import (
    SOURCE,
    DmarcFailure,
    DmarcRow,
    TlsrptPolicy,
    our_domain,
)
from monitor.collectors.reports.unpack import Refused
from monitor.collectors.source import Item, NotUnderstood, ParseStats, Source

__all__ = ["ReportSource", "keep_ours", "policy_domains"]


def policy_domains(parsed: Parsed) -> list[str]:
    """The domains a report is about (aggregate: its policy domain; TLS: each policy's)."""
    report = parsed.report
    if parsed.type == "aggregate":
        return [str(report["policy_published"]["domain"] or "")]
    if parsed.type == "smtp_tls":
        return [str(p.get("policy_domain") or "") for p in report.get("policies", [])]
    return [str(report.get("reported_domain") or "")]


def keep_ours(parsed: Parsed, domains: Sequence[str]) -> Parsed:
    """``parsed`` if it is about one of ``domains`` (all are ours when none is configured);
    a TLS report loses its other policies; refused (``foreign_domain``) otherwise."""
    if not domains:
        return parsed
    named = policy_domains(parsed)
    mine = [d for d in named if our_domain(d, domains)]
    if not mine:
        raise Refused("foreign_domain",
                      f"about {', '.join(sorted(set(named))) or 'no domain'}, "
                      "not one of [dmarc] domains")  # fmt: skip
    if parsed.type == "smtp_tls" and len(mine) < len(named):
        policies = [p for p in parsed.report["policies"] if our_domain(p.get("policy_domain"),
                                                                       domains)]  # fmt: skip
        dropped = len(named) - len(mine)
        report = {**parsed.report, "policies": policies}
        return Parsed(parsed.type, report, [*parsed.notes,
                      f"{dropped} policies for other domains dropped"])  # fmt: skip
    return parsed


def _local(text: str) -> datetime:
    """parsedmarc's ``YYYY-MM-DD HH:MM:SS`` report times, which it writes in local time
    (``datetime.fromtimestamp``), back to UTC."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").astimezone(UTC)


def _utc(text: str) -> datetime:
    """A UTC time as parsedmarc or the reporter wrote it (RFC 3339 or ``YYYY-MM-DD HH:MM:SS``)."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


class ReportSource(Source[Parsed]):
    """A parsed report in, its records out (source ``dmarc``, whatever the path)."""

    kind = "dmarc"
    records = True

    def __init__(self) -> None:
        self.stats = ParseStats()

    def feed(self, unit: Parsed, ref: str | None = None) -> Sequence[Item]:
        self.stats.lines += 1
        try:
            if unit.type == "aggregate":
                out: list[Item] = list(self._aggregate(unit.report))
            elif unit.type == "smtp_tls":
                out = list(self._tls(unit.report))
            else:
                out = [self._failure(unit.report)]
        except (KeyError, TypeError, ValueError) as exc:
            raise NotUnderstood(f"{unit.type} report without a usable {exc}") from None
        self.stats.events += len(out)
        return out

    def _aggregate(self, report: dict[str, Any]) -> list[DmarcRow]:
        meta, policy = report["report_metadata"], report["policy_published"]
        begin, end = _local(meta["begin_date"]), _local(meta["end_date"])
        domain = str(policy["domain"]).lower()
        common: dict[str, Any] = {
            "source": SOURCE, "occurred_at": begin, "end": end,
            "org_name": str(meta["org_name"]), "org_email": str(meta.get("org_email") or ""),
            "report_id": str(meta["report_id"]), "policy_domain": domain,
            "p": str(policy.get("p") or ""), "sp": str(policy.get("sp") or ""),
            "pct": _int(policy.get("pct")), "adkim": str(policy.get("adkim") or "r"),
            "aspf": str(policy.get("aspf") or "r"),
        }  # fmt: skip
        rows = []
        for index, rec in enumerate(report["records"]):
            source, ids = rec["source"], rec["identifiers"]
            evaluated = rec["policy_evaluated"]
            auth = rec.get("auth_results") or {}
            rows.append(DmarcRow(
                **common, position=index,
                source_ip=str(source["ip_address"]), count=int(rec["count"]),
                header_from=str(ids.get("header_from") or "").lower(),
                envelope_from=_str(ids.get("envelope_from")),
                disposition=str(evaluated.get("disposition") or "none"),
                dkim_aligned=bool(rec["alignment"]["dkim"]),
                spf_aligned=bool(rec["alignment"]["spf"]),
                dkim_results=tuple(f"{r.get('domain')}/{r.get('selector')}={r.get('result')}"
                                   for r in auth.get("dkim", [])),
                spf_results=tuple(f"{r.get('domain')}/{r.get('scope')}={r.get('result')}"
                                  for r in auth.get("spf", [])),
                override_reasons=tuple(str(r.get("type")) for r in
                                       evaluated.get("policy_override_reasons", [])),
                source_country=_str(source.get("country")), source_asn=_int(source.get("asn")),
                source_as_name=_str(source.get("as_name")),
            ))  # fmt: skip
        return rows

    def _tls(self, report: dict[str, Any]) -> list[TlsrptPolicy]:
        begin, end = _utc(report["begin_date"]), _utc(report["end_date"])
        out = []
        for index, policy in enumerate(report["policies"]):
            out.append(TlsrptPolicy(
                source=SOURCE, occurred_at=begin, end=end,
                org_name=str(report["organization_name"]),
                contact_info=str(report.get("contact_info") or ""),
                report_id=str(report["report_id"]), position=index,
                policy_domain=str(policy["policy_domain"]).lower(),
                policy_type=str(policy["policy_type"]),
                successful_sessions=int(policy["successful_session_count"]),
                failed_sessions=int(policy["failed_session_count"]),
                policy_strings=json.dumps(policy.get("policy_strings", [])),
                failure_details=json.dumps(policy.get("failure_details", [])),
            ))  # fmt: skip
        return out

    def _failure(self, report: dict[str, Any]) -> DmarcFailure:
        source = report.get("source") or {}
        arrival = report.get("arrival_date_utc")
        if not arrival:  # its time is part of its id: "now" would store it again each read
            raise ValueError("arrival date")
        return DmarcFailure(
            source=SOURCE, occurred_at=_utc(arrival),
            reported_domain=str(report.get("reported_domain") or "").lower(),
            source_ip=_str(source.get("ip_address")), message_id=_str(report.get("message_id")),
            original_mail_from=_str(report.get("original_mail_from")),
            original_rcpt_to=_str(report.get("original_rcpt_to")),
            feedback_type=str(report.get("feedback_type") or "auth-failure"),
            auth_failure=tuple(str(a) for a in report.get("auth_failure") or ()),
            delivery_result=_str(report.get("delivery_result")),
            dkim_domain=_str(report.get("dkim_domain")),
            authentication_results=_str(report.get("authentication_results")),
            subject=_str(report.get("subject")), user_agent=_str(report.get("user_agent")),
        )  # fmt: skip
