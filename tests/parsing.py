"""Test helpers shared by the MTA parsers' tests: where each line went, by the counters."""

from __future__ import annotations

from typing import Any

from monitor.model import Event

__all__ = ["accounted", "outcome"]


def accounted(parser: Any, events: list[Event]) -> bool:
    """Every line is in exactly one bucket (a line with events makes at least one)."""
    s = parser.stats
    with_events = s.lines - s.ignored - s.tracked - sum(s.unparsed.values())
    return bool(s.events == len(events) and 0 <= with_events <= s.events)


def outcome(parser: Any, line: str) -> str:
    """What the parser made of one line, from its counters."""
    before = parser.stats.to_dict()
    events = parser.feed(line)
    after = parser.stats.to_dict()
    if events:
        return "event:" + "+".join(e.type.value for e in events)
    for key in ("tracked", "ignored"):
        if after[key] != before[key]:
            return key
    unparsed_before, unparsed_after = before["unparsed"], after["unparsed"]
    changed = [k for k, v in unparsed_after.items() if unparsed_before.get(k) != v]
    assert len(changed) == 1, f"line counted {len(changed)} times: {line!r}"
    return f"unparsed:{changed[0]}"
