"""Per-recipient results of a parsed report, and how one recipient is classified.

:class:`Report` and :class:`RecipientReport` are what :func:`monitor.collectors.mail.dsn.parse`
returns; :func:`classify_recipient` turns what a report says of one recipient (action,
status, reply text, the SMTP command, the remote MTA) into a verdict of the engine, with
Sisimai's command-sensitive conventions on top (see :func:`by_command`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from monitor.classify.engine import Verdict, classify, provider_of_mx, says_temporary
from monitor.collectors.mail import arf
from monitor.collectors.mail.mime import strip_angle
from monitor.collectors.mail.original import OriginalMessage
from monitor.collectors.mail.plaintext import command_of, remote_host_of
from monitor.provider_rules import ProviderRules

__all__ = [
    "RecipientReport",
    "Report",
    "by_command",
    "classify_recipient",
    "host_of",
    "reply_of",
    "status_of",
]

_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_WITH_CODE_RE = re.compile(r"(?<![\w.])[45]\d\d[ \-]['\"]?([45]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
_COMMENT_RE = re.compile(r"\s*[245]\.\d{1,3}\.\d{1,3}\s*\((.+)\)\s*$")
_REPLY_RE = re.compile(r"(?<![\w.\-#])([245][0-5]\d)(?=[\s\-]|$)")


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One recipient of one report: what the report says, and what it means."""

    recipient: str | None
    reason: str
    hard: bool
    blame: str = "unknown"
    rule: str = ""
    status: str | None = None
    reply_code: int | None = None
    diagnostic: str | None = None
    action: str | None = None
    original_recipient: str | None = None
    remote_mta: str | None = None
    command: str | None = None
    last_attempt: datetime | None = None


@dataclass(slots=True)
class Report:
    """One parsed email: its kind, its recipients and the original message."""

    kind: str  # dsn, bounce (plain text), arf, autoreply, unknown
    recipients: list[RecipientReport] = field(default_factory=list)
    original: OriginalMessage = field(default_factory=OriginalMessage)
    date: datetime | None = None
    message_id: str | None = None
    reporting_mta: str | None = None
    addressed_to: str | None = None  # the report's To: for a bounce, the original's sender
    feedback: arf.FeedbackFields | None = None
    #: recipients of a DSN returned inside this one (a bounce of a bounce): an earlier
    #: failure of another message, reported apart so it never joins this one's original
    nested: list[RecipientReport] = field(default_factory=list)
    truncated: bool = False
    defects: list[str] = field(default_factory=list)

    @property
    def best_effort(self) -> bool:
        """Whether the result was produced from damaged or cut input."""
        return self.truncated or bool(self.defects)


def status_of(value: str | None, text: str) -> str | None:
    """The enhanced status; a bare ``x.0.0`` yields to a precise one in the text."""
    found = _STATUS_RE.search(value or "")
    status = found.group(0) if found else None
    if status is None or status.endswith(".0.0"):
        # the status a reply code carries ("550-5.7.1") is the server's own; a report may
        # put its summary first ("5.1.0 - Unknown address error 550-'5.7.1 ...")
        carried = _WITH_CODE_RE.search(text)
        found = _failure(_STATUS_RE, text)
        precise = carried.group(1) if carried else found.group(0) if found else None
        same_class = precise and (status is None or precise[0] == status[0])
        if precise and same_class and (status is None or not precise.endswith(".0.0")):
            status = precise
    return status


def _failure(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The first failure code in ``text``: a session transcript's "250 2.1.5 Ok" is not it."""
    first = None
    for found in pattern.finditer(text):
        if found.group(1)[0] in "45":
            return found
        first = first or found
    return first


def reply_of(text: str) -> int | None:
    found = _failure(_REPLY_RE, text)
    return int(found.group(1)) if found else None


def host_of(value: str | None) -> str | None:
    host = strip_angle(value)
    if not host:
        return None
    host = host.split()[0].strip("[]").rstrip(".").lower()
    return host or None


#: Unknown-user texts an SMTP server gives at RCPT; given at any other time, they are a filter.
_RCPT_ONLY_UNKNOWN = frozenset({"generic_mta.userunknown", "google.no_such_user"})


def by_command(
    verdict: Verdict,
    status: str | None,
    reply: int | None,
    command: str | None,
    final: bool,
    text: str = "",
) -> Verdict:
    """Sisimai's rules by the SMTP command answered: an "unknown user" text means the
    address is unknown only when the status says so (x.1.x) or the server answered RCPT;
    after DATA, or with nothing to tell, it is the recipient's filter (go-sisimai
    reason/why-userunknown.go, why-filtered.go).  A bare code refusing the connection or
    the greeting refuses the sending host: blocked (reason/lib.go)."""
    detail = status.partition(".")[2] if status else ""
    at_rcpt = command in ("RCPT", "MAIL")
    if verdict.rule == "generic_mta.filtered_after_data" and detail.startswith("1."):
        # the text and the status both name an unknown address: hard once delivery ended,
        # unless a 4xx text calls itself temporary (as the engine decides)
        hard = final and (status[0] == "5" or not says_temporary(text))  # type: ignore[index]
        return Verdict("userunknown", hard, "recipient", "sisimai.status_x11")
    if verdict.rule == "generic_mta.filtered_unknown_user" and at_rcpt:
        hard = final and (status[0] == "5" or not says_temporary(text))  # type: ignore[index]
        return Verdict("userunknown", hard, "recipient", "sisimai.userunknown_at_rcpt")
    if verdict.rule in _RCPT_ONLY_UNKNOWN and not at_rcpt and not detail.startswith("1."):
        return Verdict("filtered", False, "recipient", "sisimai.unknown_user_not_at_rcpt")
    if command in ("CONNECT", "HELO", "EHLO") and _from_code(verdict):
        # refused before any address was given: the sending host is what is refused
        return Verdict("blocked", False, "reputation", "sisimai.refused_at_connect")
    return verdict


def _from_code(verdict: Verdict) -> bool:
    """Whether no text rule decided (the code tables or the fallbacks did)."""
    return verdict.rule.startswith(("rfc3463.", "rfc5321.", "fallback."))


# Postfix's smtpd names the address it refuses, "<a@b>: User unknown ...", only at RCPT.
_RCPT_FORM = re.compile(r"<[^<>\s@]+@[^<>\s]+>: user unknown", re.I)


def _rcpt_form(text: str) -> str | None:
    return "RCPT" if text and _RCPT_FORM.search(text) else None


def classify_recipient(
    address: str | None,
    *,
    action: str | None,
    status_field: str | None,
    diagnostic: str,
    context: str = "",
    original_recipient: str | None = None,
    remote_mta: str | None = None,
    last_attempt: datetime | None = None,
    provider: str | None = None,
    diagnostic_type: str | None = None,
    mta_category: str | None = None,
    provider_rules: ProviderRules | None = None,
) -> RecipientReport:
    """Classify one recipient with everything known about its failure; ``provider_rules``
    (None: the packaged ones) name the remote MTA's provider."""
    status = status_of(status_field, diagnostic or context) or status_of(None, context)
    reply = reply_of(diagnostic) or reply_of(context)
    command = command_of(diagnostic) or command_of(context) or _rcpt_form(diagnostic)
    mx = remote_mta or remote_host_of(diagnostic) or None
    final = (action or "failed").lower() not in ("delayed",)
    hint = provider_of_mx(mx, provider_rules) if mx else provider
    # "Status: 5.2.1 (mailbox disabled, not accepting messages)": the comment is the
    # reporting MTA's own words on the failure, read with the reply it explains
    comment = _COMMENT_RE.match(status_field or "")
    explained = f"{diagnostic} ({comment.group(1)})" if comment and diagnostic else diagnostic
    verdict = classify(
        reply, status, explained or None, command=command, provider=hint, final=final
    )
    decided_by_text = not _from_code(verdict)
    if _from_code(verdict) and context and context != diagnostic:
        # the code alone decided: a text rule on the whole explanation knows better
        wider = classify(reply, status, context, command=command, provider=hint, final=final)
        vague = verdict.reason in ("onhold", "undefined")
        if not _from_code(wider) or (vague and wider.reason not in ("onhold", "undefined")):
            verdict, decided_by_text = wider, False
    verdict = by_command(verdict, status, reply, command, final, diagnostic or context)
    if mta_category and (_from_code(verdict) or verdict.rule == "sisimai.unknown_user_not_at_rcpt"):
        # the sending MTA's own verdict (PowerMTA's bounce category) settles what the text
        # leaves open
        said = classify(
            reply, status, f"x-powermta-bouncecategory: {mta_category.strip()}", final=final
        )
        if said.rule.startswith("powermta."):
            verdict = said
    if (diagnostic_type or "").lower() == "x-unix" and (
        not decided_by_text or verdict.reason in ("userunknown", "filtered")
    ):
        # RFC 3464 2.3.6: an X-Unix diagnostic is a local delivery program's exit status;
        # its "no such user" is the program failing, not the address (Sisimai: mailererror)
        verdict = Verdict("mailererror", False, "infrastructure", "rfc3464.x-unix")
    if (action or "").lower() in ("delivered", "relayed", "expanded"):
        verdict = Verdict("delivered", False, "unknown", "rfc3464.action")
    return RecipientReport(
        recipient=address,
        reason=verdict.reason,
        hard=verdict.hard,
        blame=verdict.blame,
        rule=verdict.rule,
        status=status,
        reply_code=reply,
        diagnostic=diagnostic or context[:1000] or None,
        action=action.lower() if action else None,
        original_recipient=original_recipient,
        remote_mta=mx,
        command=command,
        last_attempt=last_attempt,
    )
