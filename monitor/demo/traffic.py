"""Simulated outgoing mail as the Postfix log lines a real MTA would write, in event time.

    traffic = PostfixTraffic(seed=1, per_minute=120, incident_at=t0 + 180)
    for line in traffic.advance(to=now): ...   # the lines dated up to ``now``, in order

Each message is submitted (``smtpd``, ``cleanup``, ``qmgr``), then tried at the
recipient's MX (``smtp``): delivered, deferred and tried again a few minutes later, or
bounced.  From ``incident_at`` on, Gmail answers most attempts with its rate-limit
deferral (``421 4.7.28``) or its spam block (``550 5.7.1``), the replies that make a
sender's day bad; every other provider goes on as before.  The same seed gives the same
traffic, so a test can name the messages it will search for.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["DOMAINS", "SENDERS", "PostfixTraffic"]

HOST = "demo-mx"
#: Recipient domains with their share of the traffic and their MX host (the relay= of a line).
DOMAINS: tuple[tuple[str, float, str], ...] = (
    ("gmail.com", 0.42, "gmail-smtp-in.l.google.com[142.250.102.26]"),
    ("outlook.com", 0.14, "outlook-com.olc.protection.outlook.com[52.101.68.15]"),
    ("hotmail.com", 0.08, "hotmail-com.olc.protection.outlook.com[52.101.11.0]"),
    ("yahoo.com", 0.14, "mta6.am0.yahoodns.net[67.195.204.72]"),
    ("icloud.com", 0.08, "mx01.mail.icloud.com[17.57.154.6]"),
    ("gmx.de", 0.06, "mx00.emig.gmx.net[212.227.15.9]"),
    ("shop-customers.example", 0.08, "mx.shop-customers.example[192.0.2.80]"),
)
SENDERS = ("orders@shop.example", "news@news.shop.example", "no-reply@accounts.shop.example")
_SENT = "250 2.0.0 OK {n} - accepted"
_USER_UNKNOWN = ("5.1.1", "host {relay} said: 550 5.1.1 <{rcpt}>: Recipient address rejected: "
                 "User unknown (in reply to RCPT TO command)")  # fmt: skip
_BUSY = ("4.2.1", "host {relay} said: 421 4.2.1 Service temporarily unavailable, try again "
         "later (in reply to MAIL FROM command)")  # fmt: skip
#: Gmail's replies when it throttles or blocks a sender (support.google.com/mail/answer/81126).
_GMAIL_RATE = ("4.7.28", "host {relay} said: 421-4.7.28 Gmail has detected an unusual rate of "
               "unsolicited mail originating from your IP address. To protect our users from "
               "spam, mail sent from your IP address has been temporarily rate limited. "
               "421 4.7.28 For more information, go to https://support.google.com/mail/?p="
               "UnsolicitedRateLimitError (in reply to end of DATA command)")  # fmt: skip
_GMAIL_BLOCK = ("5.7.1", "host {relay} said: 550-5.7.1 Our system has detected that this message "
                "is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this "
                "message has been blocked. 550 5.7.1 For more information, go to "
                "https://support.google.com/mail/?p=UnsolicitedMessageError (in reply to end of "
                "DATA command)")  # fmt: skip
_PIDS = {"smtpd": 2101, "cleanup": 2104, "qmgr": 1875, "smtp": 2110, "bounce": 2300}
_RETRY_SECONDS = 300.0
_MAX_ATTEMPTS = 4


@dataclass
class _Recipient:
    qid: str
    rcpt: str
    domain: str
    relay: str
    sender: str
    submitted: float
    attempt: int = 0


class PostfixTraffic:
    """Postfix log lines for simulated traffic; :meth:`advance` moves its clock on."""

    def __init__(self, *, seed: int = 1, per_minute: float = 120.0, start: float,
                 incident_at: float | None = None,
                 incident_share: float = 0.85) -> None:  # fmt: skip
        self.rng = random.Random(seed)
        self.per_minute = per_minute
        self.now = start
        self.incident_at = incident_at
        self.incident_share = incident_share
        self.serial = 0
        self._lines: list[tuple[float, int, str]] = []  # a heap by time, then order written
        self._order = 0
        self._attempts: list[tuple[float, int, _Recipient]] = []  # a heap of attempts due
        #: Message-IDs and recipients written so far, newest last (for a demo's hints).
        self.messages: list[tuple[str, str, str]] = []

    def advance(self, to: float) -> Iterator[str]:
        """The log lines dated in ``(now, to]``, in time order; the clock then reads ``to``."""
        if to <= self.now:
            return
        seconds = to - self.now
        for _ in range(_poisson(self.rng, self.per_minute * seconds / 60.0)):
            self._submit(self.now + self.rng.random() * seconds)
        while self._attempts and self._attempts[0][0] <= to:
            at, _, recipient = heapq.heappop(self._attempts)
            self._attempt(recipient, at)
        self.now = to
        while self._lines and self._lines[0][0] <= to:
            yield heapq.heappop(self._lines)[2]

    def incident_on(self, at: float) -> bool:
        return self.incident_at is not None and at >= self.incident_at

    def _line(self, at: float, daemon: str, qid: str, text: str) -> None:
        stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")
        self._order += 1
        heapq.heappush(self._lines, (at, self._order, f"{stamp} {HOST} postfix/{daemon}"
                                     f"[{_PIDS[daemon]}]: {qid}: {text}"))  # fmt: skip

    def _submit(self, at: float) -> None:
        self.serial += 1
        n = self.serial
        qid = f"{0x4A000 + n * 7919 % 0xFFFFF:05X}{n % 4096:03X}"
        domain, relay = self._domain()
        sender = self.rng.choice(SENDERS)
        rcpt = f"customer{n:05d}@{domain}"
        message_id = f"{int(at)}.{n}.demo@{sender.split('@')[1]}"
        self.messages.append((message_id, qid, rcpt))
        del self.messages[:-1000]
        self._line(at, "smtpd", qid, "client=app1.shop.example[192.0.2.10]")
        self._line(at + 0.02, "cleanup", qid, f"message-id=<{message_id}>")
        size = self.rng.randrange(4000, 60000)
        self._line(at + 0.04, "qmgr", qid, f"from=<{sender}>, size={size}, nrcpt=1 (queue active)")
        recipient = _Recipient(qid, rcpt, domain, relay, sender, at)
        self._order += 1
        heapq.heappush(self._attempts, (at + 0.3 + self.rng.random(), self._order, recipient))

    def _domain(self) -> tuple[str, str]:
        pick = self.rng.random()
        for domain, share, relay in DOMAINS:
            pick -= share
            if pick < 0:
                return domain, relay
        return DOMAINS[-1][0], DOMAINS[-1][2]

    def _attempt(self, r: _Recipient, at: float) -> None:
        r.attempt += 1
        roll = self.rng.random()
        if r.domain == "gmail.com" and self.incident_on(at) and roll < self.incident_share:
            status, (dsn, text) = ("deferred", _GMAIL_RATE) if roll < self.incident_share * 0.7 \
                else ("bounced", _GMAIL_BLOCK)  # fmt: skip
        elif roll < 0.012:
            status, (dsn, text) = "bounced", _USER_UNKNOWN
        elif roll < 0.03:
            status, (dsn, text) = "deferred", _BUSY
        else:
            status, dsn, text = "sent", "2.0.0", _SENT
        if status == "deferred" and r.attempt >= _MAX_ATTEMPTS:
            status = "bounced"  # demo messages give up early rather than expire days later
        delay = at - r.submitted
        relay = r.relay
        reply = text.format(relay=relay, rcpt=r.rcpt, n=self.serial)
        self._line(at, "smtp", r.qid,
                   f"to=<{r.rcpt}>, relay={relay}:25, delay={delay:.1f}, "
                   f"delays=0.04/0.01/0.3/{max(0.0, delay - 0.35):.2f}, dsn={dsn}, "
                   f"status={status} ({reply})")  # fmt: skip
        if status == "deferred":
            retry = at + _RETRY_SECONDS * r.attempt + self.rng.random() * 30
            self._order += 1
            heapq.heappush(self._attempts, (retry, self._order, r))
            return
        self._line(at + 0.01, "qmgr", r.qid, "removed")


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method for small means; a normal approximation for large catch-up steps."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
