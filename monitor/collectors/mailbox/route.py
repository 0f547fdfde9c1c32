"""One inbound email -> what it is, the events it makes for its original, and its record.

    routed = route(data, mailbox="support", role="replies", linker=StoreLinker(store),
                   source="mailbox:support", received_at=arrived)
    routed.category          # bounce, complaint, auto_reply, reply or unmatched
    routed.events            # bounced / complained / auto_replied / replied, for the original

The reports are read by the mail collector (:func:`monitor.collectors.mail.dsn.parse`:
RFC 3464 DSNs and plain-text bounces, RFC 5965 ARF, RFC 3834 auto-replies) and turned
into events by :func:`monitor.collectors.mail.events.report_events`; what is left is a
human's mail, a reply when it answers something (thread headers, a ``Re:`` subject, a
token) or reached the no-reply address, unmatched otherwise.

The original is found, best first: the report's own copy of it (a DSN's returned
headers), ``In-Reply-To`` then ``References`` newest first (RFC 5322 section 3.6.4), a
token or a VERP recipient in the plus-addressed address the mail came to, a token quoted
in the body.  Never raises: what could not be read is in the record's ``error``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message

from monitor.collectors.mail.dsn import DEFAULT_MAX_BYTES, Report, looks_like_bounce, parse
from monitor.collectors.mail.events import report_events
from monitor.collectors.mail.mime import ADDRESS_RE, header, parse_bytes, parse_date, part_text
from monitor.collectors.mail.original import verp_recipient
from monitor.collectors.mailbox.links import Linker
from monitor.collectors.mailbox.records import InboundMessage
from monitor.collectors.mailbox.tokens import address_token, text_token
from monitor.collectors.mta.postfix_lines import clean_message_id
from monitor.model import Event, EventType, event_id, second_prefix
from monitor.provider_rules import ProviderRules

__all__ = ["ROLES", "Routed", "has_reply_prefix", "message_ids", "normal_subject", "route"]

#: What a mailbox is for; ``noreply`` flags every human message that reaches it.
ROLES = ("bounces", "fbl", "replies", "noreply")

_REPORT_CATEGORY = {"dsn": "bounce", "bounce": "bounce", "arf": "complaint",
                    "autoreply": "auto_reply"}  # fmt: skip
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|vs|antw|réf|ref|odp|r)\s*(?:\[\d+\])?\s*:\s*)+",
                           re.I)  # fmt: skip
_PREFIXES = re.compile(
    r"^\s*(?:(?:re|fwd?|aw|wg|sv|vs|tr|antw|réf|ref|odp|r|rv|enc)\s*(?:\[\d+\])?\s*:\s*)+", re.I
)
_ID = re.compile(r"<([^<>\s]+)>")
_LAST_ATTEMPT = re.compile(rb"^last-attempt-date:", re.I | re.M)
_TEXT_SCAN = 256 * 1024  # of body text searched for a quoted token


@dataclass(slots=True)
class Routed:
    """What one inbound message is and what it makes."""

    category: str
    record: InboundMessage
    events: list[Event] = field(default_factory=list)


def message_ids(value: str | None) -> list[str]:
    """The Message-IDs of an ``In-Reply-To`` / ``References`` field, in order."""
    if not value:
        return []
    found = [m for m in (clean_message_id(f"<{x}>") for x in _ID.findall(value)) if m]
    if not found and value.strip() and " " not in value.strip():
        one = clean_message_id(value.strip())  # a bare id some clients write
        return [one] if one else []
    return found


def has_reply_prefix(subject: str | None) -> bool:
    """Whether ``subject`` starts with ``Re:`` or a language's form of it."""
    return bool(_REPLY_PREFIX.match(subject or ""))


def normal_subject(subject: str | None) -> str | None:
    """The subject without reply and forward prefixes, spaces folded, lower case."""
    if not subject:
        return None
    text = " ".join(_PREFIXES.sub("", subject).split()).lower()
    return text or None


def _address(value: str | None) -> str | None:
    found = ADDRESS_RE.search(value or "")
    return found.group(0) if found else None


def _body_text(message: Message) -> str:
    """The text parts, up to a bound: where a reply quotes what it answers."""
    out: list[str] = []
    size = 0
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        text = part_text(part, [])
        out.append(text[: _TEXT_SCAN - size])
        size += len(out[-1])
        if size >= _TEXT_SCAN:
            break
    return "\n".join(out)


def route(
    data: bytes,
    *,
    mailbox: str,
    role: str,
    linker: Linker,
    source: str,
    received_at: datetime | None = None,
    raw_ref: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    provider_rules: ProviderRules | None = None,
) -> Routed:
    """Route one email (at most ``max_bytes`` of it are read)."""
    report = parse(data, max_bytes=max_bytes, provider_rules=provider_rules)
    defects: list[str] = []
    message = parse_bytes(data[:max_bytes], defects)
    arrived = received_at or datetime(1970, 1, 1, tzinfo=UTC)
    own_id = clean_message_id(header(message, "Message-ID") or "") or (
        "digest:" + event_id("inbound", "", data[:65536].hex())[:24])
    in_reply_to = message_ids(header(message, "In-Reply-To"))
    references = message_ids(header(message, "References"))
    subject = header(message, "Subject")
    sender = _address(header(message, "From"))
    when = parse_date(header(message, "Date")) or arrived
    category = _REPORT_CATEGORY.get(report.kind, "")
    if category == "bounce" and not report.recipients:
        category = ""  # bounce-like words, nobody named: not a bounce we can use
    if report.kind == "bounce" and role != "bounces" and not looks_like_bounce(
            header(message, "From"), subject):  # fmt: skip
        # a plain-text "bounce" read from a person's mail (its VERP-like reply address, an
        # error code quoted): outside the bounce mailbox only a mail system's counts
        category = ""
    text = _body_text(message) if not category or not report.original.message_id else ""
    token = address_token(header(message, n) for n in
                           ("Delivered-To", "X-Original-To", "To", "Cc", "Return-Path"))
    quoted = text_token(text) if text else None
    if not category:
        answers = bool(in_reply_to or references or quoted or token) or bool(
            _REPLY_PREFIX.match(subject or ""))
        category = "reply" if answers or role == "noreply" else "unmatched"
    linked, link = _link(report, category, in_reply_to, references, token, quoted, message,
                         linker, when)  # fmt: skip
    events: list[Event] = []
    if category in ("bounce", "complaint", "auto_reply"):
        events = report_events(report, source, raw_ref=raw_ref, received_at=arrived)
        if linked:
            events = [e if e.message_id else e.replace(message_id=linked) for e in events]
        if category == "bounce" and report.date and not _LAST_ATTEMPT.search(data[:max_bytes]):
            # Without Last-Attempt-Date the parser dates a failure at the original's arrival
            # at the reporting MTA; an asynchronous bounce happened later, when the report was
            # written, and must sort after the delivery it undoes.
            events = [dataclasses.replace(e, occurred_at=report.date, id="")
                      if e.occurred_at < report.date else e for e in events]  # fmt: skip
    elif category == "reply" and linked and sender:
        to = linker.recipients(linked)
        who = sender if sender.lower() in {t.lower() for t in to} or len(to) != 1 else to[0]
        # The reply's own Message-ID is part of the id: two replies of one person in one
        # second are two replies.
        seconds = f"{when.timestamp():.6f}"
        ident = second_prefix(seconds) + event_id(source, "replied", seconds, own_id, linked,
                                                  who)[:24]  # fmt: skip
        events = [Event(type=EventType.REPLIED, occurred_at=when, source=source,
                        message_id=linked, recipient=who,
                        tags=("to_noreply",) if role == "noreply" else (), raw_ref=raw_ref,
                        id=ident)]  # fmt: skip
    problems = [*report.defects, *(d for d in defects if d not in report.defects)]
    error = None
    if report.truncated:
        error = f"cut at {max_bytes} bytes"
    if problems:
        error = "; ".join(filter(None, [error, ", ".join(problems[:5])]))[:500]
    record = InboundMessage(
        source, when, mailbox=mailbox, message_id=own_id[:998], category=category,
        link=link, linked_message_id=linked, in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=tuple(references[-50:]), subject=normal_subject(subject),
        reply_prefix=bool(_REPLY_PREFIX.match(subject or "")), sender=sender,
        to_noreply=role == "noreply" and category == "reply", events=len(events), error=error,
    )  # fmt: skip
    return Routed(category, record, events)


def _link(
    report: Report,
    category: str,
    in_reply_to: list[str],
    references: list[str],
    token: str | None,
    quoted: str | None,
    message: Message,
    linker: Linker,
    when: datetime,
) -> tuple[str | None, str]:
    """(the original's Message-ID, how it was found) or (None, "none")."""
    if category in ("bounce", "complaint") and report.original.message_id:
        return report.original.message_id, "report"
    if category == "unmatched":
        return None, "none"
    if in_reply_to and (found := linker.known(in_reply_to)):
        return found, "in-reply-to"
    if references and (found := linker.known(list(reversed(references)))):
        return found, "references"
    if category == "auto_reply" and report.original.message_id:
        return report.original.message_id, "in-reply-to"
    if token and (hit := linker.by_token(token)):
        return hit[0], "verp"
    recipient = verp_recipient(*(header(message, n) for n in
                                 ("Delivered-To", "X-Original-To", "To", "Return-Path")))
    if recipient and (found := linker.latest_to(recipient, when.timestamp())):
        return found, "verp"
    if quoted and (hit := linker.by_token(quoted)):
        return hit[0], "token"
    return None, "none"
