"""Routing and linking of inbound mail, over parsed messages (no IMAP server needed)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.collectors.mailbox.route import message_ids, normal_subject, route
from monitor.collectors.mailbox.source import InboundSource, Mail
from monitor.collectors.mailbox.tokens import address_token, text_token, token_for, with_token
from monitor.collectors.source import NotUnderstood
from monitor.model import EventType

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
MAILDIR = CORPORA / "sisimai" / "set-of-emails" / "maildir" / "bsd"
SENT = "order-7@app.test"
TOKEN = token_for(SENT, "dave@ok.test")


class Known:
    """A store that knows one outbound message to dave, with its token."""

    def known(self, ids: Sequence[str]) -> str | None:
        return next((i for i in ids if i == SENT), None)

    def recipients(self, message_id: str) -> list[str]:
        return ["dave@ok.test"] if message_id == SENT else []

    def by_token(self, token: str) -> tuple[str, str | None] | None:
        return (SENT, "dave@ok.test") if token == TOKEN else None

    def latest_to(self, recipient: str, before: float) -> str | None:
        return SENT if recipient == "dave@ok.test" else None


def _mail(*headers: str, body: str = "hello") -> bytes:
    base = ["From: Dave <dave@ok.test>", "To: support@app.test", "Message-ID: <in-1@ok.test>",
            "Date: Sun, 06 Dec 2026 10:00:00 +0000", "Subject: question"]  # fmt: skip
    names = {h.split(":")[0].lower() for h in headers}
    lines = [h for h in base if h.split(":")[0].lower() not in names] + list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def _route(data: bytes, role: str = "replies") -> object:
    return route(data, mailbox="support", role=role, linker=Known(), source="mailbox:support")


def test_tokens_round_trip() -> None:
    """A token is stable, travels in a subaddress and in quoted text, and is found there."""
    assert token_for("<a@b>", "X@Y") == token_for("a@b", "x@y")
    assert TOKEN.startswith("mm") and len(TOKEN) == 18
    assert with_token("bounces+old@app.test", TOKEN) == f"bounces+{TOKEN}@app.test"
    assert address_token([None, f"Support <support+{TOKEN}@app.test>"]) == TOKEN
    assert address_token(["bounces+alice=ok.test@app.test"]) is None
    assert text_token(f"> ref:{TOKEN}.") == TOKEN
    assert text_token("mm0123") is None


def test_thread_header_parsing() -> None:
    """In-Reply-To / References yield bare ids in order; subjects lose reply prefixes."""
    assert message_ids("<a@x> <b@y>\r\n <c@z>") == ["a@x", "b@y", "c@z"]
    assert message_ids("bare@x") == ["bare@x"]
    assert message_ids(None) == []
    assert normal_subject("Re: AW: Fwd:  Your   Receipt") == "your receipt"
    assert normal_subject("RE[2]: x") == "x"


@pytest.mark.parametrize(("headers", "body", "link"), [
    (("In-Reply-To: <order-7@app.test>",), "x", "in-reply-to"),
    (("References: <other@x> <order-7@app.test> <unknown@y>",), "x", "references"),
    ((f"To: support+{TOKEN}@app.test",), "x", "verp"),
    (("Delivered-To: reply+dave=ok.test@app.test", "Subject: Re: hi"), "x", "verp"),
    (("Subject: Re: order",), f"On Monday you wrote:\n> [ref:{TOKEN}]", "token"),
])  # fmt: skip
def test_reply_linked(headers: tuple[str, ...], body: str, link: str) -> None:
    """A human reply joins the original by thread headers, then the address, then a quote."""
    routed = _route(_mail(*headers, body=body))
    assert (routed.category, routed.record.link, routed.record.linked_message_id) == (
        "reply", link, SENT)
    [event] = routed.events
    assert (event.type, event.message_id, event.recipient) == (
        EventType.REPLIED, SENT, "dave@ok.test")


def test_reply_unlinked_and_unmatched() -> None:
    """A reply to something unknown is counted but makes no event; mail that answers
    nothing is unmatched."""
    routed = _route(_mail("In-Reply-To: <nobody@x>"))
    assert (routed.category, routed.record.link, routed.events) == ("reply", "none", [])
    routed = _route(_mail("Subject: our newsletter"))
    assert routed.category == "unmatched"


def test_noreply_flags_every_human_message() -> None:
    """Anything a person writes to the no-reply address is a reply to it, flagged."""
    routed = _route(_mail("Subject: can I write here?"), role="noreply")
    assert (routed.category, routed.record.to_noreply) == ("reply", True)
    linked = _route(_mail("References: <order-7@app.test>"), role="noreply")
    assert linked.events[0].tags == ("to_noreply",)


def test_two_replies_in_one_second_are_two_events() -> None:
    """The reply's own Message-ID is part of its event id."""
    one = _route(_mail("In-Reply-To: <order-7@app.test>"))
    two = _route(_mail("In-Reply-To: <order-7@app.test>", "Message-ID: <in-2@ok.test>"))
    assert one.events[0].id != two.events[0].id
    assert one.events[0].id == _route(_mail("In-Reply-To: <order-7@app.test>")).events[0].id


@pytest.mark.parametrize("header", [
    "Auto-Submitted: auto-replied", "X-Autoreply: yes", "Precedence: auto_reply",
    "Subject: Out of Office: question",
])  # fmt: skip
def test_auto_replies(header: str) -> None:
    """RFC 3834 Auto-Submitted, X-Autoreply, Precedence and vacation subjects -> auto_replied,
    linked by In-Reply-To."""
    routed = _route(_mail(header, "In-Reply-To: <order-7@app.test>"))
    assert routed.category == "auto_reply"
    [event] = routed.events
    assert (event.type, event.message_id) == (EventType.AUTO_REPLIED, SENT)


def test_corpus_reports() -> None:
    """Real DSN and ARF samples: bounced and complained events, read by collectors/mail."""
    dsn = _route((MAILDIR / "lhost-postfix-01.eml").read_bytes(), role="bounces")
    assert dsn.category == "bounce" and {e.type for e in dsn.events} == {EventType.BOUNCED}
    arf = _route((MAILDIR / "arf-01.eml").read_bytes(), role="fbl")
    assert arf.category == "complaint" and [e.type for e in arf.events] == [EventType.COMPLAINED]


def test_dsn_without_original_joins_by_verp_token() -> None:
    """A bounce that returned no headers of the original joins it by its return path."""
    dsn = (MAILDIR / "lhost-postfix-01.eml").read_bytes()
    head, _, rest = dsn.partition(b"\n\n")
    head = b"\n".join(line for line in head.split(b"\n") if not line.lower().startswith(b"to:"))
    data = head + f"\nTo: bounces+{TOKEN}@app.test".encode() + b"\n\n" + rest
    routed = _route(data, "bounces")
    if routed.record.link == "report":  # the sample returns the original's headers
        assert routed.record.linked_message_id == routed.events[0].message_id
    else:
        assert (routed.record.link, routed.events[0].message_id) == ("verp", SENT)


def test_source_counts_and_refuses() -> None:
    """The source counts each unit, refuses bytes that are not mail, notes a cut message."""
    source = InboundSource("support", Known())
    items = source.feed(Mail(_mail("In-Reply-To: <order-7@app.test>"),
                             datetime(2026, 12, 6, tzinfo=UTC), size=10_000_000))
    record = items[-1]
    assert record.error is not None and record.error.startswith("cut at")  # type: ignore[union-attr]
    with pytest.raises(NotUnderstood):
        source.feed(Mail(b"\x00\x01 binary"))
    assert source.stats.lines == 2 and source.categories == {"reply": 1}
    with pytest.raises(ValueError, match="role"):
        InboundSource("x", Known(), role="other")
