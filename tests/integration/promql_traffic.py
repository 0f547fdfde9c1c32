"""The traffic of the dashboards / rollup end-to-end test (``test_dashboards_promql.py``).

Postfix log lines (BSD syslog) and KumoMTA log-hook records, each with its event time, so
the test can write a log that the rollup engine judges at known times.  Every builder
returns ``(event time, line)`` pairs (Postfix) or records (KumoMTA); the test sorts and
writes them.  Besides the traffic every domain gets in each round, each detector has its
own subject, so a test can tell that the others stay quiet:

=================  ======================  ================================================
detector           subject                 traffic
=================  ======================  ================================================
queue_age          gmail.com               ``stuck``: one delivery deferred for 5 hours
provider_silent    yandex                  ``silent``: a delivery at this hour on 6 days
sending_ip_*       203.0.113.7 (microsoft) ``egress``: KumoMTA refusals from one address
deferral_spike     gmail.com               ``deferral_spike``: 100 ``421 4.3.0`` deferrals
delivery_latency   google                  ``slow``: 20 deliveries 40 min after a deferral
bounce_rate        outlook.com             ``bounces``: 120 recipients, 30 user unknown
complaint_rate     yahoo                   ``bulk`` 5,200 deliveries + ``complaints``
=================  ======================  ================================================

gmail.com also has a normal yesterday (``history``): its deferral baseline in the store,
and the samples a Prometheus scraping since yesterday would hold (``counter_history``).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

DOMAINS = ("gmail.com", "outlook.com", "yahoo.com")
RELAYS = {
    "gmail.com": "gmail-smtp-in.l.google.com[142.250.1.26]:25",
    "outlook.com": "outlook-com.olc.protection.outlook.com[52.101.1.2]:25",
    "yahoo.com": "mta5.am0.yahoodns.net[67.195.228.106]:25",
    "yandex.ru": "mx.yandex.ru[77.88.21.249]:25",  # the provider that goes silent
}
DEFERRALS = {
    # Gmail's rate limit: a rejecting reason (spamdetected).
    "deferred": "dsn=4.7.28, status=deferred (host {host} said: 421 4.7.28 Our system has "
    "detected an unusual rate of unsolicited mail originating from your IP address. "
    "(in reply to end of DATA command))",
    # Gmail's "try again later": systemerror, a deferral that is no sign of rejection.
    "tryagain": "dsn=4.3.0, status=deferred (host {host} said: 421-4.3.0 Temporary System "
    "Problem.  Try again later (10). a1si123 - gsmtp (in reply to end of DATA command))",
}
BOUNCED = {  # two reasons with different blames per domain
    "userunknown": "dsn=5.1.1, status=bounced (host {host} said: 550 5.1.1 <{rcpt}>: "
    "Recipient address rejected: User unknown in virtual mailbox table "
    "(in reply to RCPT TO command))",
    "spamdetected": "dsn=5.7.1, status=bounced (host {host} said: 554 5.7.1 Message rejected "
    "as spam by Content Filtering. (in reply to end of DATA command))",
}
# KumoMTA egress sources: 203.0.113.7 is listed and Microsoft refuses it, 203.0.113.8 gets
# through.  The refusals are spread over three Microsoft domains, each below [rollup]
# min_attempts (20) after both rounds, while the IP's 24 pass it: an IP incident its
# domains do not have (the runbook's case).
BLOCKED_IP, GOOD_IP = "203.0.113.7", "203.0.113.8"
LISTED = "Service unavailable, Client host [203.0.113.7] blocked using Spamhaus"
MICROSOFT_DOMAINS = ("hotmail.com", "live.com", "msn.com")
TRANSMIT = 42  # seconds from an attempt's start (qmgr) to its result (smtp)
SLOW = 2400  # seconds from a slow delivery's first attempt to its delivery: over 1800
SPIKE, SLOW_N, BOUNCE_N, BULK_N, COMPLAINTS = 100, 20, 120, 5200, 25

_QUEUE_IDS = itertools.count(0x4B1000000)
Lines = list[tuple[float, str]]


def _bsd(t: float) -> str:
    d = datetime.fromtimestamp(t, UTC)
    return f"{d:%b} {d.day:2d} {d:%H:%M:%S}"


def postfix(
    t: float, rcpt: str, outcome: str, *, qid: str | None = None, arrived: float | None = None
) -> Lines:
    """One delivery attempt to ``rcpt``: qmgr from=... when the attempt starts (TRANSMIT
    seconds before ``t``), the smtp line for ``outcome`` (sent, a DEFERRALS or a BOUNCED
    key) at ``t``.

    ``qid`` and ``arrived`` make it a retry of an earlier attempt: Postfix's delay= counts
    from the message's arrival, the rollup engine's latency from its first qmgr line.
    """
    qid = qid or f"{next(_QUEUE_IDS):010X}"
    start = t - TRANSMIT
    delay = t - (start if arrived is None else arrived)
    relay = RELAYS[rcpt.rpartition("@")[2]]
    host = relay.rsplit(":", 1)[0].replace("[", " [")
    smtp = (
        f"{_bsd(t)} mx1 postfix/smtp[1203]: {qid}: to=<{rcpt}>, relay={relay}, "
        f"delay={delay:g}, delays={delay - TRANSMIT + 0.05:g}/0.01/0.21/{TRANSMIT - 0.27:g}, "
    )
    if outcome == "sent":
        smtp += f"dsn=2.0.0, status=sent (250 2.0.0 OK {int(t)} q{qid.lower()})\n"
    elif outcome in DEFERRALS:
        smtp += DEFERRALS[outcome].format(host=host) + "\n"
    else:
        smtp += BOUNCED[outcome].format(host=host, rcpt=rcpt) + "\n"
    lines = [
        (start, f"{_bsd(start)} mx1 postfix/qmgr[1102]: {qid}: from=<news@app.example>, "
                "size=4211, nrcpt=1 (queue active)\n"),
        (t, smtp),
    ]  # fmt: skip
    if outcome not in DEFERRALS:
        lines.append((t, f"{_bsd(t)} mx1 postfix/qmgr[1102]: {qid}: removed\n"))
    return lines


def retried(first: float, t: float, rcpt: str, outcome: str, deferral: str = "tryagain") -> Lines:
    """A message deferred (``deferral``) at ``first`` and tried again at ``t`` (``outcome``)."""
    qid = f"{next(_QUEUE_IDS):010X}"
    return [
        *postfix(first, rcpt, deferral, qid=qid),
        *postfix(t, rcpt, outcome, qid=qid, arrived=first - TRANSMIT),
    ]


def stuck(t: float) -> Lines:
    """A gmail.com message first deferred five hours before ``t`` and deferred again at
    ``t``: older than ``[rollup] queue_max_age_seconds`` (4 h), so it counts as stuck."""
    return retried(t - 5 * 3600, t, "stuck@gmail.com", "deferred", deferral="deferred")


def silent(at: float) -> Lines:
    """A yandex.ru delivery in the hour before ``at``'s hour on each of the six days before
    (the provider-silent detector's baseline) and none in the last hour: yandex went silent."""
    hour = at // 3600 * 3600 - 3600
    return [
        line
        for day in range(1, 7)
        for line in postfix(hour - day * 86400 + 1800, f"h{day}@yandex.ru", "sent")
    ]


def history(minute: float) -> tuple[Lines, list[tuple[float, str]]]:
    """gmail.com's normal yesterday: 1,200 deliveries from 23 to 2 hours before ``minute``,
    every hundredth deferred once (4.3.0) and delivered ten minutes later.  Returns the
    lines and each attempt's (time, outcome) for ``counter_history``."""
    lines: Lines = []
    attempts: list[tuple[float, str]] = []
    start, n = minute - 23 * 3600, 1200
    for k in range(n):
        t = start + k * (21 * 3600 // n)
        rcpt = f"y{k}@gmail.com"
        if k % 100 == 0:
            lines += retried(t, t + 600, rcpt, "sent")
            attempts += [(t, "deferred"), (t + 600, "delivered")]
        else:
            lines += postfix(t, rcpt, "sent")
            attempts.append((t, "delivered"))
    return lines, attempts


def counter_history(
    attempts: list[tuple[float, str]], since: float, until: float, step: float = 300
) -> dict[str, list[tuple[float, float]]]:
    """outcome -> ``mailmon_deliveries_total`` samples every ``step`` seconds over
    [since, until]: the count of ``attempts`` up to each sample, as scrapes would have seen
    them had mailmon read the log as it was written."""
    out: dict[str, list[tuple[float, float]]] = {}
    for outcome in sorted({o for _t, o in attempts}):
        times = sorted(t for t, o in attempts if o == outcome)
        samples, i, t = [], 0, since
        while t <= until:
            while i < len(times) and times[i] <= t:
                i += 1
            samples.append((t, float(i)))
            t += step
        out[outcome] = samples
    return out


def deferral_spike(minute: float) -> Lines:
    """gmail.com answers ``421 4.3.0 Try again later`` to 100 attempts in ``minute``."""
    return [
        line
        for k in range(SPIKE)
        for line in postfix(minute + k % 60, f"spike{k}@gmail.com", "tryagain")
    ]


def slow(minute: float) -> Lines:
    """20 gmail.com messages deferred 40 minutes ago, delivered in ``minute`` (slower than
    ``[rollup] latency_floor_seconds``, 1800 s), and 111 delivered at once: 15 % slow."""
    lines: Lines = []
    for k in range(SLOW_N):
        t = minute + 5 + k
        lines += retried(t - SLOW, t, f"late{k}@gmail.com", "sent")
    for k in range(111):
        lines += postfix(minute + k % 60, f"fast{k}@gmail.com", "sent")
    return lines


def bounces(minute: float) -> Lines:
    """120 outlook.com recipients in ``minute``, a quarter of them unknown (5.1.1)."""
    return [
        line
        for k in range(BOUNCE_N)
        for line in postfix(minute + k % 60, f"b{k}@outlook.com",
                            "userunknown" if k % 4 == 0 else "sent")
    ]  # fmt: skip


def bulk(minute: float) -> Lines:
    """5,200 yahoo.com deliveries in ``minute``: a bulk sender's daily volume (the
    complaint-rate rules apply from 5,000 a day)."""
    return [
        line
        for k in range(BULK_N)
        for line in postfix(minute + k % 60, f"bulk{k}@yahoo.com", "sent")
    ]


def kumomta(n: int, t: int, kind: str, ip: str, rcpt: str) -> dict[str, Any]:
    """One KumoMTA Delivery or Bounce log record sent from egress address ``ip``."""
    domain = rcpt.rpartition("@")[2]
    ok = kind == "Delivery"
    code, text = (250, "OK") if ok else (550, LISTED)
    return {
        "type": kind, "id": f"kumo-{n}-{ip}-{rcpt}", "timestamp": t, "created": t - 5,
        "sender": "news@app.example", "recipient": rcpt, "queue": domain, "num_attempts": 1,
        "headers": {"Message-ID": f"<kumo-{n}-{rcpt}@app.example>"},
        "source_address": {"address": f"{ip}:0", "name": "mx1"},
        "peer_address": {"name": f"{domain.replace('.', '-')}.mail.protection.example.",
                         "addr": "192.0.2.25"},
        "response": {"code": code, "enhanced_code": {"class": 2 if ok else 5, "subject": 0 if ok else 7,
                                                      "detail": 0 if ok else 1},
                     "content": text, "command": "."},
    }  # fmt: skip


def egress(n: int, minute: float) -> list[dict[str, Any]]:
    """Round ``n``'s KumoMTA traffic, after the Postfix lines and before the complaints:
    per IP 12 attempts at Microsoft and 3 receptions and deliveries at Gmail (so the first
    provider that $provider lists has sending IPs, and their latency, too)."""
    records = []
    for k in range(12):
        t = int(minute) + 45 + k // 2  # inside the minute of the Postfix lines
        ms = MICROSOFT_DOMAINS[k % len(MICROSOFT_DOMAINS)]
        records.append(kumomta(n, t, "Bounce", BLOCKED_IP, f"r{n}-k{k}@{ms}"))
        records.append(kumomta(n, t, "Delivery", GOOD_IP, f"r{n}-k{k}@outlook.com"))
    for k in range(3):
        for ip in (BLOCKED_IP, GOOD_IP):
            rcpt = f"r{n}-{ip}-{k}@gmail.com"
            delivery = kumomta(n, int(minute) + 50 + k, "Delivery", ip, rcpt)
            # Their reception too: the rollup's latency per sending IP needs the submission.
            reception = {key: delivery[key] for key in ("id", "sender", "recipient", "headers")}
            records += [reception | {"type": "Reception", "timestamp": delivery["created"]}, delivery]
    return records


def complaints(n: int, minute: float) -> list[dict[str, Any]]:
    """Round ``n``'s KumoMTA ``Feedback`` records (ARF abuse reports): one per domain ``n``
    minutes after ``minute`` (each round's moves the engine's evaluation on), and in round 2
    COMPLAINTS about the yahoo.com bulk (0.5 % of it: over Yahoo's 0.3 %) one minute after
    ``minute``, inside the windows of the evaluation that round 2 brings about."""
    about = [(int(minute) + 60 * n + 10, f"r{n}-0@{domain}") for domain in DOMAINS]
    if n == 2:
        about += [(int(minute) + 80, f"bulk{k}@yahoo.com") for k in range(COMPLAINTS)]
    return [
        {
            "type": "Feedback", "id": f"fbl-{n}-{rcpt}", "timestamp": t,
            "sender": "news@app.example", "recipient": "fbl@app.example",
            "headers": {"Message-ID": f"<r{n}-{rcpt}@app.example>"},
            "feedback_report": {"feedback_type": "abuse", "original_rcpto_to": [f"<{rcpt}>"]},
            "response": {"code": 250, "content": "", "command": "."},
        }
        for t, rcpt in about
    ]  # fmt: skip
