"""Exim ``mainlog`` and KumoMTA JSON log lines for the follow benchmark, without timestamps.

    lines, truth = exim_stream(20_000, seed=42)
    lines, truth = kumomta_stream(20_000, seed=42)

A steady outbound stream: each message has 1-3 recipients over gmail.com, outlook.com,
yahoo.com and a Zipf mix of corporate domains; per recipient 8 % are deferred once first
(the retry comes a few hundred lines later, interleaved with newer messages as on a busy
MTA), 3 % bounce, the rest are delivered.  The writer puts the wall-clock time in front
of each line: Exim's ``2026-11-24 09:00:00 ``, KumoMTA's ``{"timestamp": 1795510800, ``
(the record's remaining fields follow).  ``truth`` counts what the lines hold, with the
keys of ``gen_postfix_log``'s counts (``sent``, ``deferred``, ``bounced``).
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable

__all__ = ["exim_stamp", "exim_stream", "kumomta_stamp", "kumomta_stream"]

CONSUMER = (("gmail.com", 0.31), ("outlook.com", 0.10), ("yahoo.com", 0.08))
MX = {
    "gmail.com": ("gmail-smtp-in.l.google.com", "142.250.27.27"),
    "outlook.com": ("outlook-com.olc.protection.outlook.com", "52.101.68.12"),
    "yahoo.com": ("mta7.am0.yahoodns.net", "67.195.204.72"),
}
DEFER = (450, "4.2.1", "The user you are trying to contact is receiving mail at a rate that "
         "prevents additional messages from being delivered. - gsmtp")  # fmt: skip
BOUNCE = (550, "5.1.1", "The email account that you tried to reach does not exist. - gsmtp")
#: Lines between a deferral and its retry.
RETRY_AFTER_LINES = (200, 800)


def _domain(rng: random.Random) -> str:
    r = rng.random()
    for name, share in CONSUMER:
        if r < share:
            return name
        r -= share
    return f"corp{int(rng.paretovariate(1.2)) % 2000}.example"


Planned = tuple[int, str, str]  # (offset in lines from the message's arrival, line, fate)


def _plan(
    n: int, seed: int, lines_of: Callable[[random.Random, int], list[Planned]]
) -> tuple[list[bytes], dict[str, int]]:
    """The first ``n`` lines of the messages' lines merged in offset order, and their fates."""
    rng = random.Random(seed)
    pending: list[tuple[int, int, str, str]] = []
    order = itertools.count()
    lines: list[bytes] = []
    truth: Counter[str] = Counter()
    message = 0
    while len(lines) < n:
        position = len(lines)
        if pending and pending[0][0] <= position:
            _, _, line, fate = heapq.heappop(pending)
            lines.append(line.encode("ascii"))
            if fate:
                truth[fate] += 1
            continue
        message += 1
        for offset, line, fate in lines_of(rng, message):
            heapq.heappush(pending, (position + offset, next(order), line, fate))
    return lines, dict(truth)


def _outcomes(rng: random.Random) -> list[tuple[str, str]]:
    """(recipient, fate) per recipient: fate is 'sent', 'deferred' (then sent) or 'bounced'."""
    out = []
    for i in range(rng.choice((1, 1, 1, 2, 3))):
        domain = _domain(rng)
        r = rng.random()
        fate = "deferred" if r < 0.08 else "bounced" if r < 0.11 else "sent"
        out.append((f"user{rng.randrange(10**6)}.{i}@{domain}", fate))
    return out


def exim_stamp(now: float) -> bytes:
    return time.strftime("%Y-%m-%d %H:%M:%S ", time.gmtime(now)).encode("ascii")


def exim_stream(n: int, seed: int) -> tuple[list[bytes], dict[str, int]]:
    def lines_of(rng: random.Random, message: int) -> list[Planned]:
        mid = f"1vR{message:03X}"[-6:].rjust(6, "0") + f"-{message % 999983:06X}-Kq"
        rcpts = _outcomes(rng)
        out = [(0, f"{mid} <= news@shop.example H=app1.shop.example [198.51.100.10] P=esmtp "
                   f"S={rng.randrange(2000, 60000)} id=m{message}.{seed}@shop.example for "
                   + " ".join(r for r, _ in rcpts), "")]  # fmt: skip
        last = 1
        for k, (rcpt, fate) in enumerate(rcpts, 1):
            domain = rcpt.rpartition("@")[2]
            host, ip = MX.get(domain, (f"mx.{domain}", "198.51.100.25"))
            where = f"R=dnslookup T=remote_smtp H={host} [{ip}]"
            if fate == "deferred":
                code, status, text = DEFER
                out.append((k, f"{mid} == {rcpt} {where} defer (-44) DT=0.4s: SMTP error from "
                               f"remote mail server after RCPT TO:<{rcpt}>: {code}-{status} "
                               f"{text}", "deferred"))  # fmt: skip
                retry = rng.randrange(*RETRY_AFTER_LINES)
                out.append((retry, f"{mid} => {rcpt} {where} C=\"250 2.0.0 OK\" QT=15m4s DT=1s",
                            "sent"))  # fmt: skip
                last = max(last, retry)
            elif fate == "bounced":
                code, status, text = BOUNCE
                out.append((k, f"{mid} ** {rcpt} {where}: SMTP error from remote mail server "
                               f"after RCPT TO:<{rcpt}>: {code}-{status} {text} DT=0.4s",
                            "bounced"))  # fmt: skip
            else:
                arrow = "=>" if k == 1 else "->"
                out.append((k, f"{mid} {arrow} {rcpt} {where} C=\"250 2.0.0 OK  {message} - "
                               f"gsmtp\" QT={rng.randrange(1, 9)}s DT=0.5s", "sent"))  # fmt: skip
            last = max(last, k)
        out.append((last + 1, f"{mid} Completed", ""))
        return out

    return _plan(n, seed, lines_of)


def kumomta_stamp(now: float) -> bytes:
    return b'{"timestamp": %d, ' % int(now)


def kumomta_stream(n: int, seed: int) -> tuple[list[bytes], dict[str, int]]:
    def record(kind: str, rcpt: str, message: int, attempts: int,
               response: tuple[int, str | None, str]) -> str:  # fmt: skip
        domain = rcpt.rpartition("@")[2]
        host, ip = MX.get(domain, (f"mx.{domain}", "198.51.100.25"))
        code, status, text = response
        enhanced = None
        if status:
            c, s, d = status.split(".")
            enhanced = {"class": int(c), "subject": int(s), "detail": int(d)}
        body = {
            "type": kind, "id": f"{message:032x}", "sender": "news@shop.example",
            "recipient": rcpt, "queue": f"{domain}", "site": f"src1->{host}.",
            "size": 4096, "nodeid": "557f3ad4-2c8c-11ee-976e-782d7e12e173",
            "headers": {"Message-ID": f"<m{message}.{seed}@shop.example>"}, "meta": {},
            "num_attempts": attempts, "bounce_classification": "Uncategorized",
            "egress_pool": "pool0", "egress_source": "src1",
            "peer_address": {"name": f"{host}.", "addr": ip},
            "response": {"code": code, "enhanced_code": enhanced, "content": text,
                         "command": "."},
        }  # fmt: skip
        return json.dumps(body)[1:]  # the writer opens the object with the timestamp

    def lines_of(rng: random.Random, message: int) -> list[Planned]:
        out = []
        for k, (rcpt, fate) in enumerate(_outcomes(rng), 1):
            out.append((0, record("Reception", rcpt, message, 0, (250, None, "")), ""))
            if fate == "deferred":
                out.append((k, record("TransientFailure", rcpt, message, 1, DEFER), "deferred"))
                retry = rng.randrange(*RETRY_AFTER_LINES)
                out.append((retry, record("Delivery", rcpt, message, 2, (250, "2.0.0", "OK")),
                            "sent"))  # fmt: skip
            elif fate == "bounced":
                out.append((k, record("Bounce", rcpt, message, 1, BOUNCE), "bounced"))
            else:
                out.append((k, record("Delivery", rcpt, message, 1, (250, "2.0.0", "OK")),
                            "sent"))  # fmt: skip
        return out

    return _plan(n, seed, lines_of)
