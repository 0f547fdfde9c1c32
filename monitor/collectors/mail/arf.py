"""RFC 5965 Abuse Reporting Format: feedback-loop complaints -> reason ``feedback``.

A report is ``multipart/report; report-type=feedback-report`` with a
``message/feedback-report`` part (section 3: ``Feedback-Type``, ``User-Agent``,
``Version``; optional ``Original-Mail-From``, ``Original-Rcpt-To``, ``Arrival-Date``,
``Source-IP``, ``Reported-Domain``) and the original message or its header (section 2).
Some providers (Microsoft JMRP, older AOL) send the original alone with their own headers;
those are recognised by the report's ``Content-Type`` parameter or headers too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from monitor.collectors.mail.mime import ADDRESS_RE, header, part_text, strip_angle

__all__ = ["FeedbackFields", "feedback_fields", "is_feedback"]

#: RFC 5965 section 7.3 plus RFC 6591 (auth-failure) and the registry's later additions.
FEEDBACK_TYPES = frozenset({"abuse", "fraud", "auth-failure", "not-spam", "other", "virus"})


@dataclass(frozen=True, slots=True)
class FeedbackFields:
    """The machine-readable fields of one feedback report."""

    feedback_type: str
    recipients: tuple[str, ...] = ()
    original_mail_from: str | None = None
    source_ip: str | None = None
    reported_domain: str | None = None
    arrival_date: str | None = None
    user_agent: str | None = None


def _report_part(message: Message) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            return part
    return None


def _jmrp_recipient(message: Message) -> str | None:
    """Microsoft JMRP names the complainant in the forwarded message's own header."""
    for part in message.walk():
        value = header(part, "X-HmXmrOriginalRecipient")
        if value:
            return strip_angle(value) or value
    return None


def is_feedback(message: Message) -> bool:
    """Whether ``message`` is a feedback-loop report (ARF or a provider's own FBL form)."""
    if _report_part(message) is not None:
        return True
    ctype = (header(message, "Content-Type") or "").lower()
    if "feedback-report" in ctype:
        return True
    if (header(message, "X-Apple-Unsubscribe") or "").lower() == "true":
        return True  # iCloud's "unsubscribe" complaint
    subject = (header(message, "Subject") or "").lower()
    if header(message, "X-AOL-IP") and "complaint" in subject:
        return True
    return subject.startswith("complaint about message from") and bool(_jmrp_recipient(message))


def _fields(part: Message, defects: list[str]) -> list[tuple[str, str]]:
    """The ``name: value`` fields of the report part (the stdlib may pre-parse them)."""
    payload = part.get_payload()
    blocks: list[Message] = []
    if isinstance(payload, list):
        blocks = [p for p in payload if isinstance(p, Message)]
    else:
        text = part_text(part, defects)
        blocks = [HeaderParser().parsestr(text.lstrip(), headersonly=True)]
    out: list[tuple[str, str]] = []
    for block in blocks:
        for name in block:
            value = header(block, name)
            if value is not None:
                out.append((name.lower(), value))
    return out


def feedback_fields(message: Message, defects: list[str]) -> FeedbackFields:
    """The report's fields; the recipients fall back to the original's ``To``."""
    part = _report_part(message)
    fields = _fields(part, defects) if part is not None else []
    one = dict(fields)
    kind = (one.get("feedback-type") or "abuse").strip().lower()
    if kind not in FEEDBACK_TYPES:
        defects.append(f"unknown Feedback-Type {kind!r}")
    recipients = [
        r for name, value in fields if name == "original-rcpt-to" and (r := strip_angle(value))
    ]
    if not recipients:
        jmrp = _jmrp_recipient(message)
        if jmrp:
            recipients.append(jmrp)
    if not recipients:
        for sub in message.walk():
            if sub.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
                inner = sub.get_payload()
                if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                    to = header(inner[0], "To")
                else:
                    text = part_text(sub, defects)
                    to = header(HeaderParser().parsestr(text.lstrip(), headersonly=True), "To")
                if to:
                    recipients.extend(m.group(0) for m in ADDRESS_RE.finditer(to))
                break
    if not recipients:
        text = " ".join(part_text(p, defects) for p in message.walk() if not p.is_multipart())
        m = re.search(r"original-rcpt-to:\s*<?(" + ADDRESS_RE.pattern + ")", text, re.I)
        if m:
            recipients.append(m.group(1))
    return FeedbackFields(
        feedback_type=kind,
        recipients=tuple(dict.fromkeys(recipients)),
        original_mail_from=strip_angle(one.get("original-mail-from")),
        source_ip=one.get("source-ip"),
        reported_domain=one.get("reported-domain"),
        arrival_date=one.get("arrival-date") or one.get("received-date"),
        user_agent=one.get("user-agent"),
    )
