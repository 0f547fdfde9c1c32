"""KumoMTA HTTP log-hook bodies -> records -> events: the hook's source.

A body carries one JSON log record, an array of them, or one per line, split by
:func:`monitor.collectors.jsonbody.split_records`.  :class:`KumoRecords` is the
:class:`Source` of the decoded records: one that is not JSON, is nested too deeply,
holds a NUL character or is not a KumoMTA log record is not understood, with that reason,
and the records next to it go on.
"""

from __future__ import annotations

from typing import Any

from monitor.collectors.jsonbody import Undecodable
from monitor.collectors.mta.kumomta import record_events
from monitor.collectors.source import NotUnderstood, ParseStats, Source
from monitor.model import Event

__all__ = ["NOT_A_RECORD", "NUL", "KumoRecords"]

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
