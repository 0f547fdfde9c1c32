"""Hostile and broken input: the parser counts it, never raises, and keeps the good lines."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from parsing import accounted, feed, interleave

from monitor.collectors.mta.postfix import MAX_LINE_CHARS, PostfixParser
from monitor.model import Event, EventType

DATA = Path(__file__).parent / "data" / "postfix"
REFERENCE = datetime(2024, 3, 31, tzinfo=UTC)
GOOD = (DATA / "deferred_then_delivered.log").read_text(encoding="utf-8").splitlines()


def feed_all(lines: list[str], **kw: object) -> tuple[list[Event], PostfixParser]:
    parser = PostfixParser(reference_time=REFERENCE, **kw)  # type: ignore[arg-type]
    return feed(parser, lines), parser


def test_truncated_and_malformed_lines_are_counted_and_neighbours_kept() -> None:
    """Broken lines between good ones are counted by daemon; the good lines' events stay."""
    junk = [
        "Mar  5 09:00:00 mx-out1 postfix/smtp[5003]: 0A1B2C3D4E: to=<kate@gmail.com>, relay=gmail-sm",
        "Mar  5 09:00:00 mx-out1 postfix/qmgr[1875]: 0A1B2C3D4E: from=<hello@shop.exa",
        "Mar  5 09:00:00 mx-out1 postfix/smtpd[5001]: NOQUEUE: reject: RCPT from unkn",
        "Mar  5 09:00:00 mx-out1 postfix/cleanup[5002]: 0A1B2C3D4E: milter-reject: END-OF-",
        "Mar  5 09:00:00 mx-out1 postfix/sm",
        "Mar  5 09:0",
        "status=sent (250 2.0.0 Ok)",
    ]
    clean, _ = feed_all(GOOD)
    dirty, parser = feed_all(interleave(GOOD, junk))
    assert dirty == clean
    assert accounted(parser, dirty)
    assert parser.stats.unparsed == {"smtp": 2, "qmgr": 2, "smtpd": 2, "cleanup": 2, "<framing>": 4}


@pytest.mark.parametrize("errors", ["surrogateescape", "replace"])
def test_binary_junk_never_raises(errors: str) -> None:
    """Random bytes, decoded as the reader would, are counted and never raise."""
    rng = random.Random(7)
    blobs = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(2000)]
    junk = [b.decode("utf-8", errors).replace("\n", " ") for b in blobs]
    # Junk after a valid header, where the daemon handlers have to cope with it.
    junk += [f"Mar  5 09:00:00 mx-out1 postfix/smtp[1]: {j}" for j in junk[:1000]]
    junk += [f"Mar  5 09:00:00 mx-out1 postfix/smtp[1]: 0A1B2C3D4E: to=<{j}" for j in junk[:500]]
    clean, _ = feed_all(GOOD)
    events, parser = feed_all(interleave(GOOD, junk) + junk)
    assert events == clean
    assert accounted(parser, events)
    assert parser.stats.lines == 2 * len(GOOD) + len(junk)


def test_nul_bytes_inside_lines() -> None:
    """NUL bytes in the header or the message are handled like any other character."""
    lines = [
        "\x00\x00\x00\x00",
        "Mar  5 09:00:00 mx-out1 postfix/smtp[1]\x00: junk",
        "Mar  5 09:00:00 mx-out1 postfix/smtp[1]: 0A1B2C3D4E: to=<a\x00b@x.example>, relay=r, "
        "delay=1, dsn=2.0.0, status=sent (250 ok\x00)",
    ]
    events, parser = feed_all(lines)
    assert accounted(parser, events)
    assert [e.recipient for e in events] == ["a\x00b@x.example"]


@pytest.mark.parametrize(
    ("errors", "recipient"),
    [("surrogateescape", "j\udcfcrgen@example.de"), ("replace", "j\ufffdrgen@example.de")],
)
def test_invalid_utf8_in_an_address(errors: str, recipient: str) -> None:
    """A Latin-1 byte in an address survives decoding and still makes a valid event id."""
    raw = (
        b"Mar  5 09:00:00 mx-out1 postfix/smtp[1]: 0A1B2C3D4E: to=<j\xfcrgen@example.de>, "
        b"relay=mx.example.de[192.0.2.8]:25, delay=1, delays=0/0/0.5/0.5, dsn=5.1.1, "
        b"status=bounced (host mx.example.de[192.0.2.8] said: 550 5.1.1 unknown user \xfc)"
    )
    events, _ = feed_all([raw.decode("utf-8", errors)])
    assert [(e.type, e.recipient) for e in events] == [(EventType.BOUNCED, recipient)]
    assert events[0].id == events[0].identity()


def test_unencodable_lone_surrogate_is_counted_not_raised() -> None:
    """A string no decoder would produce (a lone high surrogate) is counted as unparsed."""
    line = (
        "Mar  5 09:00:00 mx-out1 postfix/smtp[1]: 0A1B2C3D4E: to=<\ud800@x.example>, relay=r, "
        "delay=1, dsn=2.0.0, status=sent (250 ok)"
    )
    events, parser = feed_all([line])
    assert events == [] and parser.stats.unparsed == {"smtp": 1}


def test_megabyte_line_is_refused_cheaply() -> None:
    """A 1 MB line is counted as unparsed for its daemon without being scanned."""
    huge = (
        "Mar  5 09:00:00 mx-out1 postfix/smtp[1]: 0A1B2C3D4E: to=<a@b.example>, relay=r, "
        "delay=1, dsn=2.0.0, status=sent (" + "x" * 1_000_000 + ")"
    )
    assert len(huge) > MAX_LINE_CHARS
    clean, _ = feed_all(GOOD)
    started = time.perf_counter()
    events, parser = feed_all([*GOOD[:3], huge, "\x00" * 1_000_000, *GOOD[3:]])
    assert time.perf_counter() - started < 1.0
    assert events == clean
    assert parser.stats.unparsed == {"smtp": 1, "<framing>": 1}


def test_empty_and_blank_lines() -> None:
    """Empty, blank and newline-only lines are framing failures, nothing more."""
    events, parser = feed_all(["", " ", "\n", "\r\n", "\t"])
    assert events == [] and parser.stats.unparsed == {"<framing>": 5}


def test_mutated_lines_never_raise() -> None:
    """Seeded random cuts, byte flips and splices of real lines are all accounted for."""
    rng = random.Random(2024)
    corpus = [line for p in sorted(DATA.glob("*.log")) for line in p.read_text().splitlines()]
    mutants = []
    for _ in range(20_000):
        line = list(rng.choice(corpus))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            at = rng.randrange(len(line) + 1)
            if op == 0:
                del line[at:]
            elif op == 1 and line:
                line[min(at, len(line) - 1)] = chr(
                    rng.choice([0, 10, 13, 32, 58, 60, 62, 91, 93, 0xDCFF, 0xFFFD])
                )
            else:
                line[at:at] = rng.choice(corpus)[rng.randrange(40) :]
        mutants.append("".join(line))
    events, parser = feed_all(mutants)
    assert accounted(parser, events)
    assert parser.stats.lines == len(mutants)


def test_state_is_bounded_by_count() -> None:
    """500k queue ids that are never removed leave at most max_queue_ids in memory."""
    parser = PostfixParser(reference_time=REFERENCE)
    feed = parser.feed
    for n in range(500_000):
        feed(f"Mar  5 09:00:00 mx postfix/smtpd[1]: {n:010X}: client=a[192.0.2.1]")
    assert parser.state_size() <= 200_000
    assert parser.stats.tracked == 500_000


def test_state_is_bounded_by_age_in_event_time() -> None:
    """Queue ids not seen for max_age_seconds of log time are dropped as the log moves on."""
    parser = PostfixParser(reference_time=REFERENCE, max_age_seconds=3600)
    start = datetime(2024, 3, 5, 9, 0, tzinfo=UTC)
    for n in range(100):
        when = (start + timedelta(minutes=n)).strftime("%b %e %H:%M:%S")
        parser.feed(f"{when} mx postfix/smtpd[1]: {n:010X}: client=a[192.0.2.1]")
    assert parser.state_size() == 61  # the last hour, both ends included


def test_small_bound_keeps_the_newest() -> None:
    """With a tiny bound the most recently seen queue ids survive and still correlate."""
    lines = [
        "Mar  5 09:00:00 mx postfix/qmgr[1]: 1A1A1A1A1A: from=<a@x.example>, size=1, nrcpt=1 (queue active)",
        "Mar  5 09:00:00 mx postfix/qmgr[1]: 2B2B2B2B2B: from=<b@x.example>, size=1, nrcpt=1 (queue active)",
        "Mar  5 09:00:01 mx postfix/smtp[2]: 2B2B2B2B2B: to=<r@y.example>, relay=r, delay=1, dsn=2.0.0, status=sent (250 ok)",
        "Mar  5 09:00:01 mx postfix/smtp[2]: 1A1A1A1A1A: to=<r@y.example>, relay=r, delay=1, dsn=2.0.0, status=sent (250 ok)",
    ]
    events, parser = feed_all(lines, max_queue_ids=1)
    assert [(e.type.value, e.sender) for e in events] == [
        ("submitted", "b@x.example"),
        ("delivered", "b@x.example"),
        ("delivered", None),
    ]
    assert parser.state_size() == 1
