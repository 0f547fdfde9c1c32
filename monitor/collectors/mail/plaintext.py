"""Non-standard bounces: the recipients and their error texts in a plain-text body.

Real MTAs and providers still send bounces without a ``message/delivery-status`` part:
qmail ("Hi. This is the qmail-send program"), Exim ("This message was created
automatically by mail delivery software" + "SMTP error from remote mail server after RCPT
TO"), old Sendmail ("----- Transcript of session follows -----"), Exchange / Office 365
NDR texts, Gmail's "Delivery Status Notification (Failure)", Yahoo's "Sorry, we were
unable to deliver your message".  They share a shape this module relies on instead of
one parser per MTA: an error section naming each failed address followed by its reply,
then a copy of the original message after a separator line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from monitor.collectors.mail.mime import ADDRESS_RE

__all__ = [
    "TextRecipient",
    "command_of",
    "lead_of",
    "parse_text",
    "remote_host_of",
    "split_original",
]

# The line that starts the copy of the original message (qmail, Exim, Sendmail, Exchange).
_ORIGINAL_MARK = re.compile(
    r"^[ \t]*(?:[-=_*]{2,}[ \t]*(?:[^\n]{0,40}?)(?:original message|returned message|unsent message"
    r"|undelivered message|copy of|below this line|message follows|included message"
    r"|message header|original mail|headers of)[^\n]*"
    r"|original message headers:?|-+ ?original message ?-+|original message follows\.?"
    r"|message headers follow\.?"
    r"|the headers of your message|your message reads .*)[ \t\r]*$",
    re.I | re.M,
)
# A quoted header block without a separator: a header line right after a blank line.
_HEADER_BLOCK = re.compile(
    r"\n[ \t]*\n(?=(?:Return-Path|Received|Message-ID|DKIM-Signature|X-[A-Za-z-]+):[ \t]?\S)"
)
_DAEMON = re.compile(
    r"^(?:mailer-daemon|postmaster|mail-daemon|maildaemon|double-bounce|root|mailmaster"
    r"|bounce|bounces|noreply|no-reply|nobody)@",
    re.I,
)
_COMMAND_RE = re.compile(
    r"(?:in reply to (?:end of )?|after (?:end of )?|>>> ?|command[:=]?\s*|\bour |\["
    r"|progress was |smtp:)"
    r"(RCPT(?:[ _]TO)?|MAIL(?: FROM)?|DATA|HELO|EHLO|STARTTLS|connect|initial connection)\b"
    r"|(does not like recipient)"
    r"|(refused to talk to me)",  # Postfix: the greeting refused us
    re.I,
)
_HOST_RE = re.compile(
    r"(?:host|server|remote-mta:\s*dns;|talking to|by)\s+\[?"
    r"([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\.?\]?"
    r"(?=[\s\[(:,.]|$)",
    re.I,
)
# Sendmail's per-recipient result line, "554 <a@b>... Remote protocol error": what explains
# it is the session transcript above it ("While talking to host:"), what follows is the next's.
_RESULT_LINE = re.compile(r"^[ \t]*[45]\d\d[ \t]+<?[^\s<>]+@[^\s<>]+?>?\.\.\.[ \t]", re.M)
_TALKING_TO = re.compile(r"^[ \t.]*while talking to [^\n]*", re.I | re.M)
_SMTPISH = re.compile(r"(?<![\d.])[245]\d\d(?=[\s\-])|(?<![\d.])[245]\.\d{1,3}\.\d{1,3}\b")
_MAX_TEXT = 4000


@dataclass(frozen=True, slots=True)
class TextRecipient:
    """One failed address found in a bounce text and the text that explains it."""

    recipient: str
    diagnostic: str


def split_original(body: str) -> tuple[str, str]:
    """(error section, quoted original) of a bounce body."""
    cut = len(body)
    m = _ORIGINAL_MARK.search(body)
    if m:
        cut = m.start()
    h = _HEADER_BLOCK.search(body, 0, cut)
    if h and h.start() > 40:
        cut = min(cut, h.start())
    return body[:cut], body[cut:]


def command_of(text: str) -> str | None:
    """The SMTP command a reply answered, when the text says so ("in reply to RCPT TO")."""
    found = None
    for found in _COMMAND_RE.finditer(text):  # noqa: B007 - the last one is the command that failed
        continue
    if found is None:
        return None
    if found.group(2):
        return "RCPT"
    if found.group(3):
        return "CONNECT"
    word = found.group(1).upper().replace("_", " ").split()[0]
    return "CONNECT" if word in ("CONNECT", "INITIAL") else word


def remote_host_of(text: str) -> str | None:
    """The remote MTA host a bounce text names ("host mx.example.com[192.0.2.1] said")."""
    m = _HOST_RE.search(text)
    return m.group(1).lower() if m else None


def _squeeze(text: str) -> str:
    return " ".join(text.split())[:_MAX_TEXT]


def lead_of(errors: str, start: int) -> str:
    """What explains an address before it: "Unknown user: <a@b>", or the line above
    "User not listed in ...\na@b" when the address starts its line (IMail, Notes), or a
    one-line statement above blank lines ("The user(s) account is disabled.\n\n<a@b>: ...",
    au/EZweb)."""
    line_start = errors.rfind("\n", 0, start) + 1
    lead = errors[line_start:start]
    if lead.strip(" \t<\"'"):
        return lead
    above = _line_above(errors, line_start)
    if not above.strip():
        # or a one-line statement above the blank lines: "The user(s) account is disabled."
        at = line_start
        while at > 0 and not above.strip():
            at = errors.rfind("\n", 0, at - 1) + 1
            above = _line_above(errors, at)
        at = errors.rfind("\n", 0, max(at - 1, 0)) + 1
        if _line_above(errors, at).strip():
            above = ""  # the last line of a longer paragraph
    above = above.strip()
    if above and not ADDRESS_RE.search(above) and not above.startswith(("-", "*", "=")):
        return above + " " + lead
    return lead


def _line_above(text: str, line_start: int) -> str:
    """The line that ends just before ``line_start`` ("" at the top)."""
    if line_start <= 0:
        return ""
    return text[text.rfind("\n", 0, line_start - 1) + 1 : line_start]


def parse_text(body: str, exclude: set[str]) -> tuple[list[TextRecipient], str, str]:
    """(recipients with their texts, error section, quoted original) of a bounce body.

    ``exclude`` holds lower-cased addresses that are not failed recipients (the bounce's
    own From / To, the original sender, Message-IDs).
    """
    errors, quoted = split_original(body)
    spans: list[tuple[str, int]] = []
    mentions: list[tuple[int, str]] = []  # every mention of a kept address
    seen: set[str] = set()
    for m in ADDRESS_RE.finditer(errors):
        address = m.group(0).rstrip(".")
        low = address.lower()
        before = errors[max(0, m.start() - 14) : m.start()].lower()
        if low in exclude or _DAEMON.match(low) or "message-id" in before or "from:" in before:
            continue
        mentions.append((m.start(), low))
        if low in seen:
            continue
        seen.add(low)
        spans.append((address, m.start()))
    results = [(m.start(), m.end()) for m in _RESULT_LINE.finditer(errors)]
    recipients = []
    for i, (address, start) in enumerate(spans):
        result = _result_text(errors, results, start)
        if result is not None:
            recipients.append(TextRecipient(address, _squeeze(result)))
            continue
        # up to the next mention of another address: a report that explains each address
        # twice (in two languages, say) must not lend one address the other's reason
        low = address.lower()
        end = next((p for p, a in mentions if p > start and a != low), len(errors))
        block = errors[start:end]
        if not _SMTPISH.search(block) and len(block.split()) < 6 and i + 1 < len(spans):
            # "the following addresses failed: a, b" then one shared reason further down
            block = errors[start:]
        recipients.append(TextRecipient(address, _squeeze(lead_of(errors, start) + block)))
    return recipients, _squeeze(errors), quoted


def _result_text(errors: str, results: list[tuple[int, int]], start: int) -> str | None:
    """When an address is first named by a Sendmail result line, that line and the session
    it ends ("While talking to ..." since the previous result line); else ``None``."""
    for n, (line_start, line_end) in enumerate(results):
        if line_start <= start < line_end:
            end = errors.find("\n", line_end)
            end = len(errors) if end < 0 else end
            since = results[n - 1][1] if n else 0
            talks = list(_TALKING_TO.finditer(errors, since, line_start))
            begin = talks[-1].start() if talks else line_start
            return errors[begin:end]
    return None
