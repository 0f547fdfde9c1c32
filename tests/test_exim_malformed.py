"""Hostile and broken Exim input: the parser counts it, never raises, and keeps the good lines."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from parsing import accounted, feed, interleave

from monitor.collectors.mta.exim import EximParser
from monitor.collectors.mta.postfix import MAX_LINE_CHARS
from monitor.model import Event

DATA = Path(__file__).parent / "data" / "exim"
GOOD = (DATA / "deferred_then_delivered.log").read_text(encoding="utf-8").splitlines()


def feed_all(lines: list[str]) -> tuple[list[Event], EximParser]:
    parser = EximParser()
    return feed(parser, lines), parser


def test_truncated_and_malformed_lines_are_counted_and_neighbours_kept() -> None:
    """Broken lines between good ones are counted by kind; the good lines' events stay."""
    junk = [
        "2026-03-05 09:00:02 [4412] 1vR9aa-000BxD-Kq == ",
        "2026-03-05 09:00:02 [4412] 1vR9aa-000BxD-Kq => ",
        "2026-03-05 09:00:02 [4412] 1vR9aa-000BxD-Kq what is this",
        "2026-03-05 09:0",
        "2026-13-45 09:00:00 1vR9aa-000BxD-Kq Completed",
        "not a log line at all",
        "2026-03-05 09:00:02 something nobody logs",
    ]
    clean, _ = feed_all(GOOD)
    dirty, parser = feed_all(interleave(GOOD, junk))
    assert dirty == clean
    assert accounted(parser, dirty)
    assert parser.stats.unparsed == {
        "==": 2, "=>": 2, "message": 1, "<framing>": 3, "general": 1,
    }  # fmt: skip


@pytest.mark.parametrize("errors", ["surrogateescape", "replace"])
def test_binary_junk_never_raises(errors: str) -> None:
    """Random bytes, decoded as the reader would, are counted and never raise."""
    rng = random.Random(11)
    blobs = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(2000)]
    junk = [b.decode("utf-8", errors).replace("\n", " ") for b in blobs]
    # Junk after a valid header and after a message id and flag, where handlers must cope.
    junk += [f"2026-03-05 09:00:00 {j}" for j in junk[:800]]
    junk += [f"2026-03-05 09:00:00 1vR9zz-000BxD-Kq ** {j}" for j in junk[:400]]
    junk += [f"2026-03-05 09:00:00 1vR9zz-000BxD-Kq <= {j}" for j in junk[:400]]
    clean, _ = feed_all(GOOD)
    events, parser = feed_all(interleave(GOOD, junk) + junk)
    # Junk "**" lines may fail recipients of their own message id, never the good one's.
    assert [e for e in events if e.queue_id == "1vR9aa-000BxD-Kq"] == clean
    assert accounted(parser, events)
    assert parser.stats.lines == 2 * len(GOOD) + len(junk)


def test_nul_bytes_inside_lines() -> None:
    """NUL bytes in the header or the message are handled like any other character."""
    lines = [
        "\x00\x00\x00\x00",
        "2026-03-05 09:00:00\x00 1vR9aa-000BxD-Kq Completed",
        '2026-03-05 09:00:00 1vR9aa-000BxD-Kq => a\x00b@x.example R=r C="250 ok\x00"',
    ]
    events, parser = feed_all(lines)
    assert [e.recipient for e in events] == ["a\x00b@x.example"]
    assert events[0].diagnostic == "250 ok\x00"
    assert accounted(parser, events)


def test_a_one_megabyte_line_is_counted_not_parsed() -> None:
    """A line far beyond any real one is counted as oversized; the lines around it still work."""
    huge = "2026-03-05 09:00:02 1vR9aa-000BxD-Kq ** kate@gmail.com: " + "x" * (1 << 20)
    assert len(huge) > MAX_LINE_CHARS
    clean, _ = feed_all(GOOD)
    events, parser = feed_all([*GOOD[:2], huge, *GOOD[2:]])
    assert events == clean
    assert parser.stats.unparsed == {"<oversized>": 1}


def test_long_lines_below_the_limit_parse_in_linear_time() -> None:
    """Near-limit lines full of quotes and colons parse quickly (no regex blow-up)."""
    body = ('C="' + 'a\\"b: ' * 4000 + " " + ": x" * 4000)[: MAX_LINE_CHARS - 100]
    parser = EximParser()
    for flag in ("=>", "**", "=="):
        parser.feed(f"2026-03-05 09:00:00 1vR9aa-000BxD-Kq {flag} a@b.example {body}")
    assert parser.stats.lines == 3
