"""Every Exim line of the third-party corpus is parsed into the right event or accounted for.

The corpus (``../shared/corpora/mta-logs``, beside the repository) holds other projects'
Exim lines: Exim's own test-suite mainlogs, gvengel/exim_exporter's test mainlog and
fail2ban's Exim samples.  Each line's outcome — ``event:<types>``, ``tracked``,
``ignored`` or ``unparsed:<kind>`` (``general``, ``message``, a flag such as ``=>``, or
``<framing>``) — is committed in ``tests/data/exim/corpus_expectations.json`` (keyed
``file:line``, never the text itself), so a change in what the parser understands shows
up as a reviewed diff.  ``MAILMON_REGEN_GOLDEN=1`` rewrites it.

Lines starting with ``#`` (fail2ban's comments, the test-suite's ``### source:``
separators) and the test suite's ``******** SERVER ********`` banners are not log lines.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from corpus import MTA_LOGS, check_expectations, missed_outcomes
from corpus import corpus_outcomes as read_outcomes

from monitor.collectors.mta.exim import EximParser

EXPECTATIONS = Path(__file__).parent / "data" / "exim" / "corpus_expectations.json"
REFERENCE = datetime(2024, 12, 31, tzinfo=UTC)

LOG_FILES = (
    "exim_testsuite_mainlog_samples.log",
    "gvengel_exim_exporter_test_mainlog.log",
    "fail2ban_exim.log",
    "fail2ban_exim-spam.log",
)


def corpus_lines(name: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for every log line of one corpus file."""
    text = (MTA_LOGS / name).read_text(encoding="utf-8", errors="surrogateescape")
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip() and not line.startswith(("#", "********")):
            yield number, line


@functools.cache
def corpus_outcomes() -> tuple[dict[str, str], dict[str, str]]:
    """Outcome per "file:line", and the lines themselves (for messages only)."""
    return read_outcomes(LOG_FILES, corpus_lines, lambda: EximParser(reference_time=REFERENCE))


def test_corpus_lines_match_expectations() -> None:
    """Each corpus line has the committed outcome; the unsupported ones are listed by kind."""
    check_expectations(EXPECTATIONS, *corpus_outcomes(), kind="kind")


# Lines that must always become events: a recipient's outcome or a refused recipient.
_SHOULD_BE_EVENTS = re.compile(
    r" [0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4} (?:=>|->|\*\*|==) |rejected RCPT "
)


def test_no_delivery_outcome_is_left_unparsed() -> None:
    """Delivery, failure, deferral and recipient-rejection lines are never unsupported."""
    missed = missed_outcomes(*corpus_outcomes(), _SHOULD_BE_EVENTS)
    assert not missed, "\n".join(missed)


def test_outcome_lines_match_their_flags() -> None:
    """Each flag gives its event: => delivered, ** bounced or expired, == deferred or nothing."""
    outcomes, texts = corpus_outcomes()
    allowed = {
        "=>": {"delivered", "dropped"},
        "->": {"delivered"},
        "**": {"bounced", "expired"},
        "==": {"deferred"},
    }
    for key, result in outcomes.items():
        flag = re.search(r" [0-9A-Za-z-]{16,23} (=>|->|\*\*|==) ", texts[key])
        if flag is None:
            continue
        if "retry time not" in texts[key].lower() and flag.group(1) == "==":
            assert result == "ignored", key
            continue
        assert result.startswith("event:"), key
        final = result[6:].split("+")[-1]
        assert final in allowed[flag.group(1)], (key, result)


def test_corpus_covers_every_exim_file() -> None:
    """Every Exim file of the corpus is read by these tests."""
    corpus_outcomes()  # fails clearly when the corpus is missing
    assert {p.name for p in MTA_LOGS.iterdir() if "exim" in p.name} == set(LOG_FILES)
