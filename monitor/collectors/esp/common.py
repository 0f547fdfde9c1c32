"""What the provider modules share: times, replies, tags, ids and header look-ups.

Providers send the same kinds of values in different shapes (UNIX seconds or
milliseconds, ISO 8601 with seven fractional digits, "550 5.1.1 ..." replies, free-form
metadata); these helpers read each shape once, the same way for every provider.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from monitor.collectors.mail.report import reply_of, status_of
from monitor.collectors.mta.postfix_lines import clean_message_id
from monitor.collectors.mta.smtp import normalize_address
from monitor.model import Event, event_id

__all__ = [
    "MAX_TAGS",
    "address",
    "epoch",
    "header",
    "iso_time",
    "mapping",
    "message_id",
    "number",
    "reply",
    "tag",
    "tags_of",
    "text",
    "with_event_id",
]

#: Tags kept per event from a sender's metadata (the rest are dropped, not an error).
MAX_TAGS = 24
_TAG_CHARS = 128
#: Tags are stored comma-joined: a comma or a control character in a value would split it.
_TAG_UNSAFE = re.compile(r"[,\x00-\x1f\x7f]+")
#: Seconds past this are milliseconds (it is the year 5138 in seconds).
_MILLIS_FROM = 10**11


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by case-insensitive name (a plain dict in tests, Starlette's in serve)."""
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def epoch(value: Any) -> datetime:
    """A UNIX time in seconds or milliseconds, as a number or a string of one."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a time: {value!r}")
    seconds = float(value)
    if seconds != seconds or seconds < 0:  # NaN, or before 1970
        raise ValueError(f"not a time: {value!r}")
    if seconds >= _MILLIS_FROM:
        seconds /= 1000
    return datetime.fromtimestamp(seconds, UTC)


def iso_time(value: Any) -> datetime:
    """An ISO 8601 time; one without an offset is UTC."""
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def text(value: Any) -> str | None:
    """A scalar as stripped text; None for nothing, empty text, lists and objects."""
    if type(value) is str:  # most values: spared the ABC checks below (a hot path)
        return value.strip() or None
    if value is None or isinstance(value, Mapping | list | tuple):
        return None
    out = (str(value).lower() if isinstance(value, bool) else str(value)).strip()
    return out or None


def address(value: Any) -> str | None:
    """An email address (its domain lower-cased), angle brackets and blanks removed."""
    found = text(value)
    if found is None:
        return None
    return normalize_address(found.strip("<>").strip()) or None


def message_id(value: Any) -> str | None:
    """An RFC 5322 Message-ID without its angle brackets."""
    found = text(value)
    return clean_message_id(found) if found else None


def reply(response: str | None, status: Any = None) -> tuple[int | None, str | None]:
    """The SMTP reply code and enhanced status of a response text (``status`` wins if given)."""
    if not response and status is None:
        return None, None
    body = response or ""
    return reply_of(body), status_of(text(status), body)


def tag(key: str, value: Any) -> str | None:
    """``key:value`` safe to store; None for an empty or non-scalar value."""
    found = text(value)
    if found is None:
        return None
    if "," in found or not found.isprintable():  # else nothing to replace (a hot path)
        found = _TAG_UNSAFE.sub(" ", found).strip()
    return f"{key}:{found}"[:_TAG_CHARS] if found else None


def tags_of(pairs: Iterable[tuple[str, Any]]) -> tuple[str, ...]:
    """The tags of ``(key, value)`` pairs: unique, in order, at most :data:`MAX_TAGS`."""
    out: dict[str, None] = {}
    for key, value in pairs:
        if value is None:  # an absent field (most of them): no tag
            continue
        made = tag(key, value)
        if made is not None:
            out[made] = None
            if len(out) >= MAX_TAGS:
                break
    return tuple(out)


def with_event_id(event: Event, provider_event_id: Any) -> Event:
    """The event with the provider's own event id mixed into its id.

    The fields alone would merge two events that differ only by the provider's id (two
    opens in one second); the provider's id alone would merge events that documentation
    examples (and buggy senders) give the same placeholder id.  The time prefix stays.
    ``event`` is one the caller has just made and not shared: its id is set in place (a
    copy per event was a fifth of the SendGrid mapping's time in a profile).
    """
    found = text(provider_event_id)
    if found is None:
        return event
    object.__setattr__(event, "id", event.id[:8] + event_id(event.id, "event", found)[:24])
    return event


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (an absent part of a record)."""
    return value if isinstance(value, Mapping) else {}


def number(value: Any) -> int | None:
    """A whole number given as a number or a string of digits (providers send both)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    found = text(value)
    return int(found) if found and found.isdigit() else None
