"""The Postfix parser: golden files per framing and per delivery story, and its semantics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from parsing import check_golden, feed, feed_file, kinds

from monitor.collectors.mta.postfix import PostfixParser, parse
from monitor.collectors.mta.postfix_events import FAST_PATH, EventMaker
from monitor.collectors.mta.postfix_lines import (
    clean_message_id,
    normalize_address,
    parse_reject,
    parse_status,
    reply_of,
)
from monitor.model import Event, EventType

DATA = Path(__file__).parent / "data" / "postfix"
REFERENCE = datetime(2024, 3, 31, tzinfo=UTC)
CASES = sorted(p.stem for p in DATA.glob("*.log"))


def run(text: str, **kw: object) -> tuple[list[Event], PostfixParser]:
    parser = PostfixParser(reference_time=REFERENCE, **kw)  # type: ignore[arg-type]
    return feed(parser, text.splitlines()), parser


def load(case: str) -> tuple[list[Event], PostfixParser]:
    parser = PostfixParser(reference_time=REFERENCE)
    return feed_file(parser, DATA / f"{case}.log"), parser


def test_every_framing_and_story_has_a_fixture() -> None:
    """The fixtures the parser is held to are all present."""
    assert set(CASES) >= {
        "bsd",
        "bsd_zero_padded",
        "rfc3339",
        "rfc5424",
        "journald_short_iso",
        "maillog_file",
        "multi_instance",
        "deferred_then_delivered",
        "bounced",
        "expired",
        "noqueue_reject",
        "ndr",
        "local_agents",
    }


@pytest.mark.parametrize("case", CASES)
def test_golden_events(case: str) -> None:
    """Each fixture log yields exactly the events in its golden file, every line understood."""
    events, parser = load(case)
    check_golden(DATA / f"{case}.log", events, parser)


def test_fast_events_equal_model_events() -> None:
    """The parser's event builder makes objects equal to Event(...), with the same id."""
    assert FAST_PATH
    make = EventMaker().make
    when = datetime(2024, 3, 4, 10, 0, 1, 250_000, tzinfo=UTC)
    cases = [
        (EventType.SUBMITTED, "a@GMAIL.com", None, None, None, 512, None, ("ndr",)),
        (EventType.DELIVERED, "b@x.example", 250, "2.0.0", "250 2.0.0 Ok", None, 1, ()),
        (EventType.DEFERRED, None, None, "4.4.1", "connect to x: timed out", None, 3, ()),
        (EventType.BOUNCED, "c\udcff@x.example", 550, None, "said: 550 caf\udce9", None, 1, ()),
    ]
    for kind, rcpt, code, enhanced, diag, size, attempt, tags in cases:
        fields = dict(
            type=kind,
            occurred_at=when,
            source="postfix:mx",
            message_id="m@x",
            queue_id="1A2B3C4D5E",
            sender="",
            recipient=rcpt,
            orig_recipient="o@x",
            relay="r[192.0.2.1]:25",
            client="c[192.0.2.2]",
            reply_code=code,
            enhanced_status=enhanced,
            diagnostic=diag,
            delay_seconds=1.5,
            size_bytes=size,
            attempt=attempt,
            tags=tags,
            raw_ref="x.log:1",
        )
        fast = make(*fields.values())  # type: ignore[arg-type]
        slow = Event(**fields)  # type: ignore[arg-type]
        assert fast == slow and fast.id == slow.id == fast.identity()
        assert fast.to_dict() == slow.to_dict()


def test_submitted_carries_arrival_envelope_and_client() -> None:
    """The first status line of a recipient is preceded by 'submitted' at the arrival time."""
    events, _ = load("deferred_then_delivered")
    first = events[0]
    assert first.type is EventType.SUBMITTED and first.recipient == "kate@gmail.com"
    assert first.occurred_at == datetime(2024, 3, 5, 9, 0, tzinfo=UTC)
    assert (first.message_id, first.sender, first.size_bytes, first.client) == (
        "welcome-88213@shop.example.com",
        "hello@shop.example.com",
        22014,
        "app1.example.com[198.51.100.10]",
    )


def test_submitted_once_per_recipient_and_attempts_counted() -> None:
    """Retries count attempts per recipient; a suspended destination is not an attempt."""
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
    leo = events[3]
    assert (leo.reply_code, leo.enhanced_status) == (451, "4.7.650")
    assert leo.diagnostic is not None and leo.diagnostic.startswith("host live-com.olc")
    assert leo.relay == "live-com.olc.protection.outlook.com[52.101.11.2]:25"
    assert leo.delay_seconds == 3.1


def test_no_submitted_when_arrival_was_not_seen() -> None:
    """A status line for a queue id first met there yields only its outcome."""
    events, _ = run(
        "Mar  4 10:00:01 mx postfix/smtp[1]: 1A2B3C4D5E: to=<a@b.example>, relay=r[192.0.2.1]:25, "
        "delay=1, delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 Ok)"
    )
    assert kinds(events) == [("delivered", "a@b.example")]
    assert events[0].reply_code == 250 and events[0].message_id is None


def test_expired_reports_every_pending_recipient_with_its_last_deferral() -> None:
    """qmgr's 'expired, returned to sender' fails each recipient still deferred, not the rest."""
    events, _ = load("expired")
    expired = [e for e in events if e.type is EventType.EXPIRED]
    assert [(e.recipient, e.attempt, e.reply_code, e.enhanced_status) for e in expired] == [
        ("pat@yahoo.com", 2, 421, "4.7.0"),
        ("oscar@oldcorp.example", 2, None, "4.4.3"),
        (None, None, None, None),  # force-expired, its recipients never seen
    ]
    assert expired[1].diagnostic is not None and "Host not found" in expired[1].diagnostic
    assert expired[0].occurred_at == datetime(2024, 3, 6, 8, 1, 2, tzinfo=UTC)
    assert expired[2].sender == "alerts@shop.example.com"
    assert "nina@gmail.com" not in {e.recipient for e in expired}


def test_ndr_tags_follow_null_sender_and_bounce_notices() -> None:
    """Our own bounces are tagged 'ndr', from from=<> or from the bounce daemon's notice."""
    events, _ = load("ndr")
    tagged = [(e.type.value, e.recipient, e.sender) for e in events if e.tags == ("ndr",)]
    assert tagged == [
        ("submitted", "support@shop.example.com", ""),
        ("delivered", "support@shop.example.com", ""),
        ("delivered", "orders@shop.example.com", None),  # only the notice said so
    ]
    assert all(not e.tags for e in events if e.queue_id == "1D2E3F4A5B")


def test_recipient_domain_is_lower_cased_not_the_local_part() -> None:
    """Only the domain of a recipient is lower-cased; the local part may be case-sensitive."""
    events, _ = load("bsd")
    assert events[0].recipient == "Jane.Doe@gmail.com"
    assert events[0].recipient_domain == "gmail.com"
    assert normalize_address("Mixed.Case@Example.COM") == "Mixed.Case@example.com"
    assert normalize_address("") is None and normalize_address("root") == "root"


def test_instances_and_hosts_keep_their_own_queue_ids() -> None:
    """The same queue id in two Postfix instances, or on two hosts, are different messages."""
    events, _ = load("multi_instance")
    by_target = {(e.source, e.type.value, e.recipient): e for e in events}
    ivy = by_target[("postfix:mx1", "delivered", "ivy@partner.example")]
    jack = by_target[("postfix:mx1", "bounced", "jack@gmail.com")]
    kim = by_target[("postfix:mx2", "delivered", "kim@gmail.com")]
    assert (ivy.sender, ivy.message_id) == (
        "henry@example.org",
        "a77c1e0f-2d5a-4b51-9c2e-5f0d1c9e8a11@example.org",
    )
    assert (jack.sender, jack.message_id) == (
        "news@news.example.org",
        "bulk-2024-03-04-0001@news.example.org",
    )
    assert (kim.sender, kim.message_id) == (None, None)
    assert ("postfix:mx2", "submitted", "kim@gmail.com") not in by_target


def test_rejections() -> None:
    """NOQUEUE, postscreen, milter and header-check refusals are 'rejected'; warnings are not."""
    events, parser = load("noqueue_reject")
    assert kinds(events) == [
        ("rejected", "relay-test@elsewhere.example"),
        ("rejected", "Nobody@shop.example.com"),
        ("rejected", "info@shop.example.com"),
        ("rejected", "ap@shop.example.com"),
        ("rejected", "list@shop.example.com"),
        ("rejected", "bank@bank.example"),
        ("rejected", "info@shop.example.com"),
    ]
    relay = events[0]
    assert (relay.reply_code, relay.enhanced_status, relay.sender, relay.client) == (
        554,
        "5.7.1",
        "spam@bulk.example",
        "unknown[203.0.113.66]",
    )
    assert relay.diagnostic == "554 5.7.1 <relay-test@elsewhere.example>: Relay access denied"
    assert relay.queue_id is None
    milter = events[3]
    assert (milter.queue_id, milter.message_id, milter.reply_code, milter.enhanced_status) == (
        "4C5D6E7F8A",
        "8841.partner@mail.partner.example",
        None,
        "5.7.1",
    )
    assert events[4].diagnostic == "5.7.1 Message content rejected"
    assert events[6].reply_code == 451
    assert parser.state_size() == 0  # refused whole messages leave no state behind


def test_refused_connections_and_warnings_are_ignored() -> None:
    """Refusals of a connection, HELO or VRFY, and reject_warning, record nothing."""
    text = "\n".join(
        f"Mar  8 13:00:00 mx postfix/smtpd[1]: NOQUEUE: {body}"
        for body in (
            "reject: CONNECT from unknown[192.0.2.1]: 450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.1]; proto=SMTP",
            "reject: VRFY from unknown[192.0.2.1]: 550 5.1.1 <x@y.example>: Recipient address rejected: User unknown; to=<x@y.example> proto=SMTP",
            "reject_warning: RCPT from unknown[192.0.2.1]: 554 5.7.1 <x@y.example>: Relay access denied; from=<a@b.example> to=<x@y.example> proto=ESMTP helo=<h>",
            "discard: MAIL from a[192.0.2.1]: <a@b.example>: Sender address SPAM; from=<a@b.example> proto=ESMTP helo=<a>",
        )
    )
    events, parser = run(text)
    assert events == [] and parser.stats.ignored == 4


def test_softbounce_is_deferred_and_verify_probes_are_ignored() -> None:
    """status=SOFTBOUNCE is a deferral; address-verification results deliver nothing."""
    events, _ = load("local_agents")
    assert ("deferred", "wendy@mail.shop.example.com") in kinds(events)
    assert "probe@partner.example" not in {e.recipient for e in events}


def test_local_delivery_agents() -> None:
    """lmtp, local, virtual, pipe, error and discard lines become delivery outcomes."""
    events, _ = load("local_agents")
    outcomes = {
        e.recipient: (e.type.value, e.relay) for e in events if e.type is not EventType.SUBMITTED
    }
    assert outcomes == {
        "rita@shop.example.com": ("delivered", "mail.shop.example.com[private/dovecot-lmtp]"),
        "sam@mail.shop.example.com": ("delivered", "local"),
        "tina@hosted.example": ("delivered", "virtual"),
        "uma@shop.example.com": ("bounced", "dovecot"),
        "victor@shop.example.com": ("bounced", "none"),
        "wendy@mail.shop.example.com": ("deferred", "local"),
        "blackhole@shop.example.com": ("delivered", "none"),
    }
    sam = next(e for e in events if e.recipient == "sam@mail.shop.example.com")
    assert sam.orig_recipient == "postmaster@shop.example.com"


def test_reply_codes_from_diagnostics() -> None:
    """Reply and enhanced codes come from 'said:', 'refused to talk to me:' or the text start."""
    assert reply_of(
        "host mx[192.0.2.1] said: 550 5.1.1 user unknown (in reply to RCPT TO command)"
    ) == (550, "5.1.1")
    assert reply_of("host g[192.0.2.1] said: 550-5.7.1 [2607::1] Our system 550 5.7.1 more") == (
        550,
        "5.7.1",
    )
    assert reply_of("host mx[192.0.2.1] refused to talk to me: 421 4.3.2 try again later") == (
        421,
        "4.3.2",
    )
    assert reply_of("250 2.0.0 Ok: queued as 1A2B3C") == (250, "2.0.0")
    assert reply_of("250 [Sniper] OK 1539154772 snipe-queue 10549") == (250, None)
    assert reply_of("5.7.1 Blocked by SpamAssassin") == (None, "5.7.1")
    assert reply_of("550 #5.1.1 no mailbox here") == (550, "5.1.1")
    assert reply_of("connect to mx[192.0.2.1]:25: Connection refused") == (None, None)
    assert reply_of("Host or domain name not found. Name service error for name=x type=MX") == (
        None,
        None,
    )
    assert reply_of("host x[2.115.207.21] said: 12 Malformed (in reply to RCPT TO command)") == (
        None,
        None,
    )
    assert reply_of(None) == (None, None)


def test_enhanced_status_from_text_when_there_is_no_dsn_field() -> None:
    """Postfix before 2.3 wrote no dsn=; the enhanced code is then read from the reply."""
    events, _ = run(
        "Mar  4 10:00:00 mx postfix/smtp[1]: 04B0702E: to=<anyone@example.com>, "
        "relay=example.com[10.0.0.1]:25, delay=12, status=bounced "
        "(host example.com[10.0.0.1] said: 550 5.1.1 User unknown (in reply to RCPT TO command))"
    )
    assert [(e.type.value, e.reply_code, e.enhanced_status, e.delay_seconds) for e in events] == [
        ("bounced", 550, "5.1.1", 12.0)
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "to=<a@B.example>, orig_to=<o@x>, relay=r[192.0.2.1]:25, conn_use=2, delay=0.5, "
            "delays=0/0/0.2/0.3, tls=dane, dsn=2.0.0, status=sent (250 ok)",
            ("a@b.example", "o@x", "r[192.0.2.1]:25", 0.5, "2.0.0", "sent", "250 ok"),
        ),
        (
            "to=<to@sample.com>, relay=m[10.0.0.1]:25, conn_use=2 delay=1021, "
            "delays=1020/0.04/0.56/0.78, dsn=2.0.0, status=sent (250 Ok)",
            ("to@sample.com", None, "m[10.0.0.1]:25", 1021.0, "2.0.0", "sent", "250 Ok"),
        ),
        (
            "to=user@host.example.com, orig_to=root@localhost, relay=local, delay=0.07, "
            "status=sent (delivered to command: procmail)",
            (
                "user@host.example.com",
                "root@localhost",
                "local",
                0.07,
                None,
                "sent",
                "delivered to command: procmail",
            ),
        ),
        (
            "user@example.com, relay=example.com[192.0.2.9]:25, delay=2, delays=2/2/2/2, "
            "dsn=4.2.2, status=deferred (mailbox full)",
            (
                "user@example.com",
                None,
                "example.com[192.0.2.9]:25",
                2.0,
                "4.2.2",
                "deferred",
                "mailbox full",
            ),
        ),
        (
            "to=<envto@example.com>, relay=none, delay=0.11, status=bounced optional text...",
            ("envto@example.com", None, "none", 0.11, None, "bounced", "optional text..."),
        ),
        ("connect to mx[192.0.2.1]:25: Connection refused", None),
    ],
    ids=["modern", "conn-use-no-comma", "no-brackets", "no-to", "no-parentheses", "not-status"],
)
def test_status_line_shapes(body: str, expected: tuple[object, ...] | None) -> None:
    """Status lines of every Postfix vintage read into the same fields."""
    assert parse_status(body) == expected


def test_message_id_forms() -> None:
    """Message-IDs lose their brackets; missing brackets and RFC 2047 wrapping are tolerated."""
    assert clean_message_id("<abc@example.com>") == "abc@example.com"
    assert clean_message_id("abc@example.com") == "abc@example.com"
    assert clean_message_id("<>") is None
    assert clean_message_id(" <abc@example.com> (added by postmaster)") == "abc@example.com"
    # "<1912@host.example>" base64-encoded in two words, folded (the fold logged as "?").
    assert (
        clean_message_id("=?UTF-8?B?PDE5?=? =?UTF-8?B?MTJAaG9zdC5leGFtcGxlPg==?=")
        == "1912@host.example"
    )
    assert clean_message_id("=?UTF-8?B?!!!?=") == "=?UTF-8?B?!!!?="


def test_reject_fields() -> None:
    """Reject lines give action, stage, client, text and envelope, in all their layouts."""
    got = parse_reject(
        "reject: RCPT from [192.0.2.9]:5678: 550 5.7.1 Service unavailable; client [192.0.2.9] "
        "blocked using zen.spamhaus.org; from=<a@b.example>, to=<c@D.example>, proto=ESMTP, helo=<x>"
    )
    assert got is not None
    assert got.client == "[192.0.2.9]:5678" and got.recipient == "c@d.example"
    assert (
        got.text
        == "550 5.7.1 Service unavailable; client [192.0.2.9] blocked using zen.spamhaus.org"
    )
    got = parse_reject(
        "proxy-reject: END-OF-MESSAGE: ; from=<a@b.example> to=<c@d.example> proto=SMTP"
    )
    assert got is not None and (got.stage, got.text, got.sender) == (
        "END-OF-MESSAGE",
        None,
        "a@b.example",
    )
    assert parse_reject("reject: Unsupported") is None


def test_lines_from_other_programs_are_ignored() -> None:
    """Only programs whose first name part starts with 'postfix' are read."""
    events, parser = run(
        "Mar  4 10:00:00 mx dovecot[1]: 1A2B3C4D5E: to=<a@b.example>, relay=x, delay=1, status=sent (ok)\n"
        "Mar  4 10:00:00 mx opendkim[2]: 1A2B3C4D5E: DKIM-Signature field added"
    )
    assert events == [] and parser.stats.ignored == 2


def test_source_names_the_host_with_the_prefix() -> None:
    """Event.source is '<prefix>:<host>' from the line."""
    events, _ = run(
        "Mar  4 10:00:00 edge-7 postfix/smtpd[1]: NOQUEUE: reject: RCPT from a[192.0.2.1]: "
        "554 5.7.1 <x@y.example>: Relay access denied; from=<a@b.example> to=<x@y.example>",
        source_prefix="mta",
    )
    assert events[0].source == "mta:edge-7"


def test_zone_applies_to_bsd_lines() -> None:
    """A configured zone turns BSD local times into UTC event times."""
    events, _ = run(
        "Mar  4 10:00:00 mx postfix/smtp[1]: 1A2B3C4D5E: to=<a@b.example>, relay=r, delay=1, "
        "dsn=2.0.0, status=sent (250 ok)",
        tz="Europe/Berlin",
    )
    assert events[0].occurred_at == datetime(2024, 3, 4, 9, 0, tzinfo=UTC)


def test_removed_drops_the_queue_state() -> None:
    """qmgr's and postsuper's 'removed' forget the queue id."""
    _, parser = run(
        "Mar  4 10:00:00 mx postfix/smtpd[1]: 1A2B3C4D5E: client=a[192.0.2.1]\n"
        "Mar  4 10:00:00 mx postfix/smtpd[1]: 2B3C4D5E6F: client=a[192.0.2.1]\n"
        "Mar  4 10:00:00 mx postfix/qmgr[2]: 1A2B3C4D5E: removed\n"
        "Mar  4 10:00:00 mx postfix/postsuper[3]: 2B3C4D5E6F: removed"
    )
    assert parser.state_size() == 0 and parser.stats.tracked == 4


def test_parse_yields_what_feed_returns() -> None:
    """parse() over lines gives the same events as feeding them one by one."""
    lines = (DATA / "expired.log").read_text(encoding="utf-8").splitlines()
    fed, _ = run("\n".join(lines))
    assert list(parse(lines, reference_time=REFERENCE)) == fed


def test_stats_account_for_every_line() -> None:
    """Each line is counted once: with events, ignored, tracked or unparsed."""
    events, parser = load("deferred_then_delivered")
    stats = parser.stats.to_dict()
    assert stats == {"lines": 12, "events": 7, "ignored": 1, "tracked": 6, "unparsed": {}}
    assert len(events) == 7
