"""KumoMTA JSON log records -> events.

KumoMTA writes one JSON object per line to its log files and can post the same
records to an HTTP log hook.  Each record is about one message to one recipient
(KumoMTA spools one message per recipient), so there is no state to correlate.
Record shape: https://docs.kumomta.com/reference/log_record/
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from monitor.collectors.mta.base import events_of
from monitor.collectors.mta.smtp import normalize_address
from monitor.collectors.source import ParseStats, Source
from monitor.model import Event, EventType

__all__ = ["MAX_DEPTH", "KumoParser", "parse", "record_events", "too_deep"]

_TYPES = {
    "Reception": EventType.SUBMITTED,
    "Delivery": EventType.DELIVERED,
    "TransientFailure": EventType.DEFERRED,
    "Bounce": EventType.BOUNCED,
    "Expiration": EventType.EXPIRED,
    "AdminBounce": EventType.DROPPED,  # an operator failed it: not the receiver's verdict
    "Rejection": EventType.REJECTED,
    "Feedback": EventType.COMPLAINED,
}
#: Records that explain rather than change a delivery.
_QUIET = frozenset({"Delay"})


#: A log record nests a few levels (headers, response, feedback report): deeper input is
#: refused before decoding, so that no line can exhaust the decoder's recursion.
MAX_DEPTH = 64
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON ``text`` nests arrays and objects more than ``limit`` levels."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case, at the cost of two C-level counts
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > limit:
            return True
    return False


class RecordError(ValueError):
    """A record that is not a KumoMTA log record."""


def _time(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise RecordError(f"timestamp {value!r} is neither UNIX seconds nor ISO 8601")


def _bare(address: Any) -> str | None:
    if not isinstance(address, str) or not address.strip():
        return None
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return normalize_address(text) or text  # "<>" stays ""


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() == name:
            text = value[0] if isinstance(value, list) and value else value
            return str(text).strip().strip("<>") or None if text is not None else None
    return None


def _reply(response: Any) -> tuple[int | None, str | None, str | None]:
    if not isinstance(response, Mapping):
        return None, None, None
    code = response.get("code")
    code = code if isinstance(code, int) and 200 <= code <= 599 else None
    enhanced = None
    parts = response.get("enhanced_code")
    if isinstance(parts, Mapping):
        try:
            enhanced = f"{int(parts['class'])}.{int(parts['subject'])}.{int(parts['detail'])}"
        except (KeyError, TypeError, ValueError):
            enhanced = None
    content = response.get("content")
    text = " ".join(str(x) for x in (code, enhanced, content) if x not in (None, "")) or None
    return code, enhanced, text


def record_events(
    record: Any, source_prefix: str = "kumomta", ref: str | None = None
) -> list[Event]:
    """The events of one log record ([] for records that change nothing)."""
    if not isinstance(record, Mapping):
        raise RecordError("a log record is a JSON object")
    kind_name = record.get("type")
    if kind_name in _QUIET:
        return []
    kind = _TYPES.get(kind_name)  # type: ignore[arg-type]
    if kind is None:
        raise RecordError(f"unknown record type {kind_name!r}")
    when = _time(record.get("timestamp"))
    created = record.get("created")
    arrival = _time(created) if created is not None else None
    recipient = _bare(record.get("recipient"))
    if kind is EventType.COMPLAINED:
        report = record.get("feedback_report") or {}
        rcpts = report.get("original_rcpto_to") or report.get("original_rcpt_to") or []
        recipient = _bare(rcpts[0]) if rcpts else recipient
    code, enhanced, text = _reply(record.get("response"))
    peer = record.get("peer_address") if isinstance(record.get("peer_address"), Mapping) else {}
    relay = None
    if kind is not EventType.SUBMITTED and peer and peer.get("name"):
        relay = f"{str(peer['name']).rstrip('.')}[{peer.get('addr') or ''}]"
    source_address = record.get("source_address")
    sending_ip = None
    if isinstance(source_address, Mapping) and source_address.get("address"):
        sending_ip = str(source_address["address"]).rsplit(":", 1)[0].strip("[]")
    attempts = record.get("num_attempts")
    delay = None
    if kind is EventType.DELIVERED and arrival is not None:
        delay = max(0.0, (when - arrival).total_seconds())
    node = record.get("nodeid") or "local"
    queue = record.get("queue")
    tags = (f"queue:{queue}",) if isinstance(queue, str) and queue else ()
    return [
        Event(
            type=kind,
            occurred_at=when,
            source=f"{source_prefix}:{node}",
            message_id=_header(record.get("headers"), "message-id"),
            queue_id=str(record["id"]) if record.get("id") else None,
            provider_message_id=str(record["id"]) if record.get("id") else None,
            sender=_bare(record.get("sender")) or ("" if record.get("sender") == "" else None),
            recipient=recipient,
            relay=relay,
            sending_ip=sending_ip,
            client=f"{peer.get('name')}[{peer.get('addr')}]" if kind is EventType.SUBMITTED
            and peer else None,
            reply_code=code if kind is not EventType.SUBMITTED else None,
            enhanced_status=enhanced if kind is not EventType.SUBMITTED else None,
            diagnostic=text if kind is not EventType.SUBMITTED else None,
            size_bytes=record.get("size") if isinstance(record.get("size"), int) else None,
            delay_seconds=delay,
            attempt=attempts if isinstance(attempts, int) and attempts > 0 else None,
            tags=tags,
            raw_ref=ref,
        )
    ]


class KumoParser(Source[str]):
    """KumoMTA log lines (one JSON record each) -> events; bad lines are counted, not raised."""

    kind = "kumomta"

    def __init__(self, source_prefix: str = "kumomta") -> None:
        self.source_prefix = source_prefix
        self.stats = ParseStats()

    def feed(self, line: str, ref: str | None = None) -> list[Event]:
        """The events of one JSON line; never raises (bad lines are counted)."""
        self.stats.lines += 1
        if not line.strip():
            self.stats.ignored += 1
            return []
        if too_deep(line):
            self.stats.unparsed["too_deep"] += 1
            return []
        try:
            events = record_events(json.loads(line), self.source_prefix, ref)
        except RecursionError:  # too_deep() missed it (a smaller stack): still one bad line
            self.stats.unparsed["too_deep"] += 1
            return []
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError):
            self.stats.unparsed["record"] += 1
            return []
        if not events:
            self.stats.ignored += 1
        self.stats.events += len(events)
        return events


def parse(lines: Iterable[str], source_prefix: str = "kumomta") -> Iterator[Event]:
    """The events of ``lines`` in log order."""
    return events_of(KumoParser(source_prefix).feed, lines)
