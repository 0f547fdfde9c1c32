"""Recover the original message a bounce, complaint or auto-reply is about.

Where it comes from, best first:

- the ``message/rfc822`` (or ``message/global``) part: the whole original (RFC 3464 section 2,
  RFC 5965 section 2);
- the ``text/rfc822-headers`` part: its header only (RFC 6522 section 3);
- headers quoted in the text after a "copy of the message" line (qmail, Exim, Sendmail);
- the report's own ``In-Reply-To`` / ``References`` (auto-replies, RFC 3834 section 3.1.5);
- envelope ids: ``Original-Envelope-Id`` (RFC 3464 section 2.2.1), ``X-Postfix-Queue-ID``;
- a VERP return path (``bounces+alice=example.com@mail.example.net``) in the report's
  ``To`` / ``Delivered-To`` / ``Return-Path`` names the original recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from monitor.collectors.mail.mime import ADDRESS_RE, header, part_text, strip_angle
from monitor.collectors.mta.postfix_lines import clean_message_id

__all__ = ["OriginalMessage", "find_original", "quoted_headers", "verp_recipient"]


@dataclass(frozen=True, slots=True)
class OriginalMessage:
    """What is known of the message that failed (all optional)."""

    message_id: str | None = None
    envelope_id: str | None = None
    queue_id: str | None = None
    sender: str | None = None
    to: str | None = None
    subject: str | None = None
    verp_recipient: str | None = None
    where: str = ""  # rfc822, rfc822-headers, quoted, in-reply-to, or "" when not found


# "bounces+alice=example.com@...", "bounce-123-alice=example.com@...", "b.alice=example.com@..."
_VERP_RE = re.compile(
    r"^[A-Za-z0-9_.]*?(?:bounces?|return|verp|mailer|b)[A-Za-z0-9_.]*?[+\-.=]"
    r"(?:\d+[+\-.])*"
    r"(?P<local>[^=@+]+)=(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})@",
    re.I,
)
_SIMPLE_VERP_RE = re.compile(
    r"^[^@=]+?\+(?P<local>[^=@+]+)=(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})@"
)
_QUOTED_START = re.compile(
    r"^(?:[>|]\s*)?(?:return-path|received|message-id|from|to|subject|date):", re.I | re.M
)
_QUOTED_ID = re.compile(r"^[>|\s]*message-id:\s*(<[^>\s]+>|\S+)", re.I | re.M)


def verp_recipient(*addresses: str | None) -> str | None:
    """The recipient a VERP-encoded bounce address names, from the first that is one."""
    for value in addresses:
        if not value:
            continue
        for found in ADDRESS_RE.finditer(value):
            address = found.group(0)
            m = _SIMPLE_VERP_RE.match(address) or _VERP_RE.match(address)
            if m:
                return f"{m.group('local')}@{m.group('domain').lower()}"
    return None


def quoted_headers(text: str) -> Message | None:
    """The header block quoted in a bounce text (from its first header-looking line)."""
    start = _QUOTED_START.search(text)
    if start is None:
        return None
    lines = []
    for line in text[start.start() :].splitlines():
        if not line.strip():
            break
        lines.append(re.sub(r"^[>|]\s?", "", line))
    try:
        return HeaderParser().parsestr("\n".join(lines) + "\n\n", headersonly=True)
    except Exception:
        return None


def _embedded(message: Message, defects: list[str]) -> tuple[Message | None, str]:
    for part in message.walk():
        ctype = part.get_content_type()
        if part is not message and ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0], "rfc822"
            if isinstance(payload, str):
                return HeaderParser().parsestr(payload, headersonly=True), "rfc822"
        if ctype in ("text/rfc822-headers", "message/global-headers"):
            text = part_text(part, defects)
            return HeaderParser().parsestr(text.lstrip(), headersonly=True), "rfc822-headers"
    return None, ""


def find_original(
    message: Message,
    *,
    quoted_text: str = "",
    envelope_id: str | None = None,
    queue_id: str | None = None,
    defects: list[str] | None = None,
) -> OriginalMessage:
    """Everything the report says about the original message (never raises)."""
    notes: list[str] = defects if defects is not None else []
    try:
        original, where = _embedded(message, notes)
    except Exception:
        original, where = None, ""
    if original is None and quoted_text:
        original = quoted_headers(quoted_text)
        where = "quoted" if original is not None else ""
    message_id = None
    sender = to = subject = None
    if original is not None:
        raw_id = header(original, "Message-ID")
        message_id = clean_message_id(raw_id) if raw_id else None
        sender = strip_angle(header(original, "Return-Path")) or _first_address(
            header(original, "From")
        )
        to = _first_address(header(original, "To"))
        subject = header(original, "Subject")
    if message_id is None and quoted_text:
        found = _QUOTED_ID.search(quoted_text)
        if found:
            message_id = clean_message_id(found.group(1))
            where = where or "quoted"
    if message_id is None:
        for name in ("In-Reply-To", "References"):
            value = header(message, name)
            if value:
                ids = re.findall(r"<[^>\s]+>", value)
                if ids:
                    message_id = clean_message_id(ids[-1] if name == "References" else ids[0])
                    where = where or "in-reply-to"
                    break
    verp = verp_recipient(
        header(message, "To"),
        header(message, "Delivered-To"),
        header(message, "X-Original-To"),
        header(message, "Return-Path"),
    )
    return OriginalMessage(
        message_id=message_id,
        envelope_id=strip_angle(envelope_id),
        queue_id=queue_id,
        sender=sender,
        to=to,
        subject=subject,
        verp_recipient=verp,
        where=where,
    )


def _first_address(value: str | None) -> str | None:
    if not value:
        return None
    found = ADDRESS_RE.search(value)
    return found.group(0) if found else None
