"""KumoMTA HTTP log-hook bodies -> records -> events: the hook's source.

A body carries one JSON log record, an array of them, or one per line
(:func:`split_records`).  :class:`KumoRecords` is the :class:`Source` of the decoded
records: one that is not JSON, is nested too deeply, holds a NUL character or is not a
KumoMTA log record is not understood, with that reason, and the records next to it go on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from monitor.collectors.mta.kumomta import record_events
from monitor.collectors.source import NotUnderstood, ParseStats, Source
from monitor.model import Event

__all__ = [
    "NOT_A_RECORD", "NOT_JSON", "NUL", "TOO_DEEP", "KumoRecords", "Undecodable", "split_records",
]

NOT_JSON = "not JSON"
TOO_DEEP = "nested too deeply"
NUL = "contains a NUL character"
NOT_A_RECORD = "not a KumoMTA log record"


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is in any string of ``value`` (keys too); iterative, any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class Undecodable(NotUnderstood):
    """A piece of a body that is not a JSON value (or is nested too deeply to decode)."""


def _decode(text: str, decoder: json.JSONDecoder, at: int = 0) -> tuple[Any, int]:
    """One JSON value from ``text`` at ``at``: (value, end), or Undecodable saying why not."""
    try:
        return decoder.raw_decode(text, at)
    except RecursionError:
        raise Undecodable(TOO_DEEP) from None
    except ValueError:
        raise Undecodable(NOT_JSON) from None


def split_records(text: str) -> Iterator[Any]:
    """Each record of a body: the decoded value, or an Undecodable saying why not."""
    decoder = json.JSONDecoder()
    text = text.strip()
    if text.startswith("["):
        # An array, element by element: a bad element ends what can be found of it, the
        # elements before it stand.
        at = 1
        while True:
            while at < len(text) and text[at] in " \t\r\n,":
                at += 1
            if at >= len(text) or text[at] == "]":
                return
            try:
                value, at = _decode(text, decoder, at)
            except Undecodable as exc:
                yield exc
                return
            yield value
    if text.startswith("{"):
        try:  # one object, perhaps spread over several lines
            value, end = _decode(text, decoder)
        except Undecodable:
            pass
        else:
            if end == len(text):
                yield value
                return
    for line in text.splitlines():
        if line.strip():
            try:
                value, end = _decode(line.strip(), decoder)
                if end != len(line.strip()):
                    raise Undecodable(NOT_JSON)
            except Undecodable as exc:
                yield exc
                continue
            yield value


class KumoRecords(Source[Any]):
    """Decoded KumoMTA log records (the HTTP hook's units) -> events."""

    kind = "kumomta"

    def __init__(self, source_prefix: str = "kumomta") -> None:
        self.source_prefix = source_prefix
        self.stats = ParseStats()

    def feed(self, unit: Any, ref: str | None = None) -> list[Event]:
        """The events of one record from :func:`split_records`; NotUnderstood saying why not."""
        self.stats.lines += 1
        if isinstance(unit, Undecodable):
            raise unit
        if _has_nul(unit):
            raise NotUnderstood(NUL)
        try:
            events = record_events(unit, self.source_prefix, ref)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
                RecursionError):  # fmt: skip
            raise NotUnderstood(NOT_A_RECORD) from None
        if not events:
            self.stats.ignored += 1
        self.stats.events += len(events)
        return events
