"""Every Postfix line of the third-party corpus is parsed into the right event or accounted for.

The corpus (``../shared/corpora/mta-logs``, beside the repository) holds other projects'
test lines.  Each line's outcome — ``event:<types>``, ``tracked``, ``ignored`` or
``unparsed:<daemon>`` — is committed in ``tests/data/postfix/corpus_expectations.json``
(keyed ``file:line``, never the text itself), so a change in what the parser understands
shows up as a reviewed diff.  ``MAILMON_REGEN_GOLDEN=1`` rewrites it.

Body-only files (no syslog header) are framed as ``Jan  1 00:00:00 host PROG[1]: BODY``:
the whyscream file names the daemon per line; logwatch's samples name none, so the daemon
is inferred from the text, and the queue id that logwatch strips before matching is put
back where Postfix always writes one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from corpus import MTA_LOGS, check_expectations, missed_outcomes
from corpus import corpus_outcomes as read_outcomes

from monitor.collectors.mta.postfix import PostfixParser

EXPECTATIONS = Path(__file__).parent / "data" / "postfix" / "corpus_expectations.json"
REFERENCE = datetime(2024, 12, 31, tzinfo=UTC)

LOG_FILES = (
    "hsn723_postfix_exporter_testlines.log",
    "sergeymakinen_postfix_exporter_mail.log",
    "fail2ban_postfix.log",
    "youyo_postfix-log-parser_test.log",
    "youyo_postfix-log-parser_test-iso8601.log",
    "youyo_postfix-log-parser_test-milter.log",
)
WHYSCREAM = "whyscream_postfix-grok-patterns_messages.tsv"
LOGWATCH = "logwatch_7.7_postfix_TD_samples.txt"


# logwatch's samples, daemon by daemon (first match wins).  Policy servers that share the
# log (postfix-policyd-spf-perl, postgrey, postfwd) keep their own program names.
_LOGWATCH_PROGRAMS = [
    (
        r"SPF |Policy action=|(?:: )+SPF |[0-9A-F]+: SPF |Mail From \(sender\) check|"
        r"HELO check failed|SPF not applicable|testing: stripped|warning: ignoring garbage",
        "policyd-spf",
    ),
    (r"\[(?:STATS|LOGS|DNSBL|RULES|CACHE)[\] ]", "postfwd"),
    (
        r"cleaning |delayed \d+ seconds|Setting [ug]id|Process Backgrounded|\d{4}/\d\d/\d\d-|"
        r"Binding to|Couldn't unlink|ignoring garbage|unrecognized request|rm /|Resolved \[|action=",
        "postgrey",
    ),
    (r"(?:[\w-]+):\s+(?:header|body|content)\s", "postfix/cleanup"),
    (r"milter-\w+:\s+END-OF-MESSAGE", "postfix/cleanup"),
    (r"(?:resent-)?message-id=", "postfix/cleanup"),
    (r"from=<.*>, (?:size|status)=", "postfix/qmgr"),
    (r"uid=", "postfix/pickup"),
    (r"(?:sender|postmaster) [\w -]+ notification:", "postfix/bounce"),
    (r"(?:Placed on hold|Released from hold|Requeued|Deleted):", "postfix/postsuper"),
    (r"reload|panic:|fatal:|daemon started|terminating", "postfix/master"),
    (
        r"(?:[0-9A-F]+: )?to=|connect to |host \S+ (?:said|refused)|lost connection with|"
        r"conversation with|enabling PIX|SASL (?:\[CACHED\] )?authentication failed;|"
        r"Host offered STARTTLS|Unverified:|(?:Verified |Untrusted |Trusted )?TLS connection "
        r"established to|SSL_connect|status=|warning: [0-9A-F]+: non-ESMTP|"
        r"warning: (?:host|bad size limit|Unable to look up|no MX host|mailer loop|malformed "
        r"domain|numeric domain)",
        "postfix/smtp",
    ),
]
# Bodies Postfix always writes after "QID: " (logwatch strips it before matching).
_NEEDS_QID = re.compile(
    r"(?:to|from|client|message-id|resent-message-id|uid)=|(?:sender|postmaster) [\w -]+ "
    r"notification:|(?:[\w-]+):\s+(?:header|body|content)\s|milter-\w+:\s+END-OF-MESSAGE|"
    r"proxy-(?:accept|reject):"
)
_NOQUEUE = re.compile(
    r"(?:reject|reject_warning|warn|discard|hold|filter|redirect|bcc|milter-\w+):\s+"
    r"(?:RCPT|MAIL|DATA|BDAT|EHLO|HELO|VRFY|ETRN|CONNECT)\s"
)


def _logwatch_line(number: int, body: str) -> str:
    body = body.strip()  # the samples are column-aligned
    program = "postfix/smtpd"
    for pattern, name in _LOGWATCH_PROGRAMS:
        if re.match(pattern, body):
            program = name
            break
    if program.startswith("postfix/") and not re.match(r"[0-9A-F]{5,}: ", body):
        if _NEEDS_QID.match(body):
            body = f"{0xA000000000 + number:X}: {body}"
        elif _NOQUEUE.match(body):
            body = f"NOQUEUE: {body}"
    return f"Jan  1 00:00:00 host {program}[1]: {body}"


def corpus_lines(name: str) -> Iterator[tuple[int, str]]:
    """(line number, line to feed) for every Postfix-side line of one corpus file."""
    lines = (MTA_LOGS / name).read_text(encoding="utf-8", errors="surrogateescape").split("\n")
    if name == WHYSCREAM:
        # One record per "program<TAB>body" line; lines without a tab continue the body of
        # a multi-line YAML value and are joined the way rsyslog escapes a newline.
        records: list[tuple[int, str, str]] = []
        for number, line in enumerate(lines, start=1):
            if line.startswith("#"):
                continue
            if "\t" in line:
                program, body = line.split("\t", 1)
                records.append((number, program, body))
            elif records:
                start, program, body = records[-1]
                records[-1] = (start, program, f"{body}#012{line}")
        for number, program, body in records:
            # whyscream names its test files, not always daemons: "tls_features" holds smtp
            # status lines (and bare values of the tls= field, fed as they are).
            daemon = "smtp" if program == "tls_features" and ": to=<" in body else program
            yield number, f"Jan  1 00:00:00 host postfix/{daemon}[1]: {body}"
    elif name == LOGWATCH:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, _logwatch_line(number, line)
    else:
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.startswith("#"):  # comments and separators
                yield number, line


@functools.cache
def corpus_outcomes() -> tuple[dict[str, str], dict[str, str]]:
    """Outcome per "file:line", and the lines themselves (for messages only)."""
    names = (*LOG_FILES, WHYSCREAM, LOGWATCH)
    return read_outcomes(names, corpus_lines, lambda: PostfixParser(reference_time=REFERENCE))


def test_corpus_lines_match_expectations() -> None:
    """Each corpus line has the committed outcome; the unsupported ones are listed by daemon."""
    check_expectations(EXPECTATIONS, *corpus_outcomes(), kind="daemon")


# A recipient's outcome, a refused message, an expiry: these must always become events.
_SHOULD_BE_EVENTS = re.compile(
    r"(?:to=|[\w.-]+@[\w.-]+, ).*status=(?:sent|deferred|bounced|expired|SOFTBOUNCE)|"
    r"status=(?:force-)?expired, returned|: reject: (?:RCPT|MAIL|DATA|BDAT)|"
    r"milter-reject: (?:RCPT|END-OF-MESSAGE|DATA)"
)


def test_no_delivery_outcome_is_left_unparsed() -> None:
    """Status, reject and expiry lines are never among the unsupported lines."""
    missed = missed_outcomes(*corpus_outcomes(), _SHOULD_BE_EVENTS)
    assert not missed, "\n".join(missed)


def test_corpus_covers_every_postfix_file() -> None:
    """Every Postfix file of the corpus is read by these tests."""
    corpus_outcomes()  # fails clearly when the corpus is missing
    assert {p.name for p in MTA_LOGS.iterdir() if "postfix" in p.name} == {
        *LOG_FILES,
        WHYSCREAM,
        LOGWATCH,
    }
