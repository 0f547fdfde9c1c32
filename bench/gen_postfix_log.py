"""Deterministic generator of a realistic Postfix log for the ingest benchmark.

    python bench/gen_postfix_log.py --lines 1000000 --out bench/out/postfix.log [--seed 42]

The log is a discrete-event simulation of one busy outbound relay (``mx-out1``):
app servers submit over SMTP (or ``sendmail`` -> pickup), qmgr hands each
message to smtp, one SMTP session per recipient domain, with the replies the
big mailbox providers really send (Gmail's ``421-4.7.28`` multi-line texts,
Microsoft's ``451 4.7.650``, Yahoo's ``[TSS04]``, greylisting, timeouts,
Spamhaus blocks, unknown users, full mailboxes).  Deferred recipients are
retried with Postfix's doubling backoff until they are delivered or the
message passes ``maximal_queue_lifetime`` and is returned to the sender;
bounces and expiries produce the non-delivery notification that Postfix's
bounce daemon queues and delivers.  Spam bots and typos add ``NOQUEUE: reject``.

Every message, SMTP session and arrival stream is a generator of
``(time, payload, kind)``: a line to write, a new generator to start, or None
(just wake up).  One heap orders them, so lines of concurrent messages
interleave exactly as a busy MTA writes them, in time order.  Memory is
bounded: at most ``--max-inflight`` messages live at once (arrivals wait when
the pool is full) and the output is streamed.  The same ``--seed`` and
arguments give the same bytes.

``--counts PATH`` writes what the log holds (status lines by kind, messages,
rejects) as JSON, the ground truth a parser's event counts are checked against.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import json
import math
import random
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import IO, Any

__all__ = ["PostfixLogSimulation", "main"]

HOSTNAME = "mx-out1"
SENDING_IP = "203.0.113.5"
OUR_DOMAIN = "shop.example"

#: (time, payload, kind): payload is a log line (without the syslog prefix), a
#: generator to start at that time, or None; kind names what a line counts as
#: (a tuple when it counts as several things, e.g. an expiry and its recipients).
Item = tuple[float, Any, Any]
Process = Iterator[Item]

# Postfix defaults (postconf -d) except the lifetime, which bulk senders shorten.
MINIMAL_BACKOFF = 300.0
MAXIMAL_BACKOFF = 4000.0
QUEUE_RUN_DELAY = 300.0

_FIRST_NAMES = (
    "james mary robert patricia john jennifer michael linda david elizabeth william barbara "
    "richard susan joseph jessica thomas sarah charles karen chris lisa daniel nancy matthew "
    "betty anthony sandra mark ashley paul emily steven donna andrew michelle joshua carol "
    "kevin amanda brian melissa george deborah timothy stephanie ronald rebecca jason laura "
    "anna lukas lea jonas marie noah emma elias mia leon sofia luca chloe hugo ines"
)
_LAST_NAMES = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez "
    "lopez gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson "
    "white harris sanchez clark ramirez lewis robinson walker young allen king wright scott "
    "torres nguyen hill flores green adams nelson baker hall rivera campbell mitchell carter "
    "mueller schmidt schneider fischer weber meyer wagner becker dubois moreau laurent bernard"
)
_SYLLABLES = (
    "ac al an ar ba be bi bo ca ce co da de di do el en er fa fe fi ga ge go ha he in ka ke "
    "ko la le li lo lu ma me mi mo mu na ne no or pa pe pi po ra re ri ro sa se si so ta te "
    "ti to tu va ve vi vo xa ze zo"
)
FIRST_NAMES = tuple(_FIRST_NAMES.split())
LAST_NAMES = tuple(_LAST_NAMES.split())
SYLLABLES = tuple(_SYLLABLES.split())
CORP_SUFFIXES = (
    "",
    "",
    "",
    "corp",
    "group",
    "labs",
    "tech",
    "systems",
    "partners",
    "consulting",
    "media",
    "health",
    "logistics",
    "bank",
    "legal",
    "energy",
    "foods",
    "retail",
)
CORP_TLDS = (
    "com",
    "com",
    "com",
    "com",
    "net",
    "org",
    "de",
    "co.uk",
    "fr",
    "nl",
    "io",
    "ca",
    "com.au",
    "it",
    "es",
    "se",
    "ch",
    "be",
    "at",
    "dk",
)

#: Share of recipients per consumer mailbox domain; the rest go to corporate
#: domains with a Zipf rank distribution.
CONSUMER_SHARE = (
    ("gmail.com", "gmail", 0.31),
    ("outlook.com", "outlook", 0.07),
    ("hotmail.com", "hotmail", 0.06),
    ("yahoo.com", "yahoo", 0.08),
    ("icloud.com", "icloud", 0.05),
    ("aol.com", "yahoo-aol", 0.01),
    ("live.com", "live", 0.01),
    ("gmx.de", "gmx", 0.01),
    ("comcast.net", "comcast", 0.005),
)

# Who hosts a corporate domain's MX (weights) and so which replies it sends.
CORP_HOSTING = (
    ("google", 0.25),
    ("microsoft", 0.35),
    ("proofpoint", 0.06),
    ("mimecast", 0.04),
    ("self", 0.30),
)

# Replies as the providers write them; Postfix joins a multi-line reply with spaces.
GMAIL_RATE_LIMIT = (
    "421-4.7.28 [{our_ip}      15] Our system has detected an unusual rate of 421-4.7.28 "
    "unsolicited mail originating from your IP address. To protect our 421-4.7.28 users "
    "from spam, mail sent from your IP address has been temporarily 421-4.7.28 rate limited. "
    "For more information, go to 421-4.7.28  "
    "https://support.google.com/mail/?p=UnsolicitedRateLimitError to 421 4.7.28 review our "
    "Bulk Email Senders Guidelines. {tag} - gsmtp"
)
GMAIL_NO_SUCH_USER = (
    "550-5.1.1 The email account that you tried to reach does not exist. Please try "
    "550-5.1.1 double-checking the recipient's email address for typos or 550-5.1.1 "
    "unnecessary spaces. For more information, go to 550 5.1.1  "
    "https://support.google.com/mail/?p=NoSuchUser {tag} - gsmtp"
)
GMAIL_OVER_QUOTA = (
    "452-4.2.2 The recipient's inbox is out of storage space. Please direct the 452-4.2.2 "
    "recipient to 452 4.2.2  https://support.google.com/mail/?p=OverQuotaTemp {tag} - gsmtp"
)
MICROSOFT_RATE_LIMIT = (
    "451 4.7.650 The mail server [{our_ip}] has been temporarily rate limited due to IP "
    "reputation. For e-mail delivery information, see https://postmaster.live.com (S775) "
    "[Name=Protocol Filter Agent][AGT=PFA][MxId={mxid}]"
)
MICROSOFT_UNAVAILABLE = (
    "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). "
    "[{eop}.eop-nam12.prod.protection.outlook.com]"
)
YAHOO_TSS04 = (
    "421 4.7.0 [TSS04] Messages from {our_ip} temporarily deferred due to unexpected volume "
    "or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
)
YAHOO_NO_ACCOUNT = (
    "554 delivery error: dd This user doesn't have a {name} account ({rcpt}) [0] - "
    "mta{mta}.mail.gq1.yahoo.com"
)
SPAMHAUS = (
    "554 5.7.1 Service unavailable; Client host [{our_ip}] blocked using zen.spamhaus.org; "
    "https://www.spamhaus.org/query/ip/{our_ip}"
)
USER_UNKNOWN = (
    "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"
)
MAILBOX_FULL = "552 5.2.2 <{rcpt}>: mailbox full"
GREYLISTED = (
    "450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, see "
    "http://postgrey.schweikert.ch/help/{name}.html"
)


class Domain:
    """One recipient domain: where its MX is and how it answers."""

    __slots__ = ("consumer", "down", "ips", "kind", "mx", "name", "zen")

    def __init__(self, name: str, kind: str, mx: str, ips: tuple[str, ...]) -> None:
        self.name = name
        self.kind = kind  # google, microsoft, yahoo, apple, proofpoint, mimecast, self, other
        self.mx = mx
        self.ips = ips
        self.consumer = False  # a mailbox provider's own domain, not a company's
        self.down = False  # every connection times out (expires after the lifetime)
        self.zen = False  # rejects clients listed on zen.spamhaus.org


def _ip(rng: random.Random, prefix: str) -> str:
    return f"{prefix}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"


#: aspmx.l.google.com: every Google Workspace domain shares these MX addresses.
WORKSPACE_IPS = ("142.251.9.26", "142.251.9.27", "142.250.153.26", "142.250.153.27")


def _consumer_domain(rng: random.Random, name: str, label: str) -> Domain:
    if label == "gmail":
        return Domain(
            name,
            "google",
            "gmail-smtp-in.l.google.com",
            tuple(_ip(rng, "142.250") for _ in range(4)),
        )
    if label in ("outlook", "hotmail", "live"):
        mx = f"{name.replace('.', '-')}.olc.protection.outlook.com"
        return Domain(name, "microsoft", mx, tuple(_ip(rng, "52.101") for _ in range(4)))
    if label in ("yahoo", "yahoo-aol"):
        mx = "mx-aol.mail.gm0.yahoodns.net" if label == "yahoo-aol" else "mta5.am0.yahoodns.net"
        return Domain(name, "yahoo", mx, tuple(_ip(rng, "67.195") for _ in range(4)))
    if label == "icloud":
        return Domain(
            name, "apple", "mx01.mail.icloud.com", tuple(_ip(rng, "17.57") for _ in range(3))
        )
    mx = {"gmx": "mx00.emig.gmx.net", "comcast": "mx1a1.comcast.net"}[label]
    return Domain(name, "other", mx, (_ip(rng, "212.227"),))


def _corporate_domain(rng: random.Random, name: str) -> Domain:
    hosting = rng.choices([h for h, _ in CORP_HOSTING], [w for _, w in CORP_HOSTING])[0]
    if hosting == "google":
        return Domain(name, "google", "aspmx.l.google.com", WORKSPACE_IPS)
    if hosting == "microsoft":
        mx = f"{name.replace('.', '-')}.mail.protection.outlook.com"
        return Domain(name, "microsoft", mx, (_ip(rng, "52.101"), _ip(rng, "52.101")))
    if hosting == "proofpoint":
        mx = f"mx0a-00{rng.randrange(100000, 999999)}01.pphosted.com"
        return Domain(name, "proofpoint", mx, (_ip(rng, "148.163"),))
    if hosting == "mimecast":
        mx = f"{rng.choice(('eu', 'us', 'uk'))}-smtp-inbound-{rng.randrange(1, 3)}.mimecast.com"
        return Domain(name, "mimecast", mx, (_ip(rng, "205.139"),))
    domain = Domain(name, "self", f"mx{rng.randrange(1, 3)}.{name}", (_ip(rng, "198.51"),))
    domain.down = rng.random() < 0.01
    domain.zen = rng.random() < 0.25
    return domain


class Domains:
    """The recipient domain population: consumer providers plus a Zipf tail."""

    def __init__(self, rng: random.Random, corporate: int = 5000, zipf_s: float = 1.05) -> None:
        self.items: list[Domain] = []
        weights: list[float] = []
        for name, label, share in CONSUMER_SHARE:
            domain = _consumer_domain(rng, name, label)
            domain.consumer = True
            self.items.append(domain)
            weights.append(share)
        corp_share = 1.0 - sum(weights)
        names: set[str] = set()
        while len(names) < corporate:
            word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randrange(2, 4)))
            names.add(f"{word}{rng.choice(CORP_SUFFIXES)}.{rng.choice(CORP_TLDS)}")
        ranked = sorted(names)
        rng.shuffle(ranked)
        harmonic = sum(1.0 / (r**zipf_s) for r in range(1, corporate + 1))
        for rank, name in enumerate(ranked, 1):
            self.items.append(_corporate_domain(rng, name))
            weights.append(corp_share / (rank**zipf_s) / harmonic)
        self.cum = list(itertools.accumulate(weights))
        self.by_name = {d.name: d for d in self.items}

    def pick(self, rng: random.Random) -> Domain:
        return self.items[bisect.bisect(self.cum, rng.random() * self.cum[-1])]


def _reply(
    domain: Domain, ip: str, dsn: str, status: str, template: str, command: str, **values: object
) -> tuple[str, str, str]:
    """(dsn, status, text) for a reply from ``domain``'s MX to ``command``."""
    text = template.format(**values)
    return dsn, status, f"host {domain.mx}[{ip}] said: {text} (in reply to {command} command)"


def _gsmtp_tag(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}si{rng.randrange(10**6)}.{rng.randrange(999)}"


def fmt_delay(seconds: float) -> str:
    """A delay as Postfix writes it: two significant digits, at most two decimals."""
    if seconds >= 10:
        return str(round(seconds))
    text = f"{seconds:.1f}" if seconds >= 1 else f"{seconds:.2f}"
    return text.rstrip("0").rstrip(".") or "0"


class Pids:
    """A pool of daemon pids: one per concurrent session, replaced after ``max_use``."""

    def __init__(self, sim: PostfixLogSimulation, max_use: int = 100) -> None:
        self.sim = sim
        self.free: list[int] = []
        self.uses: dict[int, int] = {}
        self.max_use = max_use

    def take(self) -> int:
        if self.free:
            return self.free.pop(self.sim.rng.randrange(len(self.free)))
        pid = self.sim.new_pid()
        self.uses[pid] = 0
        return pid

    def give(self, pid: int) -> None:
        self.uses[pid] += 1
        if self.uses[pid] >= self.max_use:
            del self.uses[pid]  # the daemon exits; master forks a new one later
        else:
            self.free.append(pid)


class PostfixLogSimulation:
    """The simulated relay; :meth:`run` writes ``lines`` log lines to ``out``."""

    def __init__(
        self,
        seed: int = 42,
        *,
        start: datetime = datetime(2026, 11, 20, tzinfo=UTC),
        rate: float = 8.0,
        max_inflight: int = 2000,
        queue_lifetime: float = 7200.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.domains = Domains(random.Random(seed * 7919 + 1))
        self.start = start
        self.rate = rate
        self.max_inflight = max_inflight
        self.queue_lifetime = queue_lifetime
        self.inflight = 0
        self.counts: Counter[str] = Counter()
        self._pid = 11800
        self._qid = self.rng.randrange(1 << 20)
        self.smtpd = Pids(self)
        self.smtp = Pids(self)
        self.cleanup = Pids(self)
        self.qmgr = self.new_pid()
        self.pickup = self.new_pid()
        self.bounce = Pids(self)
        self.apps = [(f"app{i}.internal", f"10.0.1.{10 + i}") for i in range(1, 7)]
        self.senders = (
            f"noreply@notify.{OUR_DOMAIN}",
            f"orders@{OUR_DOMAIN}",
            f"news@mail.{OUR_DOMAIN}",
            f"support@{OUR_DOMAIN}",
        )

    # -- identifiers -------------------------------------------------------

    def new_pid(self) -> int:
        self._pid += self.rng.randrange(1, 40)
        if self._pid > 4_000_000:
            self._pid = 1200
        return self._pid

    def queue_id(self, t: float) -> str:
        """A short Postfix queue id: microseconds (5 hex) + inode number (6 hex)."""
        self._qid = (self._qid + self.rng.randrange(1, 97)) & 0xFFFFFF
        usec = int((t % 1) * 1_000_000) ^ self.rng.randrange(1 << 20)
        return f"{usec & 0xFFFFF:05X}{self._qid:06X}"

    def message_id(self, t: float) -> str:
        rng = self.rng
        stamp = (self.start + timedelta(seconds=t)).strftime("%Y%m%d%H%M%S")
        style = rng.random()
        if style < 0.6:
            return f"<{stamp}.{rng.getrandbits(48):012x}@notify.{OUR_DOMAIN}>"
        if style < 0.9:
            uid = f"{rng.getrandbits(128):032x}"
            return f"<{uid[:8]}-{uid[8:12]}-{uid[12:16]}-{uid[16:20]}-{uid[20:]}@{OUR_DOMAIN}>"
        return f"<{stamp}.{rng.getrandbits(40):010X}@mail.{OUR_DOMAIN}>"

    def recipient(self, domain: Domain) -> str:
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        shape = rng.random()
        if domain.consumer:
            local = f"{first}.{last}{rng.randrange(1, 100) if shape < 0.5 else ''}"
            if shape > 0.85:
                local = f"{first[0]}{last}{rng.randrange(1960, 2010)}"
        else:
            local = f"{first}.{last}" if shape < 0.7 else f"{first[0]}{last}"
        return f"{local}@{domain.name}"

    # -- time --------------------------------------------------------------

    def arrival_rate(self, t: float) -> float:
        """Messages per second: a working-day curve peaking mid-afternoon."""
        hour = (t / 3600.0) % 24
        return self.rate * (1.0 + 0.6 * math.sin((hour - 9.0) / 24.0 * 2 * math.pi))

    def episode(self, kind: str, t: float) -> float:
        """How much more a provider defers during its reputation episode."""
        hour = t / 3600.0
        if kind == "microsoft" and 2.0 <= hour < 3.0:
            return 6.0
        if kind == "google" and 6.0 <= hour < 6.5:
            return 5.0
        return 1.0

    # -- processes ---------------------------------------------------------

    def arrivals(self) -> Process:
        """Submissions (SMTP sessions from the app servers, some pickups) and junk."""
        rng = self.rng
        t = 0.0
        while True:
            t += rng.expovariate(self.arrival_rate(t))
            while self.inflight >= self.max_inflight:
                t += 1.0
                yield t, None, None
            roll = rng.random()
            if roll < 0.006:
                yield t, self.junk_session(t), None
            elif roll < 0.09:
                yield t, self.pickup_submission(t), None
            else:
                yield t, self.submission_session(t), None

    def submission_session(self, t: float) -> Process:
        rng = self.rng
        pid = self.smtpd.take()
        client, ip = rng.choice(self.apps)
        peer = f"{client}[{ip}]"
        smtpd = f"postfix/smtpd[{pid}]"
        yield t, f"{smtpd}: connect from {peer}", None
        n_msgs = rng.choices((1, 2, 3, 4), (0.7, 0.15, 0.1, 0.05))[0]
        tls = rng.random() < 0.5
        sasl = rng.random() < 0.4
        mails = rcpts = 0
        rejected = 0
        for _ in range(n_msgs):
            t += rng.uniform(0.01, 0.05)
            recipients = self.pick_recipients()
            if rng.random() < 0.004:  # a typo domain the relay refuses at RCPT time
                rejected += 1
                bad = f"{rng.choice(FIRST_NAMES)}@{rng.choice(('gmial.com', 'hotmial.com'))}"
                line = (
                    f"{smtpd}: NOQUEUE: reject: RCPT from {peer}: 450 4.1.2 <{bad}>: "
                    f"Recipient address rejected: Domain not found; from=<{self.senders[0]}> "
                    f"to=<{bad}> proto=ESMTP helo=<{client}>"
                )
                yield t, line, "rejected"
            qid = self.queue_id(t)
            extra = f", sasl_method=PLAIN, sasl_username={client.split('.')[0]}" if sasl else ""
            yield t, f"{smtpd}: {qid}: client={peer}{extra}", None
            mails += 1
            rcpts += len(recipients)
            t += rng.uniform(0.005, 0.2)
            cleanup = self.cleanup.take()
            msgid = self.message_id(t)
            yield t, f"postfix/cleanup[{cleanup}]: {qid}: message-id={msgid}", "received"
            self.cleanup.give(cleanup)
            size = int(rng.lognormvariate(9.8, 0.9)) + 900
            sender = rng.choice(self.senders)
            t += rng.uniform(0.0, 0.01)
            yield t, self.message(t, qid, sender, recipients, size), None
        t += rng.uniform(0.001, 0.03)
        ehlo = "ehlo=2 starttls=1" if tls else "ehlo=1"
        auth = " auth=1" if sasl else ""
        rcpt = f"rcpt={rcpts}" if not rejected else f"rcpt={rcpts}/{rcpts + rejected}"
        cmds = (2 if tls else 1) + (1 if tls else 0) + (1 if sasl else 0) + 2 * mails + 1
        total = cmds + rcpts
        cmd = f"commands={total}" if not rejected else f"commands={total}/{total + rejected}"
        line = f"{smtpd}: disconnect from {peer} {ehlo}{auth} mail={mails} {rcpt} data={mails}"
        yield t, f"{line} quit=1 {cmd}", None
        self.smtpd.give(pid)

    def pickup_submission(self, t: float) -> Process:
        """A message from the local ``sendmail`` command: pickup instead of smtpd."""
        rng = self.rng
        qid = self.queue_id(t)
        sender = f"www-data@{self.apps[0][0]}" if rng.random() < 0.3 else self.senders[1]
        yield t, f"postfix/pickup[{self.pickup}]: {qid}: uid=33 from=<{sender}>", None
        t += rng.uniform(0.001, 0.02)
        cleanup = self.cleanup.take()
        yield t, f"postfix/cleanup[{cleanup}]: {qid}: message-id={self.message_id(t)}", "received"
        self.cleanup.give(cleanup)
        t += rng.uniform(0.0, 0.01)
        size = int(rng.lognormvariate(8.5, 0.6)) + 600
        yield t, self.message(t, qid, sender, self.pick_recipients(), size), None

    def junk_session(self, t: float) -> Process:
        """A spam bot trying to relay through port 25: refused before queueing."""
        rng = self.rng
        pid = self.smtpd.take()
        ip = f"{rng.choice((185, 45, 91, 193, 80))}.{rng.randrange(256)}.{rng.randrange(256)}"
        ip += f".{rng.randrange(1, 255)}"
        peer = f"unknown[{ip}]"
        smtpd = f"postfix/smtpd[{pid}]"
        yield t, f"{smtpd}: connect from {peer}", None
        t += rng.uniform(0.1, 1.5)
        helo = rng.choice(("User", "localhost", f"[{ip}]", "win-" + f"{rng.getrandbits(24):06x}"))
        victim_domain = rng.choice(("qq.com", "mail.ru", "example.net", "web.de"))
        victim = f"{rng.choice(FIRST_NAMES)}{rng.randrange(100)}@{victim_domain}"
        if rng.random() < 0.5:
            text = f"554 5.7.1 <{victim}>: Relay access denied"
        else:
            text = (
                f"554 5.7.1 Service unavailable; Client host [{ip}] blocked using "
                f"zen.spamhaus.org; https://www.spamhaus.org/query/ip/{ip}"
            )
        spammer = f"spam@{helo.strip('[]')}"
        line = f"{smtpd}: NOQUEUE: reject: RCPT from {peer}: {text}; from=<{spammer}> "
        yield t, f"{line}to=<{victim}> proto=ESMTP helo=<{helo}>", "rejected"
        t += rng.uniform(0.01, 0.5)
        line = f"{smtpd}: disconnect from {peer} ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4"
        yield t, line, None
        self.smtpd.give(pid)

    def pick_recipients(self) -> list[str]:
        rng = self.rng
        n = rng.choices((1, 2, 3, 4, 5), (0.55, 0.2, 0.12, 0.08, 0.05))[0]
        first = self.domains.pick(rng)
        out = [self.recipient(first)]
        for _ in range(n - 1):
            # colleagues share a domain; newsletters fan out across domains
            domain = first if rng.random() < 0.5 else self.domains.pick(rng)
            address = self.recipient(domain)
            if address not in out:  # cleanup drops duplicate recipients
                out.append(address)
        return out

    def message(self, t: float, qid: str, sender: str, recipients: list[str], size: int) -> Process:
        """One queued message: delivery attempts until every recipient is done."""
        rng = self.rng
        self.inflight += 1
        qmgr = f"postfix/qmgr[{self.qmgr}]"
        arrived = t
        active = f"{qmgr}: {qid}: from=<{sender}>, size={size}, nrcpt={{n}} (queue active)"
        yield t, active.format(n=len(recipients)), None
        # qmgr groups recipients by next hop: one SMTP session per domain
        by_domain: dict[Domain, list[str]] = {}
        for r in recipients:
            by_domain.setdefault(self.domains.by_name[r.rpartition("@")[2]], []).append(r)
        pending = list(by_domain.items())
        backoff = MINIMAL_BACKOFF
        failed = expired = False
        attempt = 0
        while True:
            attempt += 1
            final = t - arrived >= self.queue_lifetime
            lines: list[Item] = []
            still: list[tuple[Domain, list[str]]] = []
            for domain, rcpts in pending:
                deferred, bounced = self.delivery(lines, t, arrived, qid, domain, rcpts, attempt)
                failed = failed or bounced
                if deferred:
                    still.append((domain, deferred))
            lines.sort(key=lambda item: item[0])
            yield from lines
            t = lines[-1][0]
            if not still:
                break
            if final:
                expired = True
                kinds = ("expired", *["expired_rcpt"] * sum(len(r) for _, r in still))
                line = f"{qmgr}: {qid}: from=<{sender}>, status=expired, returned to sender"
                yield t, line, kinds
                break
            pending = still
            t += backoff + rng.uniform(0, QUEUE_RUN_DELAY)
            backoff = min(backoff * 2, MAXIMAL_BACKOFF)
            left = sum(len(r) for _, r in pending)
            yield t, active.format(n=left), None
        if failed or expired:
            t += rng.uniform(0.001, 0.05)
            yield t, self.notification(t, qid, sender), None
            t += rng.uniform(0.001, 0.01)
        else:
            t += rng.uniform(0.0, 0.005)
        yield t, f"{qmgr}: {qid}: removed", None
        self.inflight -= 1

    def delivery(
        self,
        lines: list[Item],
        t: float,
        arrived: float,
        qid: str,
        domain: Domain,
        rcpts: list[str],
        attempt: int,
    ) -> tuple[list[str], bool]:
        """One SMTP session to ``domain``; appends its lines, returns (deferred, bounced)."""
        rng = self.rng
        pid = self.smtp.take()
        smtp = f"postfix/smtp[{pid}]"
        a = (t - arrived) + rng.uniform(0.0, 0.08)  # before qmgr
        b = rng.uniform(0.0, 0.03) if rng.random() < 0.7 else rng.uniform(0.03, 0.8)  # in qmgr
        ip = rng.choice(domain.ips)
        deferred: list[str] = []
        bounced = False
        if domain.down:
            c = 30.0 + rng.uniform(0, 0.2)  # smtp_connect_timeout
            delays = f"delay={fmt_delay(a + b + c)}, delays={fmt_delay(a)}/{fmt_delay(b)}/"
            delays += f"{fmt_delay(c)}/0"
            why = f"connect to {domain.mx}[{ip}]:25: Connection timed out"
            for r in rcpts:
                line = f"{smtp}: {qid}: to=<{r}>, relay=none, {delays}, dsn=4.4.1, "
                lines.append((arrived + a + b + c, f"{line}status=deferred ({why})", "deferred"))
            self.smtp.give(pid)
            return list(rcpts), False
        relay = f"{domain.mx}[{ip}]:25"
        c = rng.uniform(0.05, 0.6) if domain.kind != "self" else rng.uniform(0.1, 2.5)
        d = rng.uniform(0.05, 1.2) + len(rcpts) * 0.01
        at = arrived + a + b + c + d
        conn = f", conn_use={rng.randrange(2, 9)}" if rng.random() < 0.1 else ""
        head = f"{smtp}: {qid}: to=<{{r}}>, relay={relay}{conn}, delay={fmt_delay(a + b + c + d)}"
        head += f", delays={fmt_delay(a)}/{fmt_delay(b)}/{fmt_delay(c)}/{fmt_delay(d)}"
        session = self.session_failure(domain, at, ip, attempt)
        for r in rcpts:
            if session is not None:
                dsn, status, text = session
            else:
                dsn, status, text = self.recipient_outcome(domain, r, attempt, ip)
            line = f"{head.format(r=r)}, dsn={dsn}, status={status} ({text})"
            lines.append((at, line, status))
            if status == "deferred":
                deferred.append(r)
            elif status == "bounced":
                bounced = True
        self.smtp.give(pid)
        return deferred, bounced

    def session_failure(
        self, domain: Domain, t: float, ip: str, attempt: int
    ) -> tuple[str, str, str] | None:
        """A refusal of the whole transaction (rate limits, blocklists), or None."""
        rng = self.rng
        kind = domain.kind
        hour = t / 3600.0
        if kind == "self" and domain.zen and 1.0 <= hour < 1.6:
            return _reply(domain, ip, "5.7.1", "bounced", SPAMHAUS, "RCPT TO", our_ip=SENDING_IP)
        base = {"google": 0.02, "microsoft": 0.02, "yahoo": 0.04}.get(kind)
        if base is None or rng.random() >= base * self.episode(kind, t) / attempt:
            return None
        if kind == "google":
            tag = _gsmtp_tag(rng)
            return _reply(
                domain,
                ip,
                "4.7.28",
                "deferred",
                GMAIL_RATE_LIMIT,
                "end of DATA",
                our_ip=SENDING_IP,
                tag=tag,
            )
        if kind == "microsoft":
            return _reply(
                domain,
                ip,
                "4.7.650",
                "deferred",
                MICROSOFT_RATE_LIMIT,
                "MAIL FROM",
                our_ip=SENDING_IP,
                mxid=f"{rng.getrandbits(64):016X}",
            )
        return _reply(domain, ip, "4.7.0", "deferred", YAHOO_TSS04, "MAIL FROM", our_ip=SENDING_IP)

    def recipient_outcome(
        self, domain: Domain, rcpt: str, attempt: int, ip: str
    ) -> tuple[str, str, str]:
        """The reply to one recipient: (dsn, status, text in the parentheses)."""
        rng = self.rng
        kind = domain.kind
        # an address's fate is a property of the address: it fails the same way every time
        roll = zlib.crc32(rcpt.encode()) / 0x1_0000_0000
        if roll < 0.022:  # the address does not exist (list hygiene)
            if kind == "google":
                return _reply(
                    domain,
                    ip,
                    "5.1.1",
                    "bounced",
                    GMAIL_NO_SUCH_USER,
                    "RCPT TO",
                    tag=_gsmtp_tag(rng),
                )
            if kind == "microsoft":
                return _reply(
                    domain,
                    ip,
                    "5.5.0",
                    "bounced",
                    MICROSOFT_UNAVAILABLE,
                    "RCPT TO",
                    eop=f"{rng.getrandbits(40):010X}",
                )
            if kind == "yahoo":
                return _reply(
                    domain,
                    ip,
                    "5.0.0",
                    "bounced",
                    YAHOO_NO_ACCOUNT,
                    "end of DATA",
                    rcpt=rcpt,
                    name=domain.name,
                    mta=rng.randrange(1000, 9999),
                )
            return _reply(domain, ip, "5.1.1", "bounced", USER_UNKNOWN, "RCPT TO", rcpt=rcpt)
        if roll < 0.026:  # the mailbox is over quota; Gmail keeps deferring until it expires
            if kind == "google":
                return _reply(
                    domain,
                    ip,
                    "4.2.2",
                    "deferred",
                    GMAIL_OVER_QUOTA,
                    "RCPT TO",
                    tag=_gsmtp_tag(rng),
                )
            return _reply(domain, ip, "5.2.2", "bounced", MAILBOX_FULL, "RCPT TO", rcpt=rcpt)
        if kind == "self" and attempt == 1 and rng.random() < 0.04:  # postgrey
            return _reply(
                domain,
                ip,
                "4.2.0",
                "deferred",
                GREYLISTED,
                "RCPT TO",
                rcpt=rcpt,
                name=domain.name,
            )
        return "2.0.0", "sent", self.accepted(domain)

    def accepted(self, domain: Domain) -> str:
        rng = self.rng
        kind = domain.kind
        if kind == "google":
            return f"250 2.0.0 OK  {1795000000 + rng.randrange(10**7)} {_gsmtp_tag(rng)} - gsmtp"
        if kind == "microsoft":
            return (
                f"250 2.6.0 <{rng.getrandbits(64):016x}@{OUR_DOMAIN}> [InternalId="
                f"{rng.randrange(10**13)}, Hostname={rng.getrandbits(32):08X}.namprd12.prod."
                f"outlook.com] {rng.randrange(2000, 90000)} bytes in "
                f"{rng.uniform(0.01, 0.4):.3f}, {rng.uniform(50, 900):.3f} KB/sec "
                "Queued mail for delivery"
            )
        if kind == "yahoo":
            return "250 ok dirdel"
        if kind == "proofpoint":
            return f"250 2.0.0 4{rng.getrandbits(40):010x}-1 Message accepted for delivery"
        if kind == "mimecast":
            return f"250 2.0.0 Ok: queued as {rng.getrandbits(48):012x}"
        return f"250 2.0.0 Ok: queued as {rng.getrandbits(40):010X}"

    def notification(self, t: float, qid: str, sender: str) -> Process:
        """The bounce daemon's non-delivery notification and its own delivery."""
        rng = self.rng
        ndn = self.queue_id(t)
        cleanup = self.cleanup.take()
        stamp = (self.start + timedelta(seconds=t)).strftime("%Y%m%d%H%M%S")
        msgid = f"<{stamp}.{ndn}@{HOSTNAME}.{OUR_DOMAIN}>"
        yield t, f"postfix/cleanup[{cleanup}]: {ndn}: message-id={msgid}", None
        self.cleanup.give(cleanup)
        bounce = self.bounce.take()
        yield t, f"postfix/bounce[{bounce}]: {qid}: sender non-delivery notification: {ndn}", None
        self.bounce.give(bounce)
        t += rng.uniform(0.001, 0.01)
        self.inflight += 1
        size = rng.randrange(3000, 9000)
        qmgr = f"postfix/qmgr[{self.qmgr}]"
        yield t, f"{qmgr}: {ndn}: from=<>, size={size}, nrcpt=1 (queue active)", None
        pid = self.smtp.take()
        a, b = rng.uniform(0.0, 0.02), rng.uniform(0.0, 0.01)
        c, d = rng.uniform(0.001, 0.01), rng.uniform(0.001, 0.02)
        t += a + b + c + d
        yield (
            t,
            (
                f"postfix/smtp[{pid}]: {ndn}: to=<{sender}>, relay=mx.{OUR_DOMAIN}[10.0.0.25]:25, "
                f"delay={fmt_delay(a + b + c + d)}, delays={fmt_delay(a)}/{fmt_delay(b)}/"
                f"{fmt_delay(c)}/{fmt_delay(d)}, dsn=2.0.0, status=sent "
                f"(250 2.0.0 Ok: queued as {rng.getrandbits(40):010X})"
            ),
            "sent",
        )
        self.smtp.give(pid)
        t += rng.uniform(0.0, 0.005)
        yield t, f"{qmgr}: {ndn}: removed", None
        self.inflight -= 1

    # -- the scheduler -----------------------------------------------------

    def run(self, out: IO[str], lines: int) -> Counter[str]:
        """Write exactly ``lines`` lines in time order; return what they hold."""
        heap: list[tuple[float, int, Any, Any, Process]] = []
        seq = itertools.count()

        def start(process: Process) -> None:
            try:
                t, payload, kind = next(process)
            except StopIteration:
                return
            heapq.heappush(heap, (t, next(seq), payload, kind, process))

        start(self.arrivals())
        counts = self.counts
        base = self.start
        stamp_second = -1
        prefix = ""
        buf: list[str] = []
        written = 0
        while heap and written < lines:
            t, _, payload, kind, process = heapq.heappop(heap)
            if payload.__class__ is str:
                second = int(t)
                if second != stamp_second:
                    stamp_second = second
                    moment = base + timedelta(seconds=second)
                    # BSD syslog: "Nov  4 09:05:01", the day padded with a space
                    prefix = f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S} {HOSTNAME} "
                buf.append(prefix + payload + "\n")
                written += 1
                if kind.__class__ is str:
                    counts[kind] += 1
                elif kind:
                    counts.update(kind)
                if len(buf) >= 4096:
                    out.write("".join(buf))
                    buf.clear()
            elif payload is not None:
                start(payload)
            start(process)
        out.write("".join(buf))
        counts["lines"] = written
        counts["seconds_spanned"] = int(heap[0][0]) if heap else 0
        return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, required=True, help="how many lines to write")
    parser.add_argument("--out", required=True, help="output path, or - for stdout")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate", type=float, default=8.0, help="mean messages per second")
    parser.add_argument("--max-inflight", type=int, default=2000, help="bound on live messages")
    parser.add_argument("--queue-lifetime-seconds", type=float, default=7200.0)
    parser.add_argument("--start", default="2026-11-20T00:00:00", help="first timestamp (UTC)")
    parser.add_argument("--counts", help="write the ground-truth counts as JSON here")
    args = parser.parse_args(argv)
    sim = PostfixLogSimulation(
        args.seed,
        start=datetime.fromisoformat(args.start).replace(tzinfo=UTC),
        rate=args.rate,
        max_inflight=args.max_inflight,
        queue_lifetime=args.queue_lifetime_seconds,
    )
    if args.out == "-":
        counts = sim.run(sys.stdout, args.lines)
    else:
        with open(args.out, "w", encoding="ascii", buffering=1 << 20) as out:
            counts = sim.run(out, args.lines)
    if args.counts:
        with open(args.counts, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(counts.items())), f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
