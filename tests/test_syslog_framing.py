"""Syslog framing: every accepted shape, the BSD year, time zones, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitor.collectors.syslog import BsdYear, Frame, SyslogFramer, split_line

REFERENCE = datetime(2024, 3, 31, 12, 0, tzinfo=UTC)


def frame(line: str, **kw: object) -> Frame | None:
    return split_line(line, reference_time=REFERENCE, **kw)  # type: ignore[arg-type]


def test_bsd_space_padded_day() -> None:
    """A classic BSD line splits into UTC time, host, program, pid and message."""
    assert frame("Mar  4 10:00:00 mx-out1 postfix/smtp[2110]: 4F2A1C0412: to=<a@b.c>") == Frame(
        datetime(2024, 3, 4, 10, 0, tzinfo=UTC),
        "mx-out1",
        "postfix/smtp",
        2110,
        "4F2A1C0412: to=<a@b.c>",
    )


@pytest.mark.parametrize(
    "stamp", ["Mar 04 10:00:00", "Mar  4 10:00:00", "Mar 4 10:00:00"], ids=["zero", "space", "bare"]
)
def test_bsd_day_padding_variants(stamp: str) -> None:
    """Zero-padded, space-padded and unpadded days all read as the same day."""
    got = frame(f"{stamp} host prog[1]: x")
    assert got is not None and got.timestamp == datetime(2024, 3, 4, 10, 0, tzinfo=UTC)


def test_bsd_fraction_of_a_second() -> None:
    """A BSD timestamp with a fraction keeps its microseconds."""
    got = frame("Mar  4 10:00:00.250 host prog[1]: x")
    assert got is not None and got.timestamp.microsecond == 250_000


def test_rfc3339_high_precision_is_converted_to_utc() -> None:
    """rsyslog's RFC 3339 timestamps keep microseconds and are converted to UTC."""
    got = frame("2024-03-04T10:00:00.123456+01:00 mx postfix/qmgr[9]: 1A2B3C4D5E: removed")
    assert got == Frame(
        datetime(2024, 3, 4, 9, 0, 0, 123456, tzinfo=UTC),
        "mx",
        "postfix/qmgr",
        9,
        "1A2B3C4D5E: removed",
    )


def test_rfc3339_with_z_and_nanoseconds() -> None:
    """A ``Z`` suffix and nine fraction digits are accepted (truncated to microseconds)."""
    got = frame("2024-03-04T10:00:00.123456789Z mx prog[1]: x")
    assert got is not None and got.timestamp == datetime(2024, 3, 4, 10, 0, 0, 123456, tzinfo=UTC)


def test_journald_short_iso_offset_without_colon() -> None:
    """journalctl -o short-iso writes ``+0100``; it is read as an offset."""
    got = frame("2024-03-04T10:00:00+0100 mx-out1 postfix/smtp[123]: msg")
    assert got is not None
    assert got.timestamp == datetime(2024, 3, 4, 9, 0, tzinfo=UTC)
    assert (got.service, got.pid, got.message) == ("postfix/smtp", 123, "msg")


def test_iso_without_offset_uses_configured_zone() -> None:
    """An ISO timestamp without offset is local time in the configured zone."""
    got = frame("2024-03-04T10:00:00 mx prog[1]: x", tz="Europe/Berlin")
    assert got is not None and got.timestamp == datetime(2024, 3, 4, 9, 0, tzinfo=UTC)


def test_rfc5424_without_structured_data() -> None:
    """An RFC 5424 line with nil MSGID and SD yields program, pid and message."""
    got = frame("<22>1 2024-03-04T10:00:00.123Z host postfix/smtp 1234 - - 1A2B3C4D5E: to=<a@b.c>")
    assert got == Frame(
        datetime(2024, 3, 4, 10, 0, 0, 123000, tzinfo=UTC),
        "host",
        "postfix/smtp",
        1234,
        "1A2B3C4D5E: to=<a@b.c>",
    )


def test_rfc5424_with_structured_data_escapes_and_bom() -> None:
    """Structured data (with an escaped ``]``) is skipped and the MSG BOM dropped."""
    line = (
        '<22>1 2024-03-04T10:00:00Z host app 77 ID47 [ex@32473 a="x\\]y"][meta n="1"] \ufeffhello'
    )
    got = frame(line)
    assert got is not None and (got.service, got.pid, got.message) == ("app", 77, "hello")


def test_rfc5424_nil_procid_and_nil_time() -> None:
    """A nil PROCID gives pid None; a nil timestamp cannot be placed and is refused."""
    got = frame("<22>1 2024-03-04T10:00:00Z host postfix/smtpd - - - connect from x[192.0.2.1]")
    assert got is not None and got.pid is None
    assert frame("<22>1 - host postfix/smtpd 1 - - connect from x[192.0.2.1]") is None


def test_pri_in_front_of_bsd() -> None:
    """A ``<PRI>`` before a BSD header (syslog over the network) is skipped."""
    got = frame("<13>Mar  4 10:00:00 host prog: message")
    assert got is not None and (got.service, got.pid, got.message) == ("prog", None, "message")


def test_postfix_maillog_file_shape() -> None:
    """Postfix's own maillog_file lines are BSD-shaped, with any syslog_name."""
    got = frame("Nov 24 06:32:12 mta postfix-test/qmgr[14450]: 9A8B7C6D5E: removed")
    assert got is not None
    assert got.timestamp == datetime(2023, 11, 24, 6, 32, 12, tzinfo=UTC)  # after March: 2023
    assert (got.host, got.service, got.pid) == ("mta", "postfix-test/qmgr", 14450)


def test_multi_component_program_is_kept_whole() -> None:
    """``postfix/submission/smtpd`` is one program name."""
    got = frame("Mar  4 10:00:00 mx postfix/submission/smtpd[5]: connect from a[192.0.2.1]")
    assert got is not None and got.service == "postfix/submission/smtpd"


def test_missing_colon_after_pid_is_tolerated() -> None:
    """Some relays drop the ``:`` after ``[pid]``; the message still starts after the space."""
    got = frame("2021-02-19T14:32:14.936091+01:00 smtp01 postfix/smtpd[58176] E89FA2DEDA: client=x")
    assert got is not None and got.message == "E89FA2DEDA: client=x"


def test_carriage_return_and_newline_are_stripped() -> None:
    """A CRLF line ending does not end up in the message."""
    got = frame("Mar  4 10:00:00 host prog[1]: message\r\n")
    assert got is not None and got.message == "message"


def test_empty_message_after_header() -> None:
    """A header with nothing after it frames with an empty message."""
    got = frame("Mar  4 10:00:00 host prog[1]:")
    assert got is not None and got.message == ""


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "Jan",
        "Jan 1 00:00:00",
        "Foo 1 00:00:00 hostname",
        "Jan: 1 00:00:00 hostname postfix/postscreen[12345]: foo",
        "Jan 1 00:00:00 hostname postfix/postscreen[abcde]: foo",
        "Jan 1 00:00:00 hostname postfix/postscreen[12345",
        "Jan 1 00:00:00 hostname postfix/postscreen",
        "Feb 30 00:00:00 hostname prog[1]: impossible date",
        "Mar  4 25:00:00 hostname prog[1]: impossible time",
        "2024-13-04T10:00:00Z host prog[1]: month 13",
        "<22>1 2024-03-04T10:00:00Z host - 1 - - no program",
        "<<<>>>",
        "RCPT TO:<tom@example.net>",
        "\x00\x00\x00",
    ],
)
def test_unframeable_lines_yield_none(line: str) -> None:
    """A line whose framing is not understood yields None instead of a guess."""
    assert frame(line) is None


def test_bsd_year_first_month_after_reference_is_last_year() -> None:
    """A file written in January that starts in December began last year."""
    year = BsdYear(datetime(2024, 1, 5, tzinfo=UTC))
    assert [year(12), year(12), year(1), year(1)] == [2023, 2023, 2024, 2024]


def test_bsd_year_rolls_over_at_new_year_mid_file() -> None:
    """Months going back from December to January mid-file start the next year."""
    framer = SyslogFramer(reference_time=datetime(2023, 12, 31, tzinfo=UTC))
    stamps = [
        framer.split(f"{when} host prog[1]: x")
        for when in ("Dec 31 23:59:59", "Jan  1 00:00:00", "Jan  1 00:00:01", "Feb  2 10:00:00")
    ]
    assert [f.timestamp.year for f in stamps if f] == [2023, 2024, 2024, 2024]


def test_bsd_year_straggler_from_old_year_does_not_move_the_year() -> None:
    """A late December line after January lines belongs to the old year and changes nothing."""
    year = BsdYear(datetime(2024, 1, 10, tzinfo=UTC))
    assert [year(1), year(12), year(1), year(2)] == [2024, 2023, 2024, 2024]


def test_bsd_year_defaults_to_now() -> None:
    """Without a reference the current year (or last, for a later month) is used."""
    now = datetime.now(UTC)
    assert BsdYear()(now.month) == now.year


def test_bsd_time_zone_is_applied_with_daylight_saving() -> None:
    """BSD times are local to the configured zone, including summer time."""
    framer = SyslogFramer(reference_time=datetime(2024, 12, 31, tzinfo=UTC), tz="Europe/Berlin")
    winter = framer.split("Jan 15 12:00:00 host prog[1]: x")
    summer = framer.split("Jul 15 12:00:00 host prog[1]: x")
    assert winter is not None and winter.timestamp == datetime(2024, 1, 15, 11, 0, tzinfo=UTC)
    assert summer is not None and summer.timestamp == datetime(2024, 7, 15, 10, 0, tzinfo=UTC)


def test_default_zone_is_utc() -> None:
    """Without a zone BSD times are taken as UTC."""
    got = frame("Mar  4 10:00:00 host prog[1]: x")
    assert got is not None and got.timestamp.tzinfo is UTC and got.timestamp.hour == 10


def test_repeated_headers_frame_identically() -> None:
    """Lines sharing a header (cached) frame exactly like a fresh framer frames them."""
    framer = SyslogFramer(reference_time=REFERENCE)
    lines = [
        "Mar  4 10:00:00 mx postfix/smtpd[7]: connect from a[192.0.2.1]",
        "Mar  4 10:00:00 mx postfix/smtpd[7]: 1A2B3C4D5E: client=a[192.0.2.1]",
        "Mar  4 10:00:00 mx postfix/smtpd[7]: disconnect from a[192.0.2.1]",
    ]
    assert [framer.split(line) for line in lines] == [frame(line) for line in lines]


def test_unique_headers_still_frame_after_the_cache_gives_up() -> None:
    """With a new microsecond timestamp on every line, framing stays correct throughout."""
    framer = SyslogFramer(reference_time=REFERENCE)
    for n in range(10_000):
        got = framer.split(f"2024-03-04T10:00:00.{n:06d}+00:00 mx prog[1]: line {n}")
        assert got is not None and got.timestamp.microsecond == n and got.message == f"line {n}"
