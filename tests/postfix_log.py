"""A generated Postfix log: multi-recipient messages, deferrals and retries, bounces,
expiries, local submissions and the notices Postfix sends back, interleaved in time."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = ["Message", "generate"]

_START = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "example.org", "corp.example")
_SENDERS = ("noreply@app.example", "orders@shop.example", "news@news.example")
# What happens to one recipient: the results of its attempts, in order.
_PLANS = (
    ("sent",),
    ("sent",),
    ("deferred", "sent"),
    ("deferred", "deferred", "sent"),
    ("bounced",),
    ("deferred", "bounced"),
    ("deferred", "deferred", "deferred", "expired"),
)
_REPLIES = {
    "sent": ("2.0.0", "250 2.0.0 OK queued as Q{n}"),
    "deferred": (
        "4.7.0",
        "host mx.{d}[198.51.100.7] said: 421 4.7.0 Try again later (in reply to MAIL FROM command)",
    ),
    "bounced": (
        "5.1.1",
        "host mx.{d}[198.51.100.7] said: 550 5.1.1 <{r}>: user unknown "
        "(in reply to RCPT TO command)",
    ),
}


@dataclass
class Message:
    """One message's queue id, Message-ID and lines (time, text) in log order."""

    qid: str
    message_id: str
    lines: list[tuple[datetime, str]] = field(default_factory=list)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def generate(messages: int = 24, seed: int = 16) -> tuple[list[str], list[Message]]:
    """The log's lines in time order, and the messages (notices included) they carry."""
    rnd = random.Random(seed)
    out: list[Message] = []
    serial = 0

    def qid() -> str:
        nonlocal serial
        serial += 1
        return f"{0xA0000 + serial * 7919:X}{serial:03d}"

    def line(msg: Message, at: datetime, daemon: str, text: str) -> None:
        pid = {
            "smtpd": 2101,
            "cleanup": 2104,
            "qmgr": 1875,
            "smtp": 2110,
            "pickup": 2200,
            "bounce": 2300,
        }[daemon]
        msg.lines.append((at, f"{_stamp(at)} mx1 postfix/{daemon}[{pid}]: {msg.qid}: {text}"))

    def notice(about: Message, sender: str, at: datetime) -> None:
        """Postfix's own non-delivery notice to ``sender``: cleanup is its first line."""
        msg = Message(qid(), f"{at:%Y%m%d%H%M%S}.{serial}@mx1.example")
        line(msg, at, "cleanup", f"message-id=<{msg.message_id}>")
        line(
            about,
            at + timedelta(milliseconds=3),
            "bounce",
            f"sender non-delivery notification: {msg.qid}",
        )
        line(
            msg,
            at + timedelta(milliseconds=6),
            "qmgr",
            "from=<>, size=2400, nrcpt=1 (queue active)",
        )
        line(
            msg,
            at + timedelta(seconds=1),
            "smtp",
            f"to=<{sender}>, relay=mx.app.example[192.0.2.25]:25, delay=1, "
            f"delays=0/0/0.5/0.5, dsn=2.0.0, status=sent (250 2.0.0 OK)",
        )
        line(msg, at + timedelta(seconds=1, milliseconds=2), "qmgr", "removed")
        out.append(msg)

    for n in range(messages):
        t0 = _START + timedelta(seconds=37 * n, microseconds=rnd.randrange(1_000_000))
        sender = rnd.choice(_SENDERS)
        msg = Message(qid(), f"m{n}.{rnd.randrange(10**6)}@{sender.split('@')[1]}")
        out.append(msg)
        rcpts = [f"u{n}x{i}@{rnd.choice(_DOMAINS)}" for i in range(rnd.randint(1, 4))]
        plans = {r: list(rnd.choice(_PLANS)) for r in rcpts}
        if n % 5 == 4:
            line(msg, t0, "pickup", f"uid=1000 from=<{sender}>")
        else:
            line(msg, t0, "smtpd", "client=app.example[192.0.2.10]")
        line(msg, t0 + timedelta(milliseconds=40), "cleanup", f"message-id=<{msg.message_id}>")
        at, size, failed = t0 + timedelta(milliseconds=80), rnd.randrange(900, 9000), False
        for attempt in range(5):
            pending = [r for r, plan in plans.items() if plan]
            if not pending:
                break
            line(
                msg, at, "qmgr", f"from=<{sender}>, size={size}, nrcpt={len(rcpts)} (queue active)"
            )
            expired = False
            for k, r in enumerate(pending):
                result = plans[r].pop(0)
                if result == "expired":
                    expired = True
                    continue
                dsn, text = _REPLIES[result]
                d = r.split("@")[1]
                when = at + timedelta(seconds=1 + k, milliseconds=rnd.randrange(900))
                delay = round((when - t0).total_seconds(), 1)
                status = "sent" if result == "sent" else result
                failed |= result == "bounced"
                line(
                    msg,
                    when,
                    "smtp",
                    f"to=<{r}>, relay=mx.{d}[198.51.100.7]:25, delay={delay}, "
                    f"delays=0.1/0/0.3/0.4, dsn={dsn}, status={status} "
                    f"({text.format(n=n, d=d, r=r)})",
                )
            if expired:
                at += timedelta(seconds=30)
                line(msg, at, "qmgr", f"from=<{sender}>, status=expired, returned to sender")
                failed = True
                break
            at += timedelta(minutes=10 * 2**attempt, milliseconds=rnd.randrange(900))
        end = max(t for t, _ in msg.lines) + timedelta(milliseconds=20)
        if failed:
            notice(msg, sender, end)
            end += timedelta(milliseconds=10)
        line(msg, end, "qmgr", "removed")
    ordered = sorted((t, i, text) for i, m in enumerate(out) for t, text in m.lines)
    return [text for _, _, text in ordered], out
