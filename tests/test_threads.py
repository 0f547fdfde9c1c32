"""Thread headers from Postfix header_checks WARN lines, and Message-ID checks."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.collectors.registry import line_source
from monitor.threads.build import well_formed
from monitor.threads.headers import MessageHeader, PostfixHeaderSource


def test_warn_lines_become_header_records() -> None:
    """SMTP and pickup (``from local``) WARN lines of thread headers are records; other
    headers and other lines are ignored."""
    source = line_source("postfix-headers")
    assert isinstance(source, PostfixHeaderSource)
    lines = [
        "Dec  6 18:10:49 mta postfix/cleanup[812]: 4F1A2B3C: warning: header In-Reply-To: "
        "<tr-1@ok.test> from unknown[127.0.0.1]; from=<app@app.test> to=<dave@ok.test> "
        "proto=ESMTP helo=<client.test>",
        "Dec  6 18:10:49 mta postfix/cleanup[812]: 5A6B: warning: header Subject: Re: a; b "
        "from local; from=<app@app.test>",
        "Dec  6 18:10:49 mta postfix/cleanup[812]: 5A6B: warning: header X-Mailer: x from "
        "local; from=<app@app.test>",
        "Dec  6 18:10:49 mta postfix/smtp[813]: 5A6B: to=<d@ok.test>, status=sent (250 ok)",
    ]
    items = [i for n, line in enumerate(lines) for i in source.feed(line, f"log:{n}")]
    assert [(r.queue_id, r.name, r.value, r.sender, r.recipient) for r in items
            if isinstance(r, MessageHeader)] == [
        ("4F1A2B3C", "in-reply-to", "<tr-1@ok.test>", "app@app.test", "dave@ok.test"),
        ("5A6B", "subject", "Re: a; b", "app@app.test", None),
    ]  # fmt: skip
    assert items[0].occurred_at.replace(year=2026) == datetime(2026, 12, 6, 18, 10, 49,
                                                               tzinfo=UTC)  # fmt: skip
    assert source.stats.lines == 4 and source.stats.ignored == 2


def test_message_id_form() -> None:
    """RFC 5322 msg-id: id-left@id-right, nothing else."""
    assert well_formed("a.b+c/d@app.example")
    assert not well_formed("no-at-sign")
    assert not well_formed("a@b@c")
    assert not well_formed("a b@c")
