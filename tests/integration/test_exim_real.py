"""A real Exim delivers a known set of messages; ``mailmon`` must count exactly those.

One scenario per module: a private Exim 4 daemon on 127.0.0.1 (Debian's
exim4-daemon-light, unpacked by ``scripts/install-test-deps.sh``) relays three messages
to a scripted SMTP peer that accepts ``*@ok.test``, answers ``550 5.1.1`` for
``*@userunknown.test`` and ``450 4.2.0`` for ``*@greylisted.test``.  Expected numbers come
from that design, never from the log; the log is read only to know when Exim has finished
a round.

Retries are pinned: the daemon runs no queue runner and the retry rule ``F,5s,1s`` gives
up 5 s after an address's first temporary failure.  Round 1 is Exim's immediate delivery;
after 5 s a forced queue run (``-qff``) tries each greylisted address once more, which
defers it again and, the retry rule being over, fails it with ``retry timeout exceeded``.
So each greylisted recipient has exactly two deferrals and then expires.  Exim's own
bounce notices (null sender) go to ``sender@app.test`` on the same peer.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers.exim import INSTALL_HINT, EximInstance, EximMissing, find_exim
from servers.smtp_sink import Accepted, Behaviour, SmtpSink, behaviour_for

from integration.mta_scenario import (
    Design,
    check_designed_traffic,
    check_ndrs_only_when_asked,
    counts,
    free_port,
    mailmon,
    stats,
    submit_all,
    trace,
)

pytestmark = pytest.mark.integration

SENDER = "sender@app.test"
ROUNDS = 2  # deferrals a greylisted recipient gets before Exim gives up
GIVE_UP_SECONDS = 5  # the retry rule F,5s,1s

RULES = {
    "*@userunknown.test": Behaviour.USER_UNKNOWN,  # 550 5.1.1 at RCPT
    "*@greylisted.test": Behaviour.GREYLISTED,  # 450 4.2.0 at RCPT
}
DOMAINS = ("ok.test", "userunknown.test", "greylisted.test", "app.test")

MESSAGES: dict[str, tuple[str, ...]] = {
    "m1": ("ok1@ok.test", "unk1@userunknown.test", "grey1@greylisted.test"),
    "m2": ("ok2@ok.test", "ok3@ok.test"),  # one transaction: "=>" then "->"
    "m3": ("unk2@userunknown.test", "grey2@greylisted.test", "ok1@ok.test"),
}

_OUTCOME = re.compile(r" ([0-9A-Za-z-]{16,23}) (=>|->|\*\*|==) (\S+?):? ")
_NULL_ARRIVAL = re.compile(r" ([0-9A-Za-z-]{16,23}) <= <> ")
_COMPLETED = re.compile(r" ([0-9A-Za-z-]{16,23}) Completed$")


def outcome(recipient: str) -> str:
    """The final outcome the scripted peer gives ``recipient``."""
    return {
        Behaviour.ACCEPT: "delivered",
        Behaviour.USER_UNKNOWN: "bounced",
        Behaviour.GREYLISTED: "expired",
    }[behaviour_for(RULES, recipient)]


DESIGN = Design(MESSAGES, outcome, ROUNDS)

#: Exim returns a message once for the addresses failed in round 1, once more at expiry.
NDRS = len(DESIGN.messages_with("bounced")) + len(DESIGN.messages_with("expired"))


@dataclass(frozen=True)
class Scenario:
    """What the module's run of Exim left behind."""

    workdir: Path
    mainlog: Path
    db_url: str
    queue_ids: dict[str, str]
    message_ids: dict[str, str]
    accepted: list[Accepted]


def _outcomes(lines: list[str]) -> Counter[tuple[str, str, str]]:
    """(message id, recipient, flag) -> number of log lines."""
    found: Counter[tuple[str, str, str]] = Counter()
    for line in lines:
        if m := _OUTCOME.search(line):
            qid, flag, rcpt = m.groups()
            found[qid, rcpt, flag] += 1
    return found


def _notices_done(lines: list[str], want: int) -> bool:
    """``want`` bounce notices arrived and each has been delivered and completed."""
    notices = {m.group(1) for line in lines if (m := _NULL_ARRIVAL.search(line))}
    completed = {m.group(1) for line in lines if (m := _COMPLETED.search(line))}
    return len(notices) >= want and notices <= completed


def _run(mta: EximInstance) -> tuple[dict[str, str], dict[str, str]]:
    queue_ids, message_ids = submit_all(mta, MESSAGES, SENDER)
    first_failure = time.monotonic()
    sent = {(queue_ids[k], r) for k, rcpts in MESSAGES.items() for r in rcpts}

    def round_one(lines: list[str]) -> bool:
        seen = {(q, r) for q, r, _ in _outcomes(lines)}
        return sent <= seen and _notices_done(lines, len(DESIGN.messages_with("bounced")))

    mta.wait_for_log(round_one)
    flags = {"delivered": ("=>", "->"), "bounced": ("**",), "expired": ("==",)}
    for (qid, rcpt, flag), n in _outcomes(mta.log_lines()).items():
        if rcpt != SENDER:
            assert n == 1 and flag in flags[outcome(rcpt)], (qid, rcpt, flag)

    time.sleep(max(0.0, first_failure + GIVE_UP_SECONDS + 1 - time.monotonic()))
    mta.run_queue()

    def expired(lines: list[str]) -> bool:
        seen = _outcomes(lines)
        gave_up = all(
            seen[q, r, "**"] == 1 and seen[q, r, "=="] == ROUNDS
            for q, r in sent
            if outcome(r) == "expired"
        )
        return gave_up and _notices_done(lines, NDRS) and mta.queue_count() == 0

    mta.wait_for_log(expired)
    return queue_ids, message_ids


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Run Exim through the scenario once, stop it, and ingest its mainlog."""
    try:
        find_exim()
    except EximMissing as missing:
        pytest.fail(str(missing), pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the real-Exim test runs Exim's daemon, which needs root", False)
    workdir = tmp_path_factory.mktemp("exim-real")
    (workdir / "mailmon.toml").write_text("", encoding="utf-8")
    with ExitStack() as stack:
        sink = stack.enter_context(SmtpSink(RULES))
        mta = EximInstance(workdir, free_port(), sink.port, DOMAINS)
        stack.callback(mta.stop)  # registered first: a failed start is cleaned up too
        mta.start()
        queue_ids, message_ids = _run(mta)
        mta.stop()
    db_url = f"sqlite:///{workdir / 'm.db'}"
    mailmon(workdir, "ingest", "exim", str(mta.log_file), "--db", db_url)
    yield Scenario(workdir, mta.log_file, db_url, queue_ids, message_ids, sink.accepted)


def test_exim_is_available() -> None:
    """The unpacked Exim binary is there; when not, the suite fails with how to get it."""
    try:
        find_exim()
    except EximMissing:
        pytest.fail(INSTALL_HINT, pytrace=False)


def test_peer_received_the_designed_traffic(scenario: Scenario) -> None:
    """The scripted peer saw exactly the designed deliveries, so the expectations are sound."""
    check_designed_traffic(scenario.accepted, DESIGN, SENDER, NDRS)


def test_stats_by_domain_count_exactly_what_was_sent(scenario: Scenario) -> None:
    """`stats --by domain` has per domain the exact recipients by outcome and deferral attempts."""
    rows = stats(scenario, "--by", "domain")
    assert counts(rows, "domain") == DESIGN.expected_by_domain()
    by_domain = {row["domain"]: row for row in rows}
    assert by_domain["ok.test"]["delivery_rate"] == 1.0
    assert by_domain["userunknown.test"]["bounce_rate"] == 1.0
    assert by_domain["greylisted.test"]["delivery_rate"] == 0.0


def test_stats_count_our_bounce_notices_only_when_asked(scenario: Scenario) -> None:
    """Exim's null-sender notices count only with `--include-ndr`, and only for app.test."""
    check_ndrs_only_when_asked(scenario, NDRS)


def test_trace_shows_each_recipients_attempts(scenario: Scenario) -> None:
    """`trace <message-id>` and `trace <exim id>` list each recipient's designed timeline."""
    for key, recipients in MESSAGES.items():
        found = trace(scenario, scenario.message_ids[key])
        deliveries = {d["recipient"]: d for d in found["deliveries"]}
        assert sorted(deliveries) == sorted(recipients)
        for rcpt, delivery in deliveries.items():
            assert delivery["queue_id"] == scenario.queue_ids[key]
            assert [e["type"] for e in delivery["events"]] == DESIGN.timeline(rcpt), rcpt
        by_queue_id = trace(scenario, scenario.queue_ids[key])
        assert by_queue_id["deliveries"] == found["deliveries"]
    m1 = {
        d["recipient"]: d["events"]
        for d in trace(scenario, scenario.message_ids["m1"])["deliveries"]
    }
    bounced = m1["unk1@userunknown.test"][-1]
    assert (bounced["reply_code"], bounced["enhanced_status"]) == (550, "5.1.1")
    for deferral in m1["grey1@greylisted.test"][1:-1]:
        assert (deferral["reply_code"], deferral["enhanced_status"]) == (450, "4.2.0")
    assert m1["grey1@greylisted.test"][-1]["enhanced_status"] == "4.2.0"
    assert m1["ok1@ok.test"][-1]["reply_code"] == 250


def test_the_mainlog_is_fully_understood(scenario: Scenario) -> None:
    """Every line Exim wrote is parsed or understood: nothing is left unparsed."""
    again = f"sqlite:///{scenario.workdir / 'again.db'}"
    out = mailmon(
        scenario.workdir, "ingest", "exim", str(scenario.mainlog), "--json", "--db", again
    )
    summary = json.loads(out)
    assert summary["unparsed_lines"] == 0, summary["unparsed_by_service"]
    assert summary["events"] > 0 and summary["failed"] == []
