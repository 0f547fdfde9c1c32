"""Tolerant reading of inbound reports: bytes -> ``email.message.Message``, text of parts.

Everything here is best effort and never raises: undecodable charsets fall back to UTF-8
then Latin-1 with replacement, and what was repaired is recorded as a *defect* string.
"""

from __future__ import annotations

import email
import email.header
import email.utils
import re
from datetime import UTC, datetime
from email.message import Message

__all__ = [
    "ADDRESS_RE",
    "header",
    "header_items",
    "parse_bytes",
    "parse_date",
    "part_text",
    "strip_angle",
]

#: An addr-spec as it appears in bounce texts (RFC 5322 section 3.4.1, dot-atom forms).
ADDRESS_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-][A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)


def parse_bytes(data: bytes, defects: list[str]) -> Message:
    """Parse one message with the compat32 policy (tolerant of broken MIME)."""
    try:
        message = email.message_from_bytes(data)
    except Exception as exc:  # the compat32 parser should not raise; be sure
        defects.append(f"unparseable MIME: {type(exc).__name__}")
        message = Message()
        message.set_payload(data.decode("utf-8", "replace"))
    for part in _walk(message):
        for defect in getattr(part, "defects", ()):
            name = type(defect).__name__
            if name not in defects:
                defects.append(name)
    return message


def _walk(message: Message) -> list[Message]:
    try:
        return list(message.walk())
    except Exception:  # a payload of the wrong type deep inside
        return [message]


def header(message: Message, name: str) -> str | None:
    """A header's value as one line of text (RFC 2047 words decoded), or ``None``."""
    try:
        value = message.get(name)
    except Exception:
        return None
    if value is None:
        return None
    return _one_line(value)


def header_items(message: Message) -> list[tuple[str, str]]:
    """Every field in order as (lower-cased name, one-line value), repeated names included."""
    try:
        items = message.items()
    except Exception:
        return []
    return [(name.lower(), _one_line(value)) for name, value in items]


def _one_line(value: object) -> str:
    try:
        if isinstance(value, email.header.Header):
            text = str(value)
        else:
            text = str(value)
            if "=?" in text:
                text = str(email.header.make_header(email.header.decode_header(text)))
    except Exception:
        text = str(value)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(text.split())


def part_text(part: Message, defects: list[str]) -> str:
    """The decoded text of a non-multipart part (transfer encoding and charset undone)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = None
    try:
        charset = part.get_content_charset()
    except Exception:
        defects.append("bad charset parameter")
    for name in (charset, "utf-8"):
        if not name:
            continue
        try:
            return payload.decode(name)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    note = f"undecodable text ({charset or 'no charset'})"
    if note not in defects:
        defects.append(note)
    try:
        return payload.decode(charset or "latin-1", "replace")
    except LookupError:
        return payload.decode("latin-1", "replace")


def strip_angle(value: str | None) -> str | None:
    """``rfc822; <a@example.org>`` -> ``a@example.org`` (type and brackets dropped)."""
    if not value:
        return None
    head, sep, rest = value.partition(";")
    if sep and re.fullmatch(r"\s*[A-Za-z][\w.-]*\s*", head):
        value = rest
    value = value.strip().strip("<>").strip().strip("\"'")
    return value or None


def parse_date(value: str | None) -> datetime | None:
    """An RFC 5322 date as an aware UTC datetime, or ``None`` when it does not parse."""
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
