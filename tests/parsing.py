"""Test helpers shared by the MTA parsers' tests: feeding lines, and where each went."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from golden import check_jsonl

from monitor.model import Event

__all__ = [
    "accounted",
    "check_golden",
    "feed",
    "feed_file",
    "interleave",
    "kinds",
    "outcome",
]


def feed(parser: Any, lines: Iterable[str]) -> list[Event]:
    """Every event ``parser`` makes of ``lines``, in order."""
    return [e for line in lines for e in parser.feed(line)]


def feed_file(parser: Any, path: Path) -> list[Event]:
    """Every event ``parser`` makes of a fixture log, each citing its ``file:line``."""
    events = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        events.extend(parser.feed(line, ref=f"{path.name}:{number}"))
    return events


def kinds(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.type.value, e.recipient) for e in events]


def check_golden(log: Path, events: list[Event], parser: Any) -> None:
    """``log``'s events equal its golden ``.events.jsonl`` and every line was understood."""
    check_jsonl(log.with_suffix(".events.jsonl"), [e.to_dict() for e in events])
    stats = parser.stats
    assert not stats.unparsed, stats.unparsed
    lines_with_events = stats.lines - stats.ignored - stats.tracked
    assert 0 < lines_with_events <= stats.events


def interleave(good: list[str], junk: list[str]) -> list[str]:
    """Each good line followed by one junk line, the junk taken in turn."""
    out: list[str] = []
    for n, line in enumerate(good):
        out.append(line)
        out.append(junk[n % len(junk)])
    return out


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
