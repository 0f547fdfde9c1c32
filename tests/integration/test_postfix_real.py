"""A real Postfix delivers a known set of messages; ``mailmon`` must count exactly those.

One scenario per module: a private Postfix on 127.0.0.1 relays six messages to scripted
SMTP peers, each recipient domain routed to a peer that answers one way (accept, user
unknown, mailbox full, greylisted, 421 greeting, spam refused after DATA, connection
refused).  When every recipient has its final outcome, Postfix is stopped and the tests
run the CLI on its maillog as a user would.  Expected numbers come from the scenario's
design (which peer answers what), never from the log; the log is read only to know when
Postfix has finished a round.

Retries are pinned so the deferral counts are exact: the backoff and queue-run delays are
an hour, so Postfix retries only when told to.  Round 1 is the first attempt, round 2 one
``postqueue -f``; then ``postsuper -e ALL`` + ``postqueue -f`` returns what is left to the
sender (``status=force-expired, returned to sender``).  Each temporarily failing recipient
has exactly two deferrals and then expires.  Postfix's own non-delivery notices (null
sender) go to ``sender@app.test`` on the accepting peer.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from servers.postfix import INSTALL_HINT, PostfixInstance, PostfixMissing, find_postfix
from servers.smtp_sink import (
    Accepted,
    Behaviour,
    GreetingRejectServer,
    RefusedPort,
    SmtpSink,
    behaviour_for,
)

from integration.mta_scenario import (
    COUNTS,
    Design,
    check_designed_traffic,
    check_ndrs_only_when_asked,
    counts,
    domain,
    free_port,
    mailmon,
    stats,
    submit_all,
    trace,
)

pytestmark = pytest.mark.integration

SENDER = "sender@app.test"
ROUNDS = 2  # delivery attempts a temporarily failing recipient gets before it is expired

#: How the accepting peer answers, by recipient pattern; anything else is accepted.
MAIN_RULES = {
    "*@userunknown.test": Behaviour.USER_UNKNOWN,  # 550 5.1.1 at RCPT
    "*@mailboxfull.test": Behaviour.MAILBOX_FULL,  # 552 5.2.2 at RCPT
    "*@greylisted.test": Behaviour.GREYLISTED,  # 450 4.2.0 at RCPT
    "unknown-*@mixed.test": Behaviour.USER_UNKNOWN,
    "grey-*@mixed.test": Behaviour.GREYLISTED,
}

#: The peer each domain's transport points at.  A 550 after DATA refuses the whole
#: transaction, so spam.test has a peer of its own (Postfix groups a message's recipients
#: by next hop into one transaction).
ROUTES = {
    "ok.test": "main",
    "userunknown.test": "main",
    "mailboxfull.test": "main",
    "greylisted.test": "main",
    "mixed.test": "main",
    "app.test": "main",  # the sender's domain: Postfix's DSNs are delivered too
    "spam.test": "spam",  # 550 5.7.1 message rejected as spam, after DATA
    "greeting421.test": "greeting",  # 421 4.7.0 try later, as the greeting
    "refused.test": "refused",  # nothing listens
}

MESSAGES: dict[str, tuple[str, ...]] = {
    "m1": ("ok1@ok.test", "grey1@greylisted.test", "unk1@userunknown.test"),
    "m2": ("ok2@ok.test", "full1@mailboxfull.test", "x1@greeting421.test", "r1@refused.test"),
    "m3": ("s1@spam.test", "s2@spam.test", "ok3@ok.test"),
    "m4": (
        "unk2@userunknown.test",
        "grey2@greylisted.test",
        "r2@refused.test",
        "ok-a@mixed.test",
        "unknown-b@mixed.test",
    ),
    "m5": ("x2@greeting421.test", "full2@mailboxfull.test", "grey-c@mixed.test", "ok4@ok.test"),
    "m6": ("ok1@ok.test",),  # ok1 again: `trace ok1@ok.test` finds two deliveries
}

#: Retries happen only when the test asks for them.
PINNED_RETRIES = {
    "queue_run_delay": "1h",
    "minimal_backoff_time": "1h",
    "maximal_backoff_time": "1h",
    "maximal_queue_lifetime": "1d",
    "bounce_queue_lifetime": "1d",
}

POSTFIX_STATUS = {"delivered": "sent", "bounced": "bounced", "expired": "deferred"}

_STATUS = re.compile(r" (?P<qid>[0-9A-F]+): to=<(?P<rcpt>[^>]*)>,.*? status=(?P<status>[a-z-]+)")
_FORCE_EXPIRED = re.compile(r" (?P<qid>[0-9A-F]+): from=<[^>]*>, status=force-expired")
_REMOVED = re.compile(r" (?P<qid>[0-9A-F]+): removed$")


# -- the design: what must happen --------------------------------------------------------


def outcome(recipient: str) -> str:
    """The final outcome the scenario's peers give ``recipient``."""
    peer = ROUTES[domain(recipient)]
    if peer in ("greeting", "refused"):
        return "expired"
    if peer == "spam":
        return "bounced"
    return {
        Behaviour.ACCEPT: "delivered",
        Behaviour.USER_UNKNOWN: "bounced",
        Behaviour.MAILBOX_FULL: "bounced",
        Behaviour.GREYLISTED: "expired",
    }[behaviour_for(MAIN_RULES, recipient)]


DESIGN = Design(MESSAGES, outcome, ROUNDS)

#: Postfix returns a message once for the recipients bounced in a round and once more
#: for those still queued when it expires.
NDRS_AFTER_ROUND_ONE = len(DESIGN.messages_with("bounced"))
NDRS = NDRS_AFTER_ROUND_ONE + len(DESIGN.messages_with("expired"))


# -- running the scenario ----------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """What the module's run of Postfix left behind."""

    workdir: Path
    maillog: Path
    db_url: str
    queue_ids: dict[str, str]  # message key -> queue id (from Postfix's 250 reply)
    message_ids: dict[str, str]  # message key -> Message-ID, with <>
    started: datetime
    finished: datetime
    accepted: list[Accepted]  # what the accepting peer took
    spam_refusals: list[tuple[str, ...]]  # recipients of transactions refused after DATA


def _statuses(lines: list[str]) -> Counter[tuple[str, str, str]]:
    """(queue id, recipient, status) -> number of log lines."""
    found: Counter[tuple[str, str, str]] = Counter()
    for line in lines:
        if match := _STATUS.search(line):
            found[match["qid"], match["rcpt"], match["status"]] += 1
    return found


def _ndrs(seen: Counter[tuple[str, str, str]]) -> int:
    return sum(n for (_, rcpt, status), n in seen.items() if rcpt == SENDER and status == "sent")


def _next_second() -> None:
    """Sleep into the next wall-clock second.

    The maillog has one-second timestamps while real retries are minutes apart.  Giving each
    round seconds of its own, as in production, pins the count and order of real rounds
    rather than how ties inside one second are broken.
    """
    time.sleep(1.02 - time.time() % 1)


def _run_rounds(mta: PostfixInstance, queue_ids: dict[str, str]) -> None:
    """Round 1, one flush, then force-expiry; each waits until Postfix has logged it all."""
    sent = {(queue_ids[k], r) for k, rcpts in MESSAGES.items() for r in rcpts}
    temporary = {(q, r) for q, r in sent if outcome(r) == "expired"}

    def settled() -> bool:
        """Nothing is in flight: what is left waits in the deferred queue for the next round."""
        return all(message["queue_name"] == "deferred" for message in mta.queue())

    def round_one(lines: list[str]) -> bool:
        seen = _statuses(lines)
        logged = sent <= {(q, r) for q, r, _ in seen}
        return logged and _ndrs(seen) >= NDRS_AFTER_ROUND_ONE and settled()

    def round_two(lines: list[str]) -> bool:
        seen = _statuses(lines)
        return all(seen[q, r, "deferred"] >= ROUNDS for q, r in temporary) and settled()

    expiring = {queue_ids[k] for k in DESIGN.messages_with("expired")}

    def expired(lines: list[str]) -> bool:
        removed = {m["qid"] for line in lines if (m := _REMOVED.search(line))}
        forced = {m["qid"] for line in lines if (m := _FORCE_EXPIRED.search(line))}
        return (
            forced >= expiring
            and removed >= set(queue_ids.values())
            and _ndrs(_statuses(lines)) >= NDRS
        )

    mta.wait_for_log(round_one)
    seen = _statuses(mta.log_lines())
    want = Counter({(q, r, POSTFIX_STATUS[outcome(r)]): 1 for q, r in sent})
    assert {k: n for k, n in seen.items() if k[1] != SENDER} == want, "round 1 went off-script"
    assert _ndrs(seen) == NDRS_AFTER_ROUND_ONE

    _next_second()
    mta.flush()
    mta.wait_for_log(round_two)
    seen = _statuses(mta.log_lines())
    want.update({(q, r, "deferred"): ROUNDS - 1 for q, r in temporary})
    assert {k: n for k, n in seen.items() if k[1] != SENDER} == want, "round 2 went off-script"

    _next_second()
    mta.expire_all()
    mta.wait_for_log(expired)
    assert _ndrs(_statuses(mta.log_lines())) == NDRS
    assert "Mail queue is empty" in mta.queue_listing()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Run Postfix through the scenario once, stop it, and ingest its maillog."""
    try:
        for command in ("postfix", "postqueue", "postsuper"):
            find_postfix(command)
    except PostfixMissing as missing:
        pytest.fail(str(missing), pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the real-Postfix test runs Postfix's master, which needs root", False)
    workdir = tmp_path_factory.mktemp("postfix-real")
    (workdir / "mailmon.toml").write_text("", encoding="utf-8")
    with ExitStack() as stack:
        main = stack.enter_context(SmtpSink(MAIN_RULES))
        spam = stack.enter_context(SmtpSink({"*": Behaviour.SPAM}))
        greeting = stack.enter_context(GreetingRejectServer())
        refused = stack.enter_context(RefusedPort())
        ports = {"main": main.port, "spam": spam.port, "greeting": greeting.port}
        ports["refused"] = refused.port
        transports = {d: f"smtp:[127.0.0.1]:{ports[peer]}" for d, peer in ROUTES.items()}
        mta = PostfixInstance(workdir, free_port(), transports, settings=PINNED_RETRIES)
        stack.callback(mta.stop)  # registered first: a failed start is cleaned up too
        mta.start()
        started = datetime.now(UTC)
        queue_ids, message_ids = submit_all(mta, MESSAGES, SENDER)
        _run_rounds(mta, queue_ids)
        finished = datetime.now(UTC)
        mta.stop()
    db_url = f"sqlite:///{workdir / 'm.db'}"
    mailmon(workdir, "ingest", "postfix", str(mta.log_file), "--db", db_url)
    yield Scenario(
        workdir=workdir,
        maillog=mta.log_file,
        db_url=db_url,
        queue_ids=queue_ids,
        message_ids=message_ids,
        started=started,
        finished=finished,
        accepted=main.accepted,
        spam_refusals=[r.rcpt_tos for r in spam.refused],
    )


# -- reading the CLI's answers -------------------------------------------------------------


def bare(message_id: str) -> str:
    return message_id.strip().removeprefix("<").removesuffix(">")


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- the tests -----------------------------------------------------------------------------


def test_postfix_is_installed() -> None:
    """Postfix's commands are installed; when not, the suite fails with how to get them."""
    for command in ("postfix", "postqueue", "postsuper"):
        try:
            find_postfix(command)
        except PostfixMissing:
            pytest.fail(INSTALL_HINT, pytrace=False)


def test_peers_received_the_designed_traffic(scenario: Scenario) -> None:
    """The scripted peers saw exactly the designed deliveries, so the expectations are sound."""
    check_designed_traffic(scenario.accepted, DESIGN, SENDER, NDRS)
    assert scenario.spam_refusals == [tuple(r for r in MESSAGES["m3"] if outcome(r) == "bounced")]


def test_stats_by_domain_count_exactly_what_was_sent(scenario: Scenario) -> None:
    """`stats --by domain` has per domain the exact recipients by outcome and deferral attempts."""
    rows = stats(scenario, "--by", "domain")
    assert counts(rows, "domain") == DESIGN.expected_by_domain()
    by_domain = {row["domain"]: row for row in rows}
    # Rates that every definition agrees on: the domains with one outcome only.
    assert by_domain["ok.test"]["delivery_rate"] == 1.0
    assert by_domain["ok.test"]["bounce_rate"] == 0.0
    assert by_domain["ok.test"]["deferral_rate"] == 0.0
    for name in ("userunknown.test", "mailboxfull.test", "spam.test"):
        assert by_domain[name]["bounce_rate"] == 1.0
        assert by_domain[name]["delivery_rate"] == 0.0
    for name in ("greylisted.test", "greeting421.test", "refused.test"):
        assert by_domain[name]["delivery_rate"] == 0.0
        assert by_domain[name]["deferral_rate"] > 0.0
    for row in rows:
        for rate in ("delivery_rate", "bounce_rate", "complaint_rate"):
            assert row[rate] is None or 0.0 <= row[rate] <= 1.0, (row["domain"], rate)


def test_stats_by_provider_add_up_to_the_domains(scenario: Scenario) -> None:
    """`stats --by provider` puts the test domains (no known provider, no DNS) under `other`."""
    total = dict.fromkeys(COUNTS, 0)
    for row in DESIGN.expected_by_domain().values():
        for name in COUNTS:
            total[name] += row[name]
    assert counts(stats(scenario, "--by", "provider"), "provider") == {"other": total}


def test_stats_leave_out_our_own_bounce_notices_unless_asked(scenario: Scenario) -> None:
    """Postfix's null-sender notices count only with `--include-ndr`, and only for app.test."""
    check_ndrs_only_when_asked(scenario, NDRS)


def _check_timeline(s: Scenario, found: dict[str, Any], key: str) -> None:
    """Each recipient of message ``key`` has its designed attempts, in time order."""
    deliveries = {d["recipient"]: d for d in found["deliveries"]}
    assert sorted(deliveries) == sorted(MESSAGES[key])
    for rcpt, delivery in deliveries.items():
        final = outcome(rcpt)
        assert bare(delivery["message_id"]) == bare(s.message_ids[key])
        assert delivery["queue_id"] == s.queue_ids[key]
        assert delivery["state"] == final, rcpt
        events = delivery["events"]
        assert [e["type"] for e in events] == DESIGN.timeline(rcpt), rcpt
        times = [_when(e["occurred_at"]) for e in events]
        assert times == sorted(times), rcpt
        slack = timedelta(seconds=2)
        assert s.started - slack <= times[0] and times[-1] <= s.finished + slack, rcpt


def test_trace_by_message_id_shows_each_recipients_attempts(scenario: Scenario) -> None:
    """`trace <message-id>` lists each recipient's submission, deferrals and outcome in order."""
    found = trace(scenario, scenario.message_ids["m1"])
    assert found["query"] == scenario.message_ids["m1"]
    _check_timeline(scenario, found, "m1")
    by_rcpt = {d["recipient"]: d["events"] for d in found["deliveries"]}
    for event in by_rcpt["grey1@greylisted.test"][1:-1]:
        assert (event["reply_code"], event["enhanced_status"]) == (450, "4.2.0")
        assert "greylisted" in event["diagnostic"]
    bounced = by_rcpt["unk1@userunknown.test"][-1]
    assert (bounced["reply_code"], bounced["enhanced_status"]) == (550, "5.1.1")
    assert "user unknown" in bounced["diagnostic"]
    assert by_rcpt["ok1@ok.test"][-1]["enhanced_status"] == "2.0.0"
    without_brackets = trace(scenario, bare(scenario.message_ids["m1"]))
    assert without_brackets["deliveries"] == found["deliveries"]


def test_trace_by_queue_id_matches_the_message_id(scenario: Scenario) -> None:
    """`trace <queue id>` finds the same deliveries as the message's Message-ID."""
    by_queue_id = trace(scenario, scenario.queue_ids["m2"])
    _check_timeline(scenario, by_queue_id, "m2")
    assert by_queue_id["deliveries"] == trace(scenario, scenario.message_ids["m2"])["deliveries"]


def test_trace_by_recipient_finds_every_message_to_it(scenario: Scenario) -> None:
    """`trace <address>` lists that recipient's deliveries across messages."""
    found = trace(scenario, "ok1@ok.test")["deliveries"]
    assert sorted(bare(d["message_id"]) for d in found) == sorted(
        bare(scenario.message_ids[k]) for k in ("m1", "m6")
    )
    assert {d["recipient"] for d in found} == {"ok1@ok.test"}
    assert [[e["type"] for e in d["events"]] for d in found] == [["submitted", "delivered"]] * 2
    expired = trace(scenario, "x2@greeting421.test")["deliveries"]
    assert [[e["type"] for e in d["events"]] for d in expired] == [
        ["submitted", *["deferred"] * ROUNDS, "expired"]
    ]
    assert "421 4.7.0 try later" in expired[0]["events"][1]["diagnostic"]


def test_trace_prints_a_timeline_for_people(scenario: Scenario) -> None:
    """Plain `trace` prints every recipient of the message with its outcome."""
    out = mailmon(scenario.workdir, "trace", scenario.message_ids["m4"], "--db", scenario.db_url)
    for rcpt in MESSAGES["m4"]:
        assert rcpt in out
    for word in ("submitted", "deferred", "expired", "bounced", "delivered"):
        assert word in out


def test_ingesting_the_same_log_twice_changes_nothing(scenario: Scenario) -> None:
    """A second ingest of the same maillog leaves every number where it was."""
    db_url = f"sqlite:///{scenario.workdir / 'twice.db'}"
    mailmon(scenario.workdir, "ingest", "postfix", str(scenario.maillog), "--db", db_url)
    once = stats(scenario, "--by", "domain", "--include-ndr", db_url=db_url)
    mailmon(scenario.workdir, "ingest", "postfix", str(scenario.maillog), "--db", db_url)
    twice = stats(scenario, "--by", "domain", "--include-ndr", db_url=db_url)
    assert twice == once
    assert counts(twice, "domain") == counts(
        stats(scenario, "--by", "domain", "--include-ndr"), "domain"
    )


def test_gzip_and_stdin_inputs_are_the_same_events(scenario: Scenario) -> None:
    """The maillog read gzipped or from stdin yields the same, deduplicated, numbers."""
    packed = scenario.workdir / "maillog.1.gz"
    packed.write_bytes(gzip.compress(scenario.maillog.read_bytes()))
    db_url = f"sqlite:///{scenario.workdir / 'inputs.db'}"
    mailmon(scenario.workdir, "ingest", "postfix", str(packed), "--db", db_url)
    from_gzip = stats(scenario, "--by", "domain", "--include-ndr", db_url=db_url)
    stdin = scenario.maillog.read_bytes()
    mailmon(scenario.workdir, "ingest", "postfix", "-", "--db", db_url, stdin=stdin)
    assert stats(scenario, "--by", "domain", "--include-ndr", db_url=db_url) == from_gzip
    assert from_gzip == stats(scenario, "--by", "domain", "--include-ndr")


def test_pflogsumm_agrees_on_the_totals(scenario: Scenario) -> None:
    """pflogsumm, read from the same maillog, reports the same delivered, bounced and deferrals."""
    pflogsumm = shutil.which("pflogsumm", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if pflogsumm is None:
        pytest.fail(f"pflogsumm not found. {INSTALL_HINT}", pytrace=False)
    report = subprocess.run(
        [pflogsumm, str(scenario.maillog)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    totals = report.split("Grand Totals", 1)[1]

    def number(pattern: str) -> int:
        match = re.search(pattern, totals)
        assert match, f"{pattern!r} not in pflogsumm's grand totals:\n{totals[:600]}"
        return int(match.group(1))

    rows = counts(stats(scenario, "--by", "domain", "--include-ndr"), "domain").values()
    mine = {name: sum(row[name] for row in rows) for name in ("delivered", "bounced", "deferred")}
    theirs = {
        "delivered": number(r"(\d+)\s+delivered"),
        "bounced": number(r"(\d+)\s+bounced"),
        "deferred": number(r"\((\d+)\s+deferrals\)"),
    }
    # pflogsumm counts `status=` lines: force-expired returns are not bounces to it.
    assert mine == theirs
