"""The Exim parser: golden files per framing and per delivery story, and its semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from parsing import check_golden, feed, feed_file, kinds

from monitor.collectors.mta.exim import EximParser, parse
from monitor.collectors.mta.exim_lines import (
    duration,
    parse_arrival,
    parse_delivery,
    parse_rejection,
    remote_reply,
    split_id,
)
from monitor.model import Event, EventType

DATA = Path(__file__).parent / "data" / "exim"
REFERENCE = datetime(2026, 3, 31, tzinfo=UTC)
CASES = sorted(p.stem for p in DATA.glob("*.log"))


def run(text: str, **kw: object) -> tuple[list[Event], EximParser]:
    parser = EximParser(reference_time=REFERENCE, **kw)  # type: ignore[arg-type]
    return feed(parser, text.splitlines()), parser


def load(case: str) -> tuple[list[Event], EximParser]:
    parser = EximParser(reference_time=REFERENCE)
    return feed_file(parser, DATA / f"{case}.log"), parser


def test_every_framing_and_story_has_a_fixture() -> None:
    """The fixtures the parser is held to are all present."""
    assert set(CASES) >= {
        "delivered_multi",  # plain timestamps, "->" in the same transaction
        "bounced",  # milliseconds, 23-character ids
        "deferred_then_delivered",  # [pid] after the time
        "expired",  # +0100 time zone, retry timeout exceeded
        "retry_time_not_reached",  # milliseconds and [pid]
        "ndr",
        "syslog",  # syslog-framed, with and without Exim's own timestamp
        "rejected",
    }


@pytest.mark.parametrize("case", CASES)
def test_golden_events(case: str) -> None:
    """Each fixture log yields exactly the events in its golden file, every line understood."""
    events, parser = load(case)
    check_golden(DATA / f"{case}.log", events, parser)


def test_events_equal_model_events() -> None:
    """Every event the parser builds equals Event(...) from its fields, id included."""
    for case in CASES:
        for event in load(case)[0]:
            fields = {k: v for k, v in event.to_dict().items() if k != "id"}
            fields["type"] = EventType(event.type)
            fields["occurred_at"] = event.occurred_at
            fields["tags"] = tuple(event.tags)
            rebuilt = Event(**fields)  # type: ignore[arg-type]
            assert rebuilt == event and rebuilt.id == event.id


def test_arrival_fields_reach_submitted() -> None:
    """``<=`` gives the submitted event its time, Message-ID, sender, size and client."""
    events, _ = load("delivered_multi")
    first = events[0]
    assert first.type is EventType.SUBMITTED and first.recipient == "ana@gmail.com"
    assert first.occurred_at == datetime(2026, 3, 2, 9, 15, 4, tzinfo=UTC)
    assert (first.message_id, first.sender, first.size_bytes, first.client, first.source) == (
        "spring-sale-20260302.4412@shop.example.com",
        "news@shop.example.com",
        18342,
        "app1.example.com[198.51.100.10]",
        "exim:local",
    )


def test_same_transaction_recipient_is_delivered_and_fake_delivery_ignored() -> None:
    """``->`` delivers like ``=>``; ``*>`` (exim -N) delivers nothing."""
    events, parser = load("delivered_multi")
    assert kinds(events) == [
        ("submitted", "ana@gmail.com"),
        ("delivered", "ana@gmail.com"),
        ("submitted", "ben@gmail.com"),
        ("delivered", "ben@gmail.com"),
        ("submitted", "carla@outlook.com"),
        ("delivered", "carla@outlook.com"),
    ]
    ben = events[3]
    assert (ben.reply_code, ben.enhanced_status, ben.relay) == (
        250,
        "2.0.0",
        "gmail-smtp-in.l.google.com[142.250.27.27]",
    )
    assert ben.diagnostic is not None and ben.diagnostic.startswith("250 2.0.0 OK")
    assert parser.state_size() == 0  # both messages Completed


def test_bounce_reads_the_remote_reply() -> None:
    """``**`` after an SMTP error carries the remote's code, enhanced status and text."""
    events, _ = load("bounced")
    erik = events[1]
    assert erik.type is EventType.BOUNCED and erik.recipient == "erik@gmail.com"
    assert (erik.reply_code, erik.enhanced_status, erik.delay_seconds) == (550, "5.1.1", 0.412)
    assert erik.diagnostic is not None
    assert erik.diagnostic.startswith("SMTP error from remote mail server after RCPT TO:")
    assert not erik.diagnostic.endswith("s")  # the DT= after the text is a field, not text
    assert erik.queue_id == "10HmaX-00000000Aq3-0001"
    assert events[3].enhanced_status == "5.7.708"


def test_deferrals_count_attempts_until_delivered() -> None:
    """Each ``==`` is an attempt; the delivery after them carries the queue time."""
    events, _ = load("deferred_then_delivered")
    assert kinds(events) == [
        ("submitted", "kate@gmail.com"),
        ("deferred", "kate@gmail.com"),
        ("submitted", "leo@live.com"),
        ("deferred", "leo@live.com"),
        ("delivered", "kate@gmail.com"),
        ("deferred", "leo@live.com"),
        ("delivered", "leo@live.com"),
    ]
    assert [e.attempt for e in events if e.type is not EventType.SUBMITTED] == [1, 1, 2, 2, 3]
    assert events[1].reply_code == 450 and events[1].enhanced_status == "4.2.1"
    assert (events[3].reply_code, events[3].diagnostic) == (None, "Connection timed out")
    assert events[4].delay_seconds == 15 * 60 + 4  # QT=15m4s
    assert events[5].enhanced_status == "4.7.500"


def test_retry_timeout_is_expired_with_the_last_deferral() -> None:
    """``** ...: retry timeout exceeded`` expires the recipient with the last deferral's reason."""
    events, _ = load("expired")
    assert kinds(events)[:4] == [
        ("submitted", "mike@mail.example.net"),
        ("deferred", "mike@mail.example.net"),
        ("deferred", "mike@mail.example.net"),
        ("expired", "mike@mail.example.net"),
    ]
    expired = events[3]
    assert (expired.reply_code, expired.enhanced_status, expired.attempt) == (421, "4.3.2", 2)
    # "+0100" in the log: 08:00:32 local is 07:00:32 UTC.
    assert expired.occurred_at == datetime(2026, 3, 10, 7, 0, 32, tzinfo=UTC)
    assert all(e.type is not EventType.BOUNCED for e in events)


def test_retry_time_not_reached_is_not_an_attempt() -> None:
    """``== ... retry time not reached`` makes no event and is counted as ignored."""
    events, parser = load("retry_time_not_reached")
    assert kinds(events) == [
        ("submitted", "nina@mail.example.org"),
        ("deferred", "nina@mail.example.org"),
        ("delivered", "nina@mail.example.org"),
    ]
    assert events[-1].attempt == 2
    assert parser.stats.ignored == 3  # Start/End queue run, and the skipped retry
    line = (
        "2026-03-07 10:05:00 10HmbA-0000000003X-000A == a@b.example R=smart T=local_delivery "
        "defer (-53): Retry time not yet reached"
    )
    assert run(line)[0] == []


def test_null_sender_messages_are_tagged_ndr() -> None:
    """Exim's own bounce notices (``<= <>``) are tagged; a local delivery names the original."""
    events, _ = load("ndr")
    notice = [e for e in events if e.tags == ("ndr",)]
    assert kinds(notice) == [
        ("submitted", "support@shop.example.com"),
        ("delivered", "support@shop.example.com"),
    ]
    assert {e.sender for e in notice} == {""}
    assert events[1].tags == () and events[1].enhanced_status == "5.5.0"


def test_syslog_framing_names_the_host() -> None:
    """Syslog-framed lines take the source from the syslog host and Exim's own time if given."""
    events, parser = load("syslog")
    assert {e.source for e in events} == {"exim:mx-out2", "exim:mx-out3"}
    rosa = [e for e in events if e.recipient == "rosa@gmail.com"]
    assert rosa[1].occurred_at == datetime(2026, 3, 11, 7, 31, 0, 734000, tzinfo=UTC)
    assert parser.stats.ignored == 1  # the Postfix line sharing the file


def test_rejected_recipients_become_rejected_events() -> None:
    """``rejected RCPT <r>`` is a rejected event; refusals without a recipient are ignored."""
    events, parser = load("rejected")
    assert kinds(events) == [
        ("rejected", "sam@bad-domain.example"),
        ("rejected", "tina@gmail.com"),
    ]
    sam = events[0]
    assert (sam.sender, sam.client, sam.diagnostic, sam.queue_id) == (
        "promo@shop.example.com",
        "app3.example.com[198.51.100.12]:41122",
        "Unrouteable address",
        None,
    )
    assert parser.stats.ignored == 3


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-24 06:33:21", datetime(2026, 11, 24, 6, 33, 21, tzinfo=UTC)),
        ("2026-11-24 06:33:21.867", datetime(2026, 11, 24, 6, 33, 21, 867000, tzinfo=UTC)),
        ("2026-11-24 06:33:21 [4410]", datetime(2026, 11, 24, 6, 33, 21, tzinfo=UTC)),
        ("2026-11-24 08:33:21 +0200", datetime(2026, 11, 24, 6, 33, 21, tzinfo=UTC)),
        (
            "2026-11-24 04:33:21.500 -0200 [9]",
            datetime(2026, 11, 24, 6, 33, 21, 500000, tzinfo=UTC),
        ),
        ("Nov 24 06:33:21 mx exim[1]:", datetime(2026, 11, 24, 6, 33, 21, tzinfo=UTC)),
        ("2026-11-24T07:33:21+01:00 mx exim4[1]:", datetime(2026, 11, 24, 6, 33, 21, tzinfo=UTC)),
        ("mx exim[1]: 2026-11-24 06:33:21", datetime(2026, 11, 24, 6, 33, 21, tzinfo=UTC)),
        ("2026-11-24 06:33:21 mx exim[1]: [1]", datetime(2026, 11, 24, 6, 33, 21, tzinfo=UTC)),
    ],
)
def test_timestamp_shapes(stamp: str, expected: datetime) -> None:
    """Every timestamp shape Exim or syslog writes gives the same UTC instant."""
    parser = EximParser(reference_time=datetime(2026, 12, 1, tzinfo=UTC))
    events = parser.feed(f'{stamp} 1jmFYj-00039V-QX => a@b.example R=r T=t C="250 ok"')
    assert [e.occurred_at for e in events] == [expected]


def test_local_time_zone_for_timestamps_without_one() -> None:
    """A configured zone applies to Exim timestamps that carry none."""
    line = '2026-07-01 12:00:00 1jmFYj-00039V-QX => a@b.example R=r T=t C="250 ok"'
    events, _ = run(line, tz="Europe/Berlin")
    assert events[0].occurred_at == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    events, _ = run(line, tz=timezone(timedelta(hours=-5)))
    assert events[0].occurred_at == datetime(2026, 7, 1, 17, 0, tzinfo=UTC)


def test_both_message_id_lengths() -> None:
    """Old 16-character and new 23-character message ids are both recognised."""
    assert split_id("1jmFYj-00039V-QX Completed") == ("1jmFYj-00039V-QX", "Completed")
    assert split_id("10HmaX-000000005vi-0000 <= a@b") == ("10HmaX-000000005vi-0000", "<= a@b")
    assert split_id("1jmFYj-00039V-Q Completed") == (None, "1jmFYj-00039V-Q Completed")
    assert split_id("Start queue run: pid=1") == (None, "Start queue run: pid=1")


def test_arrival_line_fields() -> None:
    """``<=`` fields: null sender, client forms, size, id and the recipient list."""
    a = parse_arrival(
        "sender@app.test H=mx.example (helo.example) [192.0.2.1]:5123 P=esmtp S=400 "
        'id=<x@app.test> T="for a@evil.example" for ok1@GMAIL.test B@x.test'
    )
    assert (a.sender, a.client, a.size, a.message_id) == (
        "sender@app.test",
        "mx.example[192.0.2.1]:5123",
        400,
        "x@app.test",
    )
    assert a.recipients == ("ok1@gmail.test", "B@x.test")
    b = parse_arrival("<> R=1xVk5h-0004AD-0c U=Debian-exim P=local S=sss")
    assert (b.sender, b.client, b.size, b.bounce_of) == ("", "local", None, "1xVk5h-0004AD-0c")
    c = parse_arrival("s@x H=(client.test) [127.0.0.1] P=esmtp S=1")
    assert c.client == "unknown[127.0.0.1]"


def test_delivery_line_fields() -> None:
    """Delivery fields: generated addresses, quoted confirmations and the error text."""
    d = parse_delivery(
        'jdoe <postmaster@Example.com> F=<s@x> R=local T=t C="250 \\"quoted\\" ok: fine" DT=2s'
    )
    assert d is not None
    assert (d.recipient, d.orig_recipient, d.sender, d.confirmation, d.delay) == (
        "postmaster@example.com",
        None,
        "s@x",
        '250 "quoted" ok: fine',
        2.0,
    )
    f = parse_delivery("a@test.ex : Unrouteable address")
    assert f is not None and (f.recipient, f.text) == ("a@test.ex", "Unrouteable address")
    g = parse_delivery("x@y.z R=r T=t H=mx [2001:db8::1]:25 X=TLS1.3:A:256 QT=1h2m DT=1s: boom")
    assert g is not None
    assert (g.relay, g.delay, g.text) == ("mx[2001:db8::1]:25", 3720.0, "boom")
    h = parse_delivery(":blackhole: <c@test.ex> R=bounces")
    assert h is not None and (h.recipient, h.blackhole) == ("c@test.ex", True)


def test_reply_codes_and_durations() -> None:
    """Reply codes come from confirmations and error texts; Exim durations become seconds."""
    assert remote_reply("250 2.0.0 OK") == (250, "2.0.0")
    assert remote_reply("SMTP error from remote mail server after RCPT TO:<a@b>: 550 5.1.1 x") == (
        550,
        "5.1.1",
    )
    assert remote_reply("LMTP error after DATA: 440 Temporary error") == (440, None)
    assert remote_reply("Connection timed out") == (None, None)
    assert [duration(t) for t in ("0.021s", "2s", "1m3s", "2h", "1d3h", "1w", "x", None)] == [
        0.021, 2.0, 63.0, 7200.0, 97200.0, 604800.0, None, None,
    ]  # fmt: skip


def test_rejection_line_fields() -> None:
    """A rejection line gives sender, recipient, client and the reason."""
    r = parse_rejection(
        "H=(yakult.com.tw) [202.132.70.178]:3755 I=[1.2.3.4]:25 F=menacedsj04@listserv.example "
        "rejected RCPT dir@ml3.ru: relay not permitted"
    )
    assert r is not None
    assert r == ("menacedsj04@listserv.example", "dir@ml3.ru", "unknown[202.132.70.178]:3755",
                 "relay not permitted")  # fmt: skip
    assert parse_rejection("H=x [1.2.3.4] rejected after DATA: virus") is None


def test_bounded_state_and_stale_ids() -> None:
    """Messages never Completed are forgotten beyond the bound; a new ``<=`` replaces old state."""
    parser = EximParser(max_messages=10)
    for n in range(50):
        parser.feed(f"2026-03-01 10:00:00 1jmF{n:02d}-00039V-QX <= s@x.example S=1")
    assert parser.state_size() == 10
    parser = EximParser()
    parser.feed("2026-03-01 10:00:00 1jmFYj-00039V-QX <= old@x.example S=1")
    parser.feed("2026-03-01 10:00:01 1jmFYj-00039V-QX <= new@x.example S=2")
    events = parser.feed('2026-03-01 10:00:02 1jmFYj-00039V-QX => a@b.example R=r C="250 ok"')
    assert [(e.type.value, e.sender) for e in events] == [
        ("submitted", "new@x.example"),
        ("delivered", "new@x.example"),
    ]


def test_parse_yields_the_same_events_as_feed() -> None:
    """``parse()`` over lines gives what a parser fed line by line gives."""
    text = (DATA / "deferred_then_delivered.log").read_text(encoding="utf-8")
    fed, _ = run(text)
    assert list(parse(text.splitlines(), reference_time=REFERENCE)) == fed
