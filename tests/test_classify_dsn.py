"""DSN, ARF and auto-reply parsing: labelled fixtures, events, CLI and damaged input.

The fixtures in ``tests/data/bounces/`` are hand-written in the shapes Postfix, Exim,
qmail, Sendmail, Gmail, Office 365, Yahoo, Amazon SES (over SNS), Trend Micro InterScan and
PowerMTA send, plus the reports real Postfix and Exim wrote for documented provider replies
(``postfix-*``/``exim-*``, see ``test_classify_mta.py``), with the parser's per-recipient
verdicts in ``expected.json`` beside them (regenerate with ``MAILMON_REGEN_GOLDEN=1``, then
review the diff).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from golden import check_json

from monitor.collectors.mail.dsn import parse
from monitor.collectors.mail.events import report_events
from monitor.collectors.mail.original import verp_recipient
from monitor.model import EventType

DATA = Path(__file__).resolve().parent / "data" / "bounces"
EXPECTED = DATA / "expected.json"
MAILMON = [sys.executable, "-m", "monitor"]


def _summary(name: str) -> dict[str, object]:
    r = parse((DATA / name).read_bytes())
    return {
        "kind": r.kind,
        "original_message_id": r.original.message_id,
        "recipients": [
            {"recipient": x.recipient, "status": x.status, "reason": x.reason, "hard": x.hard}
            for x in r.recipients
        ],
    }


def test_expected_file_covers_every_fixture() -> None:
    """The labelled file equals the parser's verdicts for all fixtures (MAILMON_REGEN_GOLDEN=1 rewrites it)."""
    check_json(EXPECTED, {p.name: _summary(p.name) for p in sorted(DATA.glob("*.eml"))})


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.eml")))
def test_fixture_verdicts(name: str) -> None:
    """Every fixture yields its labelled recipients, statuses, reasons and original Message-ID."""
    expected = json.loads(EXPECTED.read_text())
    assert _summary(name) == expected[name]


def test_every_fixture_is_labelled() -> None:
    """The expected file and the fixtures name the same emails."""
    expected = json.loads(EXPECTED.read_text())
    assert set(expected) == {p.name for p in DATA.glob("*.eml")}


def test_dsn_fields_per_recipient() -> None:
    """A two-recipient Postfix DSN keeps each recipient's action, Remote-MTA and queue id."""
    r = parse((DATA / "postfix-multi.eml").read_bytes())
    assert [x.recipient for x in r.recipients] == ["alice@gmail.com", "bob@outlook.com"]
    alice, bob = r.recipients
    assert (alice.action, alice.remote_mta, alice.reply_code) == (
        "failed", "gmail-smtp-in.l.google.com", 550,
    )  # fmt: skip
    assert alice.rule.startswith("google.") and bob.reason == "blocked"
    assert alice.command == "RCPT"
    assert r.original.queue_id == "4XyZ12AbCdz9sW"
    assert r.original.verp_recipient == "alice@gmail.com"
    assert r.original.where == "rfc822-headers"
    assert not r.best_effort


def test_verp_addresses_decode() -> None:
    """VERP return paths name the original recipient; ordinary addresses do not."""
    assert verp_recipient("bounces+alice=example.com@mail.example.net") == "alice@example.com"
    assert verp_recipient("<bounce-42-bob=example.org@lists.example.net>") == "bob@example.org"
    assert verp_recipient("shop@example.net", None) is None


def test_bounce_events_join_the_original_message() -> None:
    """A DSN becomes bounced events carrying the original Message-ID, time and reason."""
    events = report_events(parse((DATA / "postfix-multi.eml").read_bytes()), source="mailbox")
    assert [e.type for e in events] == [EventType.BOUNCED, EventType.BOUNCED]
    first = events[0]
    assert first.message_id == "receipt-20261124-0001@example.net"
    assert (first.recipient, first.reason, first.hard) == ("alice@gmail.com", "userunknown", True)
    assert first.occurred_at.isoformat() == "2026-11-24T07:15:02+00:00"
    assert first.queue_id == "4XyZ12AbCdz9sW" and first.relay == "gmail-smtp-in.l.google.com"


def test_delayed_dsn_is_a_deferral() -> None:
    """``Action: delayed`` maps to a soft ``deferred`` event."""
    (event,) = report_events(parse((DATA / "postfix-delayed.eml").read_bytes()))
    assert event.type is EventType.DEFERRED and event.hard is False
    assert event.message_id == "receipt-20261124-0002@example.net"


def test_arf_is_a_complaint() -> None:
    """An ARF abuse report becomes ``complained`` for Original-Rcpt-To with its fields kept."""
    report = parse((DATA / "arf-abuse.eml").read_bytes())
    assert report.feedback is not None
    assert (report.feedback.feedback_type, report.feedback.source_ip) == ("abuse", "192.0.2.10")
    assert report.feedback.reported_domain == "example.net"
    (event,) = report_events(report)
    assert event.type is EventType.COMPLAINED and event.recipient == "judy@example-isp.com"
    assert event.message_id == "receipt-20261124-0009@example.net"


def test_vacation_reply_links_through_in_reply_to() -> None:
    """An RFC 3834 auto-reply is ``vacation`` for its sender and joins the replied-to message."""
    (event,) = report_events(parse((DATA / "vacation.eml").read_bytes()))
    assert event.type is EventType.AUTO_REPLIED
    assert (event.recipient, event.reason) == ("ken@example.com", "vacation")
    assert event.message_id == "receipt-20261124-0010@example.net"


def test_garbage_never_raises() -> None:
    """Random bytes, an empty input and broken MIME give a result, not an exception."""
    for blob in (b"", b"\x00\xff\xfe" * 100, b"Content-Type: multipart/report\n\n--x\n"):
        report = parse(blob)
        assert report.kind in ("unknown", "bounce", "dsn")


def test_malformed_mime_is_marked_best_effort() -> None:
    """A DSN whose closing boundary is missing is still read and marked best effort."""
    blob = (DATA / "postfix-multi.eml").read_bytes()
    cut = blob[: blob.index(b"--4XyZ12AbCdz9sW.1764000902/mx-out1.example.net--")]
    report = parse(cut)
    assert [x.reason for x in report.recipients] == ["userunknown", "blocked"]
    assert report.best_effort and report.defects


def test_wrong_charset_is_tolerated() -> None:
    """A text part in an unknown charset is decoded with replacement and noted."""
    blob = (
        (DATA / "qmail.eml")
        .read_bytes()
        .replace(
            b"Subject: failure notice\n",
            b"Subject: failure notice\nContent-Type: text/plain; charset=x-no-such-charset\n",
        )
        .replace(b"Sorry, no mailbox", b"Sorry\xff\xfe no mailbox")
    )
    report = parse(blob)
    assert report.recipients[0].recipient == "frank@example.jp"
    assert any("undecodable" in d for d in report.defects)


def test_truncated_input_is_marked() -> None:
    """Input over ``max_bytes`` is cut there, parsed, and marked truncated."""
    blob = (DATA / "exim-rcpt.eml").read_bytes()
    report = parse(blob, max_bytes=900)
    assert report.truncated and report.best_effort
    assert report.recipients[0].recipient == "dave@example.com"


def test_huge_attachment_is_capped(tmp_path: Path) -> None:
    """A 30 MB bounce is read only up to --max-bytes and still classified."""
    blob = (DATA / "exim-rcpt.eml").read_bytes() + b"A" * (30 * 1024 * 1024)
    path = tmp_path / "huge.eml"
    path.write_bytes(blob)
    out = subprocess.run(
        [*MAILMON, "classify", str(path), "--json", "--max-bytes", "100000"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["reason"] == "mailboxfull" and row["truncated"] is True


def test_cli_json_lines_and_errors(tmp_path: Path) -> None:
    """The CLI prints one JSON object per recipient and an error line (exit 1) per bad file."""
    out = subprocess.run(
        [*MAILMON, "classify", str(DATA / "postfix-multi.eml"), str(tmp_path / "nope.eml"),
         "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 1
    assert [r.get("recipient") for r in rows[:2]] == ["alice@gmail.com", "bob@outlook.com"]
    for key in ("status", "reply_code", "reason", "hard", "diagnostic", "blame", "rule"):
        assert key in rows[0]
    assert rows[0]["original_message_id"] == "receipt-20261124-0001@example.net"
    assert rows[2]["file"].endswith("nope.eml") and "error" in rows[2]


def test_cli_reads_mbox_and_stdin(tmp_path: Path) -> None:
    """An mbox yields each of its messages; ``-`` reads one email from stdin."""
    box = tmp_path / "bounces.mbox"
    with box.open("wb") as f:
        for name in ("qmail.eml", "exim-rcpt.eml"):
            f.write(b"From MAILER-DAEMON Tue Nov 24 08:00:00 2026\n")
            f.write((DATA / name).read_bytes().replace(b"\nFrom ", b"\n>From ") + b"\n")
    out = subprocess.run(
        [*MAILMON, "classify", str(box), "--json"], capture_output=True, text=True, check=True
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["message"], r["recipient"]) for r in rows] == [
        (1, "frank@example.jp"), (2, "dave@example.com"),
    ]  # fmt: skip
    stdin = subprocess.run(
        [*MAILMON, "classify", "-", "--json"],
        input=(DATA / "vacation.eml").read_text(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(stdin.stdout)["reason"] == "vacation"


def test_refusal_at_connection_is_blocked() -> None:
    """A 5xx answer to the connection itself is a block of the sending host (Sisimai's rule)."""
    from monitor.classify import classify

    verdict = classify(550, None, "550 Access denied...", command="CONNECT")
    assert (verdict.reason, verdict.rule) == ("blocked", "reports.refused_at_connect")
    assert classify(550, None, "550 Access denied...", command="RCPT").reason != "blocked"


def test_trace_shows_the_bounce_in_the_original_delivery(tmp_path: Path) -> None:
    """Stored with the original submission, a DSN's bounce lands on that delivery row."""
    from datetime import UTC, datetime

    from monitor.model import Event
    from monitor.pipeline import Pipeline
    from monitor.store import Store

    with Store.open(f"sqlite:///{tmp_path / 'mailmon.db'}") as store:
        pipeline = Pipeline(store)
        pipeline.put(
            Event(
                EventType.SUBMITTED,
                datetime(2026, 11, 24, 7, 14, 58, tzinfo=UTC),
                "postfix:mx-out1",
                message_id="receipt-20261124-0001@example.net",
                queue_id="4XyZ12AbCdz9sW",
                sender="shop@example.net",
                recipient="alice@gmail.com",
            )
        )
        report = parse((DATA / "postfix-multi.eml").read_bytes())
        for event in report_events(report, source="mailbox:bounces"):
            pipeline.put(event)
        pipeline.flush()
        (found,) = [
            t for t in store.trace("receipt-20261124-0001@example.net")
            if t["delivery"]["recipient"] == "alice@gmail.com"
        ]  # fmt: skip
    delivery = found["delivery"]
    assert (delivery["state"], delivery["reason"], delivery["rule"]) == (
        "bounced", "userunknown", "google.no_such_user",
    )  # fmt: skip
    assert [e.type for e in found["events"]] == [EventType.SUBMITTED, EventType.BOUNCED]


def _dsn(boundary: str, recipient: str, diagnostic: str, returned: str) -> str:
    return (
        "From: MAILER-DAEMON@mx.example.net\nTo: bounces@example.net\n"
        "Subject: Returned mail: see transcript for details\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n\n'
        f"--{boundary}\nContent-Type: text/plain\n\nThe message could not be delivered.\n\n"
        f"--{boundary}\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.net\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n\n"
        f"--{boundary}\nContent-Type: message/rfc822\n\n{returned}\n--{boundary}--\n"
    )


def test_dsn_returned_inside_a_dsn_is_reported_apart() -> None:
    """A bounce of a bounce: the inner DSN's recipient is found, kept apart from the outer's."""
    inner = _dsn("inner", "gone@example.org", "550 5.1.1 <gone@example.org>: User unknown",
                 "From: a@example.net\nTo: gone@example.org\nSubject: hi\n\nhi")  # fmt: skip
    outer = _dsn("outer", "postmaster@example.net", "550 5.1.1 No such user", inner)
    report = parse(outer.encode())
    assert [r.recipient for r in report.recipients] == ["postmaster@example.net"]
    assert [(r.recipient, r.reason) for r in report.nested] == [("gone@example.org", "userunknown")]
    assert all(e.recipient != "gone@example.org" for e in report_events(report, source="test"))


def test_recipient_groups_without_blank_lines_are_split() -> None:
    """Per-recipient fields run together (no blank line, RFC 3464 section 2) still give one
    recipient each, with its own Original-Recipient, status and reason."""
    fields = (
        "Reporting-MTA: dns; relay.example.net\n"
        "Final-Recipient: rfc822; full@example.org\nAction: failed\nStatus: 5.2.2\n"
        "Diagnostic-Code: smtp; 550 5.2.2 <full@example.org>... Mailbox Full\n"
        "Original-Recipient: rfc822; alias@example.org\n"
        "Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>... User Unknown\n"
    )
    text = (
        "From: MAILER-DAEMON@relay.example.net\nTo: s@example.net\nSubject: Undeliverable\n"
        "MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; "
        'boundary="b"\n\n--b\nContent-Type: text/plain\n\nNot delivered.\n\n'
        f"--b\nContent-Type: message/delivery-status\n\n{fields}\n--b--\n"
    )
    got = [
        (r.recipient, r.original_recipient, r.status, r.reason, r.hard)
        for r in parse(text.encode()).recipients
    ]
    assert got == [
        ("full@example.org", None, "5.2.2", "mailboxfull", False),
        ("gone@example.org", "alias@example.org", "5.1.1", "userunknown", True),
    ]


def test_sendmail_result_line_is_explained_by_the_session_above_it() -> None:
    """In an old Sendmail transcript each "554 <a@b>... ..." line ends its own session: the
    next host's "550 Host unknown" is not lent to the address before it."""
    text = (
        "From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example.net>\n"
        "To: s@example.net\nSubject: Returned mail: Remote protocol error\n\n"
        "   ----- Transcript of session follows -----\n"
        "While talking to mx.example.org:\n>>> MAIL From:<s@example.net>\n"
        "<<< 550 Relaying denied for your host\n"
        "554 <ann@example.org>... Remote protocol error\n"
        "550 example.com (smtp)... 550 Host unknown\n"
        "554 <bob@example.com>... 550 Host unknown (Authoritative answer from name server)\n"
    )
    got = {r.recipient: (r.reason, r.hard) for r in parse(text.encode()).recipients}
    assert got == {
        "ann@example.org": ("norelaying", False),  # the refused MAIL FROM of its session
        "bob@example.com": ("hostunknown", True),
    }


def test_one_line_statement_above_the_recipients_explains_them() -> None:
    """A report's own one-line statement above its recipient lines ("The user(s) account is
    disabled.", blank lines between) is part of their explanation; a longer paragraph's
    last line is not."""

    def report(notice: str) -> tuple[str, bool]:
        text = (
            "From: Postmaster <postmaster@mail.example.jp>\nTo: s@example.net\n"
            "Subject: Mail System Error - Returned Mail\nMIME-Version: 1.0\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
            f"--b\nContent-Type: text/plain\n\n{notice}\n\n\n"
            "<kim@example.jp>: 550 user unknown (in reply to RCPT TO command)\n\n"
            "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mail.example.jp\n\n"
            "Final-Recipient: rfc822; kim@example.jp\nAction: failed\nStatus: 5.0.0\n\n--b--\n"
        )
        (r,) = parse(text.encode()).recipients
        return r.reason, r.hard

    assert report("The user(s) account is disabled.") == ("suspend", False)
    assert report("We tried.\nThe user(s) account is disabled.") == ("userunknown", True)


def test_sendmail_expanded_alias_is_the_original_recipient() -> None:
    """Sendmail's "(expanded from: <a@b>)" above a failed pipe names the original recipient."""
    text = (
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.edu>\nTo: <s@example.com>\n"
        "Subject: Returned mail: Service unavailable\n\n"
        "   ----- The following addresses had permanent fatal errors -----\n"
        '"|exec /usr/local/bin/procmail -f- || exit 75 #kim"\n'
        "    (expanded from: <kim@example.edu>)\n\n"
        "   ----- Transcript of session follows -----\n"
        '554 "|exec /usr/local/bin/procmail -f- || exit 75 #kim"... Service unavailable\n\n'
        "Final-Recipient: RFC822; kim@mx.example.edu\nAction: failed\nStatus: 5.5.0\n"
    )
    report = parse(text.encode())
    assert report.recipients[0].original_recipient == "kim@example.edu"


def test_cli_ingest_mbox_joins_bounces_to_the_original(tmp_path: Path) -> None:
    """`mailmon ingest mbox` stores a report's bounces on the original's deliveries, once."""
    import mailbox

    box = mailbox.mbox(tmp_path / "bounces.mbox")
    for name in ("postfix-microsoft-rcpt.eml", "arf-abuse.eml"):
        box.add((DATA / name).read_bytes())
    box.close()
    db = f"sqlite:///{tmp_path / 'm.db'}"

    def ingest() -> dict[str, object]:
        out = subprocess.run(
            [*MAILMON, "ingest", "mbox", str(tmp_path / "bounces.mbox"), "--db", db, "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(out.stdout)
        assert isinstance(result, dict)
        return result

    first, again = ingest(), ingest()
    assert (first["messages"], first["by_kind"], first["events"]) == (2, {"dsn": 1, "arf": 1}, 5)
    assert (again["stored"], again["duplicates"]) == (0, 5)
    original = json.loads(EXPECTED.read_text())["postfix-microsoft-rcpt.eml"]["original_message_id"]
    trace = json.loads(
        subprocess.run(
            [*MAILMON, "trace", f"<{original}>", "--json", "--db", db],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    found = {d["recipient"]: (d["state"], d["reason"]) for d in trace["deliveries"]}
    assert found["o365-recipient-not-found@microsoft.test"] == ("bounced", "userunknown")
    assert found["outlook-blocklist@microsoft.test"] == ("bounced", "blocked")
