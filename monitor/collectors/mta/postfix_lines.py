"""Pure helpers that read one Postfix log message (the text after ``prog[pid]: ``).

Nothing here keeps state: queue-id splitting, delivery status lines, reject lines,
reply codes and Message-ID cleanup.  :mod:`monitor.collectors.mta.postfix` correlates.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from typing import NamedTuple

from monitor.collectors.mta.smtp import ENHANCED, ENHANCED_AFTER_CODE, normalize_address

__all__ = [
    "CLIENT_LINE",
    "MESSAGE_ID_LINE",
    "QUEUED_LINE",
    "Reject",
    "Status",
    "clean_message_id",
    "normalize_address",
    "parse_reject",
    "parse_status",
    "parse_status_line",
    "reply_of",
    "split_queue_id",
]

# Short ids are hex (enable_long_queue_ids=no); long ids mix digits and both cases.
_QID = r"([0-9A-F]{5,24}|[0-9A-Za-z]{11,24}): "
_QUEUE_ID = re.compile(r"([0-9A-F]{5,24}|[0-9A-Za-z]{11,24}|NOQUEUE): ")

# The delivery status line as Postfix >= 2.3 writes it (fields in this order); anything
# else goes through the field-by-field reader below.  Negated classes keep it fast.
_STATUS_TAIL = (
    r"to=<([^>]*)>, (?:orig_to=<([^>]*)>, )?relay=([^, ]+), (?:conn_use=[0-9]+, )?"
    r"delay=([0-9.]+), (?:delays=[^, ]+, )?(?:tls=[^, ]+, )?(?:dsn=([245][.][0-9.]+), )?"
    r"status=([^ ]+)(?: \((.*)\))?$"
)
_STATUS = re.compile(_STATUS_TAIL)
_STATUS_LINE = re.compile(_QID + _STATUS_TAIL)

#: The most frequent lines, each read whole by one match: (queue id, value...).
CLIENT_LINE = re.compile(_QID + r"client=([^,]*)")
MESSAGE_ID_LINE = re.compile(_QID + r"message-id=(.*)")
QUEUED_LINE = re.compile(_QID + r"from=<([^>]*)>, size=([0-9]+), nrcpt=[0-9]+ \(queue active\)$")
_FIELD = re.compile(r"(\w+)=(<[^>]*>|[^,\s]*)")
_DSN = re.compile(ENHANCED + "$")

# RFC 5321 section 4.2 reply code, then an RFC 3463 enhanced code (written "#5.1.1" by some).
_CODE = re.compile(r"([2-5][0-9][0-9])(?![0-9.])" + ENHANCED_AFTER_CODE)
_ENHANCED = re.compile("#?(" + ENHANCED + r")(?![0-9.])")

# "ACTION: STAGE from CLIENT: TEXT; from=<s> to=<r> proto=... helo=<h>" (smtpd, postscreen,
# milters); logwatch's samples pad the columns with spaces, so whitespace runs are allowed.
_REJECT = re.compile(r"([\w-]+):\s+([\w-]+)\s+from\s+(\S+?):\s+(.*)$")
# cleanup header/body checks: "ACTION: header NAME: VALUE from CLIENT; from=<s> to=<r> ...: TEXT"
_CONTENT = re.compile(r"([\w-]+):\s+(header|body|content|mime-header|nested-header)\s+(.*)$")
_CONTENT_FROM = re.compile(r"(.*) from (\S+|local);\s+(.*)$")
# Before-queue content filter: "proxy-reject: END-OF-MESSAGE: TEXT; from=<s> to=<r> ..."
_PROXY = re.compile(r"(proxy-reject|proxy-accept):\s+([\w-]+):\s*(.*)$")
_TRAILER = re.compile(r";\s*(?=(?:from|to|proto|helo)=)")
_FROM = re.compile(r"from=<([^>]*)>")
_TO = re.compile(r"to=<([^>]*)>")

# RFC 2047 encoded words, as cleanup logs a Message-ID header that a client encoded.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")


#: A delivery status line: recipient, orig_recipient, relay, delay, dsn, status and the
#: text inside the outer parentheses (a plain tuple: this runs once per delivery attempt).
Status = tuple[str | None, str | None, str | None, float | None, str | None, str, str | None]


class Reject(NamedTuple):
    """A refused (or otherwise acted on) SMTP command or message."""

    action: str  # reject, milter-reject, proxy-reject, reject_warning, discard, hold, ...
    stage: str  # RCPT, DATA, END-OF-MESSAGE, CONNECT, header, body, ...
    client: str | None
    text: str | None
    sender: str | None
    recipient: str | None


def split_queue_id(message: str) -> tuple[str | None, str]:
    """``("3D74ADB7400B", "to=<...>...")`` from ``"3D74ADB7400B: to=<...>..."``."""
    m = _QUEUE_ID.match(message)
    if m is None:
        return None, message
    return m.group(1), message[m.end() :]


def _bare(value: str | None) -> str | None:
    if value and value[0] == "<" and value[-1] == ">":
        return value[1:-1]
    return value


def parse_status_line(message: str) -> tuple[str, Status] | None:
    """``(queue id, status)`` from ``"QID: to=<...>, ..., status=..."``, or None."""
    m = _STATUS_LINE.match(message)
    if m is not None:
        qid, to, orig, relay, delay, dsn, status, text = m.groups()
        try:
            seconds: float | None = float(delay)
        except ValueError:  # "1.2.3"
            seconds = None
        return qid, (
            normalize_address(to),
            normalize_address(orig) if orig else None,
            relay,
            seconds,
            dsn,
            status,
            text,
        )
    qid, body = split_queue_id(message)
    if qid is None or "status=" not in body:
        return None
    fields = parse_status(body)
    return None if fields is None else (qid, fields)


def parse_status(body: str) -> Status | None:
    """The fields of a delivery status line, or None when ``body`` is not one."""
    m = _STATUS.match(body)
    if m is not None:
        to, orig, relay, delay, dsn, status, text = m.groups()
        return (
            normalize_address(to),
            normalize_address(orig),
            relay,
            _number(delay),
            dsn,
            status,
            text,
        )
    at = body.find("status=")
    if at < 0:
        return None
    fields = dict(_FIELD.findall(body, 0, at))
    to = fields.get("to")
    if to is None:
        # "user@example.com, relay=...": seen from relays that drop the "to=<...>".
        first = body[:at].split(",", 1)[0].strip()
        if not first or "=" in first or " " in first:
            return None
        to = first
    status, _, rest = body[at + 7 :].partition(" ")
    if not status:
        return None
    rest = rest.strip()
    if rest.startswith("(") and rest.endswith(")"):
        rest = rest[1:-1]
    dsn = fields.get("dsn")
    return (
        normalize_address(_bare(to)),
        normalize_address(_bare(fields.get("orig_to"))),
        fields.get("relay") or None,
        _number(fields.get("delay")),
        dsn if dsn and _DSN.match(dsn) else None,
        status,
        rest or None,
    )


def _number(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def reply_of(text: str | None) -> tuple[int | None, str | None]:
    """The SMTP reply code and enhanced status code a diagnostic text carries."""
    if not text:
        return None, None
    m = _CODE.match(text)  # "250 2.0.0 Ok: queued as ..." from sent lines
    if m is not None:
        return int(m.group(1)), m.group(2)
    at = text.find("said: ")
    if at < 0:
        at = text.find("to me: ")  # "... refused to talk to me: 421 ..."
        if at < 0:
            # Milters answer with an enhanced code alone: "5.7.1 Blocked by SpamAssassin".
            m = _ENHANCED.match(text)
            return (None, m.group(1)) if m is not None else (None, None)
        at += 1
    m = _CODE.match(text, at + 6)
    return (int(m.group(1)), m.group(2)) if m is not None else (None, None)


def parse_reject(body: str) -> Reject | None:
    """An ``ACTION: STAGE from CLIENT: TEXT; from=<s> to=<r> ...`` line, or None."""
    m = _REJECT.match(body)
    if m is not None:
        action, stage, client, rest = m.groups()
        text, trailer = _split_trailer(rest)
        return Reject(action, stage, client, text, *_envelope(trailer))
    m = _CONTENT.match(body)
    if m is not None:
        action, stage, rest = m.groups()
        found = _CONTENT_FROM.match(rest)
        if found is None:
            return Reject(action, stage, None, rest.strip() or None, None, None)
        what, client, trailer = found.groups()
        # The optional text of the check follows the envelope: "... helo=<h>: TEXT".
        colon = trailer.find(">: ")
        text = trailer[colon + 3 :].strip() if colon >= 0 else ""
        return Reject(action, stage, client, text or what.strip(), *_envelope(trailer))
    m = _PROXY.match(body)
    if m is not None:
        action, stage, rest = m.groups()
        text, trailer = _split_trailer(rest)
        return Reject(action, stage, None, text, *_envelope(trailer))
    return None


def _split_trailer(rest: str) -> tuple[str | None, str]:
    m = _TRAILER.search(rest)
    if m is None:
        return rest.strip() or None, ""
    return rest[: m.start()].strip() or None, rest[m.end() :]


def _envelope(trailer: str) -> tuple[str | None, str | None]:
    if not trailer:
        return None, None
    sender = _FROM.search(trailer)
    recipient = _TO.search(trailer)
    return (
        sender.group(1) if sender else None,
        normalize_address(recipient.group(1)) if recipient else None,
    )


def clean_message_id(value: str) -> str | None:
    """A Message-ID without its angle brackets; RFC 2047-encoded ids are decoded."""
    if value[:1] == "<" and value[-1:] == ">" and value.find(">") == len(value) - 1:
        return value[1:-1].strip() or None  # the usual "<local@domain>"
    value = value.strip()
    if value.startswith("=?"):
        value = _decode_words(value)
    start = value.find("<")
    if start >= 0:
        end = value.find(">", start + 1)
        value = value[start + 1 : end] if end > 0 else value[start + 1 :]
    value = value.strip()
    return value or None


def _decode_words(value: str) -> str:
    parts: list[str] = []
    for charset, encoding, data in _ENCODED_WORD.findall(value):
        try:
            if encoding in "Bb":
                raw = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
            else:
                raw = quopri.decodestring(data.replace("_", " "), header=True)
            parts.append(raw.decode(charset, "replace"))
        except (binascii.Error, LookupError, ValueError):
            return value
    if not parts:
        return value
    # Encoded words are joined without the folding whitespace between them (RFC 2047 6.2).
    return "".join("".join(part.split()) for part in parts)
