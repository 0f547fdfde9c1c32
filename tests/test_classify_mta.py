"""Real Postfix and Exim bounce real provider replies; their DSNs must classify as labelled.

An aiosmtpd peer on 127.0.0.1 answers each recipient with a provider's documented reply
(``tests/data/bounces/provider-replies.json``: Gmail, Microsoft, Yahoo, iCloud, Postfix
and postgrey texts, each with its source URL and the reason it means), at RCPT or after
DATA as that provider does.  The private Postfix and Exim of the integration tests relay
one message per DATA refusal and one per provider for the RCPT refusals (Postfix also
meets refusals as the greeting, one peer each, and temporary failures, which it reports
in a delay warning), and send their non-delivery reports back to the sender's domain on
the same peer.  Every report must name the refused recipients with the labelled reason
and hard flag.

``MAILMON_REGEN_GOLDEN=1`` also writes the reports as fixtures (``postfix-*.eml``,
``exim-*.eml`` in ``tests/data/bounces/``) with their labels (``mta-labels.json``, taken
from the reply table, never from the parser), which the unit tests and the benchmark read.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from golden import REGEN
from servers.exim import EximInstance, EximMissing, find_exim
from servers.postfix import PostfixInstance, PostfixMissing, find_postfix
from servers.smtp_sink import GreetingRejectServer

from monitor.collectors.mail.dsn import parse

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent / "data" / "bounces"
REPLIES = DATA / "provider-replies.json"
LABELS = DATA / "mta-labels.json"
SENDER = "sender@app.test"


@dataclass(frozen=True)
class Reply:
    """One documented reply: who sends it, when, what it says and what it means."""

    id: str
    provider: str | None
    command: str
    text: str  # the reply's lines joined with CRLF, as the peer sends it
    reason: str
    hard: bool
    source: str

    @property
    def recipient(self) -> str:
        if self.command == "CONNECT":  # a domain of its own, routed to its own peer
            return f"{self.id}@{self.id}.test"
        return f"{self.id}@{self.provider or 'other'}.test"


def replies() -> list[Reply]:
    """Every reply of the table."""
    return [
        Reply(
            r["id"],
            r["provider"],
            r["command"],
            "\r\n".join(r["reply"]),
            r["reason"],
            r["hard"],
            r["source"],
        )
        for r in json.loads(REPLIES.read_text(encoding="utf-8"))
    ]


def bounced_by_mta(kind: str) -> list[Reply]:
    """The replies ``kind`` reports on: permanent refusals at RCPT or DATA at once; for
    Postfix (which routes each domain to a peer of its own) refusals as the greeting too,
    and temporary ones, which it reports in a delay warning."""
    if kind == "postfix":
        return [r for r in replies() if r.text[0] in "45"]
    return [r for r in replies() if r.text[0] == "5" and r.command in ("RCPT", "DATA")]


def messages(kind: str) -> dict[str, list[Reply]]:
    """Message key -> its refused recipients: one message per provider for the RCPT
    refusals (a report with several recipients), one per DATA or greeting refusal."""
    out: dict[str, list[Reply]] = {}
    for r in bounced_by_mta(kind):
        permanent_rcpt = r.command == "RCPT" and r.text.startswith("5")
        key = f"{r.provider or 'other'}-rcpt" if permanent_rcpt else r.id
        out.setdefault(key, []).append(r)
    return out


class _Peer:
    """aiosmtpd handler: each scripted recipient gets its reply; reports to us are kept."""

    def __init__(self, script: list[Reply]) -> None:
        self.by_address = {r.recipient: r for r in script}
        self.reports: list[bytes] = []
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.by_address.get(address.lower())
        if reply is not None and reply.command == "RCPT":
            return reply.text
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for address in envelope.rcpt_tos:
            reply = self.by_address.get(address.lower())
            if reply is not None and reply.command == "DATA":
                return reply.text
        if envelope.mail_from in ("", "<>"):
            with self.lock:
                self.reports.append(envelope.content)
        return "250 2.0.0 OK queued"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _submit_all(kind: str, mta: PostfixInstance | EximInstance) -> dict[str, str]:
    """Send every message; Message-ID -> message key."""
    sent = {}
    for key, refused in messages(kind).items():
        message = EmailMessage()
        message["From"] = SENDER
        message["To"] = ", ".join(r.recipient for r in refused)
        message["Subject"] = f"classification fixture {key}"
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = msgid = make_msgid(idstring=key, domain="app.test")
        message.set_content(f"fixture {key}\n")
        mta.submit(message, SENDER, [r.recipient for r in refused])
        sent[msgid.strip("<>")] = key
    return sent


def _wait_for_reports(peer: _Peer, want: int, timeout: float = 90.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with peer.lock:
            if len(peer.reports) >= want:
                return list(peer.reports)
        time.sleep(0.2)
    raise AssertionError(f"{len(peer.reports)} of {want} non-delivery reports arrived")


def run_mta(kind: str, workdir: Path) -> dict[str, bytes]:
    """Run ``kind`` (postfix or exim) through every message; message key -> its report."""
    script = bounced_by_mta(kind)
    domains = sorted({r.recipient.split("@")[1] for r in script} | {"app.test"})
    peer = _Peer(script)
    with ExitStack() as stack:
        controller = Controller(peer, hostname="127.0.0.1", port=_free_port())
        controller.start()
        stack.callback(controller.stop)
        mta: PostfixInstance | EximInstance
        if kind == "postfix":
            routes = {d: f"smtp:[127.0.0.1]:{controller.port}" for d in domains}
            for r in script:
                if r.command == "CONNECT":
                    greeter = stack.enter_context(GreetingRejectServer(greeting=r.text))
                    routes[r.recipient.split("@")[1]] = f"smtp:[127.0.0.1]:{greeter.port}"
            # a 5xx greeting refuses the mail, as the server means (Postfix would try
            # another MX and defer by default)
            # and a delay warning at the first retry of a temporary failure
            settings = {"smtp_skip_5xx_greeting": "no", "delay_warning_time": "1s"}
            mta = PostfixInstance(workdir, _free_port(), routes, settings=settings)
        else:
            mta = EximInstance(workdir, _free_port(), controller.port, domains)
        stack.callback(mta.stop)  # registered first: a failed start is cleaned up too
        mta.start()
        sent = _submit_all(kind, mta)
        reports = _wait_for_reports(peer, len(sent))
    by_key = {}
    for report in reports:
        original = parse(report).original.message_id
        assert original in sent, f"a report of no message we sent: {original}"
        by_key[sent[original]] = report
    return by_key


def labels(kind: str) -> dict[str, dict[str, object]]:
    """The fixture name -> its recipients' labels, from the reply table alone."""
    return {
        f"{kind}-{key}.eml": {
            "mta": kind,
            "recipients": [
                {
                    "recipient": r.recipient,
                    "reason": r.reason,
                    "hard": r.hard,
                    "reply": r.id,
                    "source": r.source,
                }
                for r in refused
            ],
        }
        for key, refused in messages(kind).items()
    }


def _verdicts(report: bytes) -> dict[str, tuple[str, bool]]:
    return {r.recipient or "": (r.reason, r.hard) for r in parse(report).recipients}


@pytest.fixture(scope="module", params=["postfix", "exim"])
def reports(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """One run of the real MTA; its reports by message key."""
    kind = request.param
    try:
        find_postfix("postfix") if kind == "postfix" else find_exim()
    except (PostfixMissing, EximMissing) as missing:
        pytest.fail(str(missing), pytrace=False)
    if os.geteuid() != 0:
        pytest.fail(f"the real-{kind} test runs its daemon, which needs root", False)
    found = run_mta(kind, tmp_path_factory.mktemp(f"{kind}-dsn"))
    if REGEN:
        for key, report in found.items():
            (DATA / f"{kind}-{key}.eml").write_bytes(report)
        table = json.loads(LABELS.read_text()) if LABELS.exists() else {}
        table.update(labels(kind))
        LABELS.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    yield kind, found


def test_every_message_is_reported(reports: tuple[str, dict[str, bytes]]) -> None:
    """The MTA sent one report per message, each naming the recipients that were refused."""
    kind, found = reports
    assert set(found) == set(messages(kind))
    for key, refused in messages(kind).items():
        assert set(_verdicts(found[key])) == {r.recipient for r in refused}, key


def test_reports_classify_as_the_documents_say(reports: tuple[str, dict[str, bytes]]) -> None:
    """Every refused recipient of a live report has the reason and hard flag its reply means."""
    kind, found = reports
    wrong = [
        (r.id, (r.reason, r.hard), _verdicts(found[key]).get(r.recipient))
        for key, refused in messages(kind).items()
        for r in refused
        if _verdicts(found[key]).get(r.recipient) != (r.reason, r.hard)
    ]
    assert wrong == [], kind


def test_saved_fixtures_are_labelled_from_the_table() -> None:
    """The saved reports' labels are the reply table's (so a reviewer can trust the bench)."""
    saved = json.loads(LABELS.read_text())
    assert saved == {**labels("exim"), **labels("postfix")}
    assert {p.name for p in DATA.glob("*.eml") if p.name.startswith(("postfix-", "exim-"))} >= set(
        saved
    )
