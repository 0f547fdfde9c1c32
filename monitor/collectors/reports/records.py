"""The record kinds of DMARC and SMTP TLS reports, and the metrics they feed.

* :class:`DmarcRow`: one ``<record>`` row of a DMARC aggregate (RUA) report
  (RFC 7489 appendix C, RFC 9990): who sent how many messages as ``header_from``
  from ``source_ip``, with which SPF/DKIM results, aligned or not, and what the
  receiver did with them.
* :class:`DmarcFailure`: one DMARC failure (RUF, RFC 6591) report: one message.
* :class:`TlsrptPolicy`: one policy of an SMTP TLS report (RFC 8460 section 4):
  successful and failed sessions, with the failure details as JSON.

Identity: a report is named by its reporter (organisation and contact address), its
report id, the policy domain and its date range (report ids collide across
reporters), and each row by its position in the report.  ``source`` is the same
(``dmarc``) whichever way a report came in, so a report read from a file and again
from a mailbox is stored, and counted on ``/metrics``, once.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter

from monitor.metrics import observe_kind
from monitor.records import Record
from monitor.store.records import register_record

__all__ = [
    "SOURCE",
    "TLS_RESULT_TYPES",
    "DmarcFailure",
    "DmarcRow",
    "TlsrptPolicy",
    "domain_label",
    "report_metrics",
]

#: The ``source`` of every report record, whichever path brought the report.
SOURCE = "dmarc"

#: RFC 8460 section 4.3 result types; anything else is counted as ``other``.
TLS_RESULT_TYPES = frozenset({
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
    "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
})  # fmt: skip

#: Our domains as labels: set once from ``[dmarc] domains`` (the CLI and ``serve`` do).
_OUR_DOMAINS: list[tuple[str, ...]] = [()]


def set_label_domains(domains: Iterable[str]) -> None:
    """Name the domains that get their own ``header_from``/``policy_domain`` label."""
    _OUR_DOMAINS[0] = tuple(sorted({d.strip(".").lower() for d in domains}, key=len, reverse=True))


def our_domain(name: str | None, domains: Sequence[str]) -> str | None:
    """The configured domain ``name`` is (or is a subdomain of), else None."""
    if not name:
        return None
    name = name.strip(".").lower()
    for domain in domains:
        if name == domain or name.endswith("." + domain):
            return domain
    return None


def domain_label(name: str | None) -> str:
    """A bounded label: one of our configured domains (a subdomain counts as its parent),
    else ``other``."""
    return our_domain(name, _OUR_DOMAINS[0]) or "other"


@register_record
@dataclass(frozen=True, slots=True)
class DmarcRow(Record):
    """One row of a DMARC aggregate report (``occurred_at``: the report's begin)."""

    kind = "dmarc_rows"
    identity_fields = ("org_name", "org_email", "report_id", "policy_domain", "end", "position")
    indexes = (("policy_domain",), ("header_from",), ("source_ip",))

    org_name: str
    org_email: str
    report_id: str
    end: datetime
    policy_domain: str
    position: int  # the row's place in the report, from 0
    source_ip: str
    count: int
    header_from: str
    envelope_from: str | None
    disposition: str  # none, quarantine, reject
    dkim_aligned: bool  # policy_evaluated dkim = pass
    spf_aligned: bool  # policy_evaluated spf = pass
    dkim_results: tuple[str, ...]  # DOMAIN/SELECTOR=RESULT per DKIM signature
    spf_results: tuple[str, ...]  # DOMAIN/SCOPE=RESULT
    override_reasons: tuple[str, ...]  # forwarded, mailing_list, local_policy ...
    p: str
    sp: str
    pct: int | None
    adkim: str
    aspf: str
    source_country: str | None = None  # from parsedmarc's bundled IP database (offline)
    source_asn: int | None = None
    source_as_name: str | None = None

    @property
    def passed(self) -> bool:
        """DMARC pass: SPF or DKIM aligned and passing (RFC 7489 section 4.2)."""
        return self.dkim_aligned or self.spf_aligned


@register_record
@dataclass(frozen=True, slots=True)
class DmarcFailure(Record):
    """One DMARC failure (RUF) report about one message (``occurred_at``: its arrival)."""

    kind = "dmarc_failures"
    identity_fields = ("reported_domain", "message_id", "source_ip", "original_rcpt_to",
                       "original_mail_from")  # fmt: skip
    indexes = (("reported_domain",),)

    reported_domain: str
    source_ip: str | None
    message_id: str | None
    original_mail_from: str | None
    original_rcpt_to: str | None
    feedback_type: str
    auth_failure: tuple[str, ...]  # dmarc, spf, dkim
    delivery_result: str | None
    dkim_domain: str | None
    authentication_results: str | None
    subject: str | None
    user_agent: str | None


@register_record
@dataclass(frozen=True, slots=True)
class TlsrptPolicy(Record):
    """One policy of an SMTP TLS report (``occurred_at``: the report's start)."""

    kind = "tlsrpt_policies"
    identity_fields = ("org_name", "contact_info", "report_id", "policy_domain", "end", "position")
    indexes = (("policy_domain",),)

    org_name: str
    contact_info: str
    report_id: str
    end: datetime
    policy_domain: str
    position: int  # the policy's place in the report, from 0
    policy_type: str  # sts, tlsa, no-policy-found
    successful_sessions: int
    failed_sessions: int
    policy_strings: str  # JSON list
    failure_details: str  # JSON list of {result_type, failed_session_count, ...}

    def failures(self) -> list[dict[str, object]]:
        """The failure details, decoded."""
        value = json.loads(self.failure_details or "[]")
        return value if isinstance(value, list) else []


class ReportMetrics:
    """The report kinds' counters (bounded labels: our domains or ``other``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.messages = Counter(
            "mailmon_dmarc_messages",
            "Messages reported in DMARC aggregate reports, by From: domain and result.",
            ["header_from", "disposition", "dkim_aligned", "spf_aligned"], registry=r,
        )  # fmt: skip
        self.failures = Counter(
            "mailmon_dmarc_failure_reports", "DMARC failure (RUF) reports per reported domain.",
            ["domain"], registry=r,
        )  # fmt: skip
        self.sessions = Counter(
            "mailmon_tlsrpt_sessions", "SMTP TLS sessions reported in TLS-RPT reports.",
            ["policy_domain", "result"], registry=r,
        )  # fmt: skip
        self.tls_failures = Counter(
            "mailmon_tlsrpt_failed_sessions",
            "Failed SMTP TLS sessions by RFC 8460 result type.",
            ["policy_domain", "result_type"], registry=r,
        )  # fmt: skip
        # The report mailbox ([dmarc.imap]); reasons and outcomes from IMAP_ERRORS, IMAP_OUTCOMES.
        self.imap_errors = Counter(
            "mailmon_dmarc_imap_errors",
            "Runs of the DMARC report mailbox that failed, or moves that did, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.imap_messages = Counter(
            "mailmon_dmarc_imap_messages",
            "Messages read from the DMARC report mailbox, by where they went.",
            ["outcome"], registry=r,
        )  # fmt: skip

    def __call__(self, records: Sequence[Record]) -> None:
        tally: dict[tuple[object, ...], int] = {}

        def add(key: tuple[object, ...], n: int) -> None:
            tally[key] = tally.get(key, 0) + n

        for rec in records:
            if isinstance(rec, DmarcRow):
                disposition = rec.disposition if rec.disposition in _DISPOSITIONS else "other"
                add((self.messages, domain_label(rec.header_from), disposition,
                     _flag(rec.dkim_aligned), _flag(rec.spf_aligned)), rec.count)  # fmt: skip
            elif isinstance(rec, DmarcFailure):
                add((self.failures, domain_label(rec.reported_domain)), 1)
            elif isinstance(rec, TlsrptPolicy):
                domain = domain_label(rec.policy_domain)
                add((self.sessions, domain, "success"), rec.successful_sessions)
                add((self.sessions, domain, "failure"), rec.failed_sessions)
                for detail in rec.failures():
                    kind = str(detail.get("result_type"))
                    n = detail.get("failed_session_count")
                    add((self.tls_failures, domain, kind if kind in TLS_RESULT_TYPES else "other"),
                        n if isinstance(n, int) and n > 0 else 0)  # fmt: skip
        for (counter, *labels), n in tally.items():
            assert isinstance(counter, Counter)
            counter.labels(*labels).inc(n)


_DISPOSITIONS = frozenset({"none", "quarantine", "reject"})


def _flag(value: bool) -> str:
    return "true" if value else "false"


#: One ReportMetrics per registry, shared by the three kinds (each Metrics asks once per kind).
_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, ReportMetrics] = (
    weakref.WeakKeyDictionary()
)


def report_metrics(registry: CollectorRegistry) -> ReportMetrics:
    """The report counters on ``registry`` (made once per registry)."""
    metrics = _SHARED.get(registry)
    if metrics is None:
        metrics = _SHARED[registry] = ReportMetrics(registry)
    return metrics


def _observer(registry: CollectorRegistry) -> Callable[[Sequence[Record]], None]:
    return report_metrics(registry)


for _kind in (DmarcRow.kind, DmarcFailure.kind, TlsrptPolicy.kind):
    observe_kind(_kind, _observer)
