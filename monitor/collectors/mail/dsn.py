"""Inbound reports -> per-recipient verdicts: DSNs, plain-text bounces, ARF, auto-replies.

    report = parse(Path("bounce.eml").read_bytes())
    for r in report.recipients:
        print(r.recipient, r.status, r.reason, r.hard, report.original.message_id)

One entry point, :func:`parse`, reads one email (bytes, at most ``max_bytes``) and never
raises: what it had to repair is listed in ``Report.defects`` and ``Report.truncated``
says the input was cut.  In order it recognises

1. RFC 3464 delivery status notifications (``message/delivery-status``, also the RFC 6533
   ``message/global-delivery-status``): one block per recipient (section 2.3) with
   ``Final-Recipient``, ``Original-Recipient``, ``Action``, ``Status``, ``Remote-MTA``,
   ``Diagnostic-Code``, ``Last-Attempt-Date``; per message (section 2.2)
   ``Original-Envelope-Id``, ``Reporting-MTA``, ``Arrival-Date`` and Postfix's
   ``X-Postfix-Queue-ID``.  A block without a ``Diagnostic-Code`` takes its text from the
   human-readable part (:mod:`monitor.collectors.mail.plaintext`);
2. Amazon SES notifications mailed as JSON (:mod:`monitor.collectors.mail.sesjson`);
3. RFC 5965 feedback reports (:mod:`monitor.collectors.mail.arf`) -> ``feedback``;
4. plain-text bounces from MTAs and providers (:mod:`monitor.collectors.mail.plaintext`);
5. RFC 3834 auto-replies (:mod:`monitor.collectors.mail.autoreply`) -> ``vacation``.

Each failed recipient is classified (:func:`monitor.collectors.mail.report.classify_recipient`)
by the engine with the reply code, the status, the text, the SMTP command it answered and
the Remote-MTA host (the engine picks the provider's own rules from it).  The original
message (:mod:`monitor.collectors.mail.original`) lets the result join the original delivery
(:func:`monitor.collectors.mail.events.report_events`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from email.message import Message
from email.parser import HeaderParser

from monitor.collectors.mail import arf, autoreply
from monitor.collectors.mail.mime import (
    ADDRESS_RE,
    header,
    header_items,
    parse_bytes,
    parse_date,
    part_text,
    strip_angle,
)
from monitor.collectors.mail.original import OriginalMessage, find_original
from monitor.collectors.mail.plaintext import TextRecipient, lead_of, parse_text, split_original
from monitor.collectors.mail.report import RecipientReport, Report, classify_recipient, host_of
from monitor.collectors.mail.sesjson import from_ses, ses_notification
from monitor.provider_rules import ProviderRules, packaged_rules

__all__ = ["DEFAULT_MAX_BYTES", "RecipientReport", "Report", "looks_like_bounce", "parse"]

#: Read at most this much of one email (DESIGN: never memory proportional to attachments).
DEFAULT_MAX_BYTES = 10 * 1024 * 1024

_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_BOUNCE_FROM = re.compile(
    r"mailer-daemon|postmaster|mail delivery|mail-daemon|maildaemon|double-bounce|"
    r"microsoftexchange|mail administrator|mailmaster|bounce",
    re.I,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|non.?deliver|returned mail|delivery (?:status|fail|notification|has failed)"
    r"|failure notice|mail delivery|delivery problem|could not be delivered|not delivered"
    r"|rejected|failed|warning: could not send|message status|bounce|delayed mail|error",
    re.I,
)


def looks_like_bounce(from_: str | None, subject: str | None) -> bool:
    """Whether a sender and subject are a mail system's (MAILER-DAEMON, "Undeliverable")."""
    return bool(_BOUNCE_FROM.search(from_ or "")) or bool(_BOUNCE_SUBJECT.search(subject or ""))


def parse(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, provider_rules: ProviderRules | None = None
) -> Report:
    """Parse one email into per-recipient verdicts; never raises.

    ``provider_rules`` (the configured ones; None: the packaged ones) name the provider
    whose mail system wrote a report and the provider of a remote MTA.
    """
    truncated = len(data) > max_bytes
    if truncated:
        data = data[:max_bytes]
    defects: list[str] = []
    try:
        rules = provider_rules if provider_rules is not None else packaged_rules()
        report = _parse(data, defects, rules)
    except Exception as exc:  # a last resort: the parsers are meant not to raise
        defects.append(f"internal error: {type(exc).__name__}: {exc}")
        report = Report("unknown")
    report.truncated = truncated
    report.defects = defects
    return report


def _parse(data: bytes, defects: list[str], rules: ProviderRules) -> Report:
    message = parse_bytes(data, defects)
    dsn_part = next((p for p in message.walk() if p.get_content_type() in _DSN_TYPES), None)
    base = Report(
        "unknown",
        date=parse_date(header(message, "Date")),
        message_id=_clean_id(header(message, "Message-ID")),
        addressed_to=_first_address(header(message, "To")),
    )
    if dsn_part is not None:
        report = _from_dsn(message, dsn_part, base, defects, rules)
        report.nested = _nested(dsn_part, message, rules)
        return report
    if arf.is_feedback(message):
        return _from_arf(message, base, defects)
    if not message.is_multipart():
        notification = ses_notification(part_text(message, defects))
        if notification is not None:
            return from_ses(notification, base, rules)
    from_ = header(message, "From") or ""
    subject = header(message, "Subject") or ""
    bounce_like = bool(_BOUNCE_FROM.search(from_)) or bool(_BOUNCE_SUBJECT.search(subject))
    if not bounce_like and autoreply.is_autoreply(message):
        return _from_autoreply(message, base, defects)
    fields = _fields_in_text(message, defects)
    if fields is not None:
        defects.append("delivery-status fields outside a message/delivery-status part")
        return _from_dsn(message, fields, base, defects, rules)
    report = _from_text(message, base, defects, rules)
    if not report.recipients and not bounce_like and autoreply.is_autoreply(message):
        return _from_autoreply(message, base, defects)
    return report


_FIELDS_START = re.compile(
    r"^(?:Reporting-MTA|Original-Recipient|Final-Recipient):[ \t]*\S", re.I | re.M
)


def _fields_in_text(message: Message, defects: list[str]) -> Message | None:
    """The delivery-status fields of a DSN whose MIME structure broke (a boundary the
    parser did not see), as a part :func:`_blocks` reads; ``None`` when the text has no
    ``Final-Recipient`` field."""
    text = _human_text(message, [])
    if not re.search(r"^Final-Recipient:[ \t]*\S", text, re.I | re.M):
        return None
    start = _FIELDS_START.search(text)
    assert start is not None
    body = text[start.start() :]
    end = re.search(r"^[ \t]*--\S|^(?:Received|Return-Path|Content-Type):", body, re.I | re.M)
    part = Message()
    part.set_payload(body[: end.start()] if end else body)
    return part


def _nested(outer: Message, message: Message, rules: ProviderRules) -> list[RecipientReport]:
    """The recipients of the first DSN inside a returned message (not ``outer`` itself)."""
    for part in message.walk():
        if part.get_content_type() not in ("message/rfc822", "message/global"):
            continue
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(inner, Message):
            continue
        dsn = next((p for p in inner.walk() if p.get_content_type() in _DSN_TYPES), None)
        if dsn is not None and dsn is not outer:
            return _from_dsn(inner, dsn, Report("unknown"), [], rules).recipients
    return []


def _original_recipient(fields: dict[str, str], address: str | None, context: str) -> str | None:
    """Original-Recipient; when it only repeats the final one, the alias the text names."""
    given = strip_angle(fields.get("original-recipient"))
    if given and given.lower() != (address or "").lower():
        return given
    return _expanded_from(context) or given


def _name_alias(report: Report, errors: str) -> None:
    """Sendmail names the alias above its failed pipe or file, "(expanded from: <a@b>)":
    with one recipient and no Original-Recipient, that is its original address."""
    expanded = _expanded_from(errors)
    if expanded and len(report.recipients) == 1 and not report.recipients[0].original_recipient:
        report.recipients[0] = replace(report.recipients[0], original_recipient=expanded)


def _sections(text: str, addresses: list[str]) -> dict[str, str]:
    """Each address -> the text from its first mention up to the next address's."""
    low = text.lower()
    starts = sorted(
        (i, a.lower()) for a in dict.fromkeys(addresses) if (i := low.find(a.lower())) >= 0
    )
    out = {}
    for n, (start, address) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(text)
        out[address] = " ".join((lead_of(text, start) + text[start:end]).split())[:4000]
    return out


def _first_address(value: str | None) -> str | None:
    found = ADDRESS_RE.search(value or "")
    return found.group(0) if found else None


def _clean_id(value: str | None) -> str | None:
    if not value:
        return None
    from monitor.collectors.mta.postfix_lines import clean_message_id

    return clean_message_id(value)


def _human_text(message: Message, defects: list[str]) -> str:
    """The report's text for people: its text parts before the original message."""
    texts: list[str] = []
    for part in message.walk():
        # "text/plain\n   charset=..." (the ";" forgotten) is still text/plain
        ctype = part.get_content_type().split()[0]
        if ctype in ("message/rfc822", "message/global", "text/rfc822-headers") or (
            ctype in _DSN_TYPES
        ):
            break
        if part.is_multipart():
            continue
        if ctype.startswith("multipart/"):  # its boundary was lost: its parts are one text
            raw = part.get_payload()
            texts.append(raw if isinstance(raw, str) else "")
            continue
        if ctype == "text/plain" or (ctype == "text/html" and not texts):
            text = part_text(part, defects)
            if ctype == "text/html":
                text = re.sub(r"<[^>]*>", " ", re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", text))
            texts.append(text)
    if not texts and not message.is_multipart():
        texts.append(part_text(message, defects))
    return "\n".join(texts)


def _blocks(part: Message, defects: list[str]) -> list[list[tuple[str, str]]]:
    """The field blocks of a delivery-status part, each a list of (lower name, value)."""
    payload = part.get_payload()
    subs: list[Message] = []
    if isinstance(payload, list):
        subs = [p for p in payload if isinstance(p, Message)]
    else:  # a part the stdlib left as text (e.g. a transfer encoding): parse it ourselves
        text = part_text(part, defects).replace("\r\n", "\n")
        for chunk in re.split(r"\n[ \t]*\n", text):
            if chunk.strip():
                subs.append(HeaderParser().parsestr(chunk.lstrip() + "\n\n", headersonly=True))
    blocks = []
    for sub in subs:
        blocks.extend(_per_recipient(header_items(sub)))
    return blocks


_RECIPIENT_FIELDS = ("final-recipient", "original-recipient")


def _per_recipient(fields: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """One block split where another recipient's fields start without the blank line
    RFC 3464 section 2 puts between them: at a recipient field the block already holds."""
    out: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for name, value in fields:
        if name in _RECIPIENT_FIELDS and any(n == name for n, _ in current):
            carried = []
            if (
                len(current) > 1
                and current[-1][0] == "original-recipient"
                and current[-2][0] != "final-recipient"
            ):
                carried = [current.pop()]  # the next recipient's, given before its Final-
            out.append(current)
            current = carried
        current.append((name, value))
    if current:
        out.append(current)
    return out


def _expanded_from(text: str) -> str | None:
    """Sendmail and Postfix name an alias's original address: "(expanded from: <a@b>)"."""
    m = re.search(r"expanded\s+from:?\s*<(" + ADDRESS_RE.pattern + ")>", text, re.I)
    return m.group(1) if m else None


def _exclusions(message: Message, original: OriginalMessage) -> set[str]:
    out = set()
    for name in ("From", "To", "Return-Path", "Sender", "Reply-To"):
        for m in ADDRESS_RE.finditer(header(message, name) or ""):
            out.add(m.group(0).lower())
    for value in (original.sender, original.message_id):
        if value:
            out.add(value.lower())
    return out


def _from_dsn(
    message: Message, part: Message, base: Report, defects: list[str], rules: ProviderRules
) -> Report:
    blocks = _blocks(part, defects)
    per_message = dict(blocks[0]) if blocks else {}
    people = [
        b for b in blocks if any(k in ("final-recipient", "original-recipient") for k, _ in b)
    ]
    if not people:
        people = blocks[1:] if len(blocks) > 1 else blocks
        if people:
            defects.append("delivery-status without Final-Recipient")
    human = _human_text(message, defects)
    base.kind = "dsn"
    base.reporting_mta = host_of(per_message.get("reporting-mta"))
    base.original = find_original(
        message,
        quoted_text=human,
        envelope_id=per_message.get("original-envelope-id"),
        queue_id=per_message.get("x-postfix-queue-id"),
        defects=defects,
    )
    texts, errors, _ = parse_text(human, _exclusions(message, base.original))
    by_address = {t.recipient.lower(): t.diagnostic for t in texts}
    # a reply may quote other addresses ("... (a@b) [0]"): cut the text at the report's
    # own recipients only, so each keeps its whole explanation
    finals = [a for b in people if (a := strip_angle(dict(b).get("final-recipient")))]
    by_address |= _sections(split_original(human)[0], finals)
    arrival = parse_date(per_message.get("arrival-date"))
    provider = _sender_provider(message, rules)  # the provider's own mail system wrote the report
    for block in people:
        fields = dict(block)
        address = strip_angle(fields.get("final-recipient")) or strip_angle(
            fields.get("original-recipient")
        )
        diagnostic = " ".join((strip_angle(fields.get("diagnostic-code")) or "").split())
        context = by_address.get((address or "").lower(), "") or errors
        base.recipients.append(
            classify_recipient(
                address,
                action=fields.get("action"),
                status_field=fields.get("status"),
                diagnostic=diagnostic,
                context=context,
                original_recipient=_original_recipient(fields, address, context),
                remote_mta=host_of(fields.get("remote-mta")),
                last_attempt=parse_date(fields.get("last-attempt-date")) or arrival,
                diagnostic_type=fields.get("diagnostic-code", "").partition(";")[0].strip(),
                provider=provider,
                mta_category=fields.get("x-powermta-bouncecategory"),
                provider_rules=rules,
            )
        )
    _name_alias(base, errors)
    named = _failed_recipients(message) or [t.recipient for t in texts]
    if base.recipients and named and any(r.recipient is None for r in base.recipients):
        defects.append("delivery-status block without a recipient; named from the text")
        for i, r in enumerate(base.recipients):
            if r.recipient is None and i < len(named):
                base.recipients[i] = replace(r, recipient=named[i])
    if not base.recipients and named:
        defects.append("delivery-status without recipients; read from the text")
        texts = texts or [TextRecipient(a, errors) for a in named]
        for t in texts:
            base.recipients.append(
                classify_recipient(
                    t.recipient,
                    action=None,
                    status_field=None,
                    diagnostic=t.diagnostic,
                    context=errors,
                    provider_rules=rules,
                )
            )
    return base


def _from_text(message: Message, base: Report, defects: list[str], rules: ProviderRules) -> Report:
    body = _human_text(message, defects)
    first = find_original(message, defects=defects)
    texts, errors, quoted = parse_text(body, _exclusions(message, first))
    if not texts:  # a bounce of a message the sender sent to itself: keep From / To
        texts, errors, quoted = parse_text(body, {first.message_id or ""})
    failed = _failed_recipients(message)
    if failed:  # Exim and Google name the failed addresses in a header: trust it
        by_address = {t.recipient.lower(): t.diagnostic for t in texts}
        texts = [TextRecipient(a, by_address.get(a.lower(), errors)) for a in failed]
    base.original = find_original(
        message,
        quoted_text=quoted,
        queue_id=_queue_id(body),
        defects=defects,
    )
    known = {base.original.sender.lower()} if base.original.sender else set()
    texts = [t for t in texts if t.recipient.lower() not in known] or texts
    base.kind = "bounce" if texts or errors else "unknown"
    provider = _sender_provider(message, rules)
    for t in texts:
        base.recipients.append(
            classify_recipient(
                t.recipient,
                action=None,
                status_field=None,
                diagnostic=t.diagnostic,
                context=errors,
                provider=provider,
                original_recipient=_expanded_from(t.diagnostic),
                provider_rules=rules,
            )
        )
    _name_alias(base, errors)
    if not base.recipients:
        fallback = base.original.verp_recipient or base.original.to
        if fallback and errors:
            base.recipients.append(
                classify_recipient(
                    fallback,
                    action=None,
                    status_field=None,
                    diagnostic=errors,
                    provider_rules=rules,
                )
            )
    return base


def _failed_recipients(message: Message) -> list[str]:
    """``X-Failed-Recipients`` (Exim, Gmail): the addresses that failed, as the MTA says."""
    value = header(message, "X-Failed-Recipients") or ""
    return list(dict.fromkeys(m.group(0) for m in ADDRESS_RE.finditer(value)))


def _sender_provider(message: Message, rules: ProviderRules) -> str | None:
    """The provider whose mail system wrote a plain-text bounce (its ``From`` domain)."""
    found = ADDRESS_RE.search(header(message, "From") or "")
    provider = rules.for_domain(found.group(0).rpartition("@")[2].lower()) if found else None
    return provider.value if provider else None


def _queue_id(text: str) -> str | None:
    m = re.search(r"(?:postfix )?queue id:?\s*([0-9A-F]{6,20})\b", text, re.I)
    return m.group(1) if m else None


def _from_arf(message: Message, base: Report, defects: list[str]) -> Report:
    fields = arf.feedback_fields(message, defects)
    base.kind = "arf"
    base.feedback = fields
    base.original = find_original(message, defects=defects)
    when = parse_date(fields.arrival_date)
    recipients = fields.recipients or ((base.original.to,) if base.original.to else ())
    for address in recipients or (None,):
        base.recipients.append(
            RecipientReport(
                recipient=address,
                reason="feedback",
                hard=False,
                blame="reputation",
                rule=f"rfc5965.{fields.feedback_type}",
                action=fields.feedback_type,
                last_attempt=when,
            )
        )
    return base


def _from_autoreply(message: Message, base: Report, defects: list[str]) -> Report:
    base.kind = "autoreply"
    base.original = find_original(message, defects=defects)
    base.recipients.append(
        RecipientReport(
            recipient=autoreply.away_address(message),
            reason="vacation",
            hard=False,
            blame="recipient",
            rule="rfc3834.auto-replied",
            diagnostic=header(message, "Subject"),
        )
    )
    return base
