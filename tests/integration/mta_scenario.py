"""What the real-MTA scenarios share: the design's arithmetic, sending it, and the CLI.

Each MTA's module designs its own scenario (which messages, which peers answer what, how
many rounds of retries) and drives its own MTA through it; this module turns a design
into the numbers the CLI must report and runs the CLI as a user would::

    DESIGN = Design(MESSAGES, outcome, rounds=2)
    queue_ids, message_ids = submit_all(mta, MESSAGES, SENDER)
    assert counts(stats(scenario, "--by", "domain"), "domain") == DESIGN.expected_by_domain()
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol

import pytest
from servers.mta import MtaInstance
from servers.smtp_sink import Accepted

__all__ = [
    "COUNTS",
    "RATES",
    "Design",
    "Ingested",
    "check_designed_traffic",
    "check_ndrs_only_when_asked",
    "counts",
    "domain",
    "free_port",
    "mailmon",
    "stats",
    "submit_all",
    "trace",
]

COUNTS = ("submitted", "delivered", "deferred", "bounced", "expired", "rejected", "complained")
RATES = ("delivery_rate", "bounce_rate", "deferral_rate", "complaint_rate")


def domain(address: str) -> str:
    return address.rpartition("@")[2]


@dataclass(frozen=True)
class Design:
    """Who each message goes to, the final outcome the peers give each recipient, and how
    many deferrals a recipient that ends expired gets first."""

    messages: Mapping[str, tuple[str, ...]]
    outcome: Callable[[str], str]
    rounds: int

    def expected_by_domain(self) -> dict[str, dict[str, int]]:
        """Per recipient domain: recipients by final outcome, and deferral attempts."""
        rows: dict[str, dict[str, int]] = {}
        for recipients in self.messages.values():
            for rcpt in recipients:
                row = rows.setdefault(domain(rcpt), dict.fromkeys(COUNTS, 0))
                final = self.outcome(rcpt)
                row["submitted"] += 1
                row[final] += 1
                if final == "expired":
                    row["deferred"] += self.rounds
        return rows

    def messages_with(self, final: str) -> set[str]:
        """The messages with at least one recipient whose final outcome is ``final``."""
        return {
            key
            for key, rcpts in self.messages.items()
            if any(self.outcome(r) == final for r in rcpts)
        }

    def timeline(self, recipient: str) -> list[str]:
        """The event types ``trace`` must list for ``recipient``, in order."""
        final = self.outcome(recipient)
        deferrals = ["deferred"] * self.rounds if final == "expired" else []
        return ["submitted", *deferrals, final]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def submit_all(
    mta: MtaInstance, messages: Mapping[str, tuple[str, ...]], sender: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Send each message to its recipients; its queue id and Message-ID, by message key."""
    queue_ids, message_ids = {}, {}
    for key, recipients in messages.items():
        message = EmailMessage()
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = f"integration {key}"
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = message_ids[key] = make_msgid(idstring=key, domain="app.test")
        message.set_content(f"message {key}\n")
        queue_ids[key] = mta.submit(message, sender, recipients)
    return queue_ids, message_ids


def check_designed_traffic(
    accepted: Sequence[Accepted], design: Design, sender: str, ndrs: int
) -> None:
    """The accepting peer took exactly the designed deliveries and ``ndrs`` notices to ``sender``."""
    delivered = Counter(rcpt for m in accepted if m.mail_from == sender for rcpt in m.rcpt_tos)
    want = Counter(
        r for rcpts in design.messages.values() for r in rcpts if design.outcome(r) == "delivered"
    )
    assert delivered == want
    assert [m.rcpt_tos for m in accepted if m.mail_from == ""] == [(sender,)] * ndrs


# -- the CLI, as a user runs it ------------------------------------------------------------


class Ingested(Protocol):
    """A scenario whose log has been ingested into ``db_url``."""

    @property
    def workdir(self) -> Path: ...

    @property
    def db_url(self) -> str: ...


def mailmon(workdir: Path, *args: str, stdin: bytes | None = None) -> str:
    """Run the installed ``mailmon`` with an empty config and no DNS; return its stdout."""
    executable = Path(sys.executable).with_name("mailmon")
    if not executable.exists():
        pytest.fail(f"{executable} not found: install the project (pip install -e '.[test]')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMON_")}
    env |= {
        "MAILMON_RESOLVE_MX": "0",
        "MAILMON_CONFIG": str(workdir / "mailmon.toml"),
        "MAILMON_DATA_DIR": str(workdir / "data"),
    }
    done = subprocess.run(
        [str(executable), *args],
        cwd=workdir,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        f"mailmon {' '.join(args)} exited {done.returncode}\n"
        f"stdout:\n{done.stdout.decode(errors='replace')}\n"
        f"stderr:\n{done.stderr.decode(errors='replace')}"
    )
    return done.stdout.decode()


def stats(s: Ingested, *flags: str, db_url: str | None = None) -> list[dict[str, Any]]:
    out = mailmon(s.workdir, "stats", "--json", "--db", db_url or s.db_url, *flags)
    rows = json.loads(out)
    assert isinstance(rows, list)
    return rows


def counts(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, int]]:
    """``{group: {count: n}}`` from stats rows, after checking every row has every field."""
    for row in rows:
        missing = {key, *COUNTS, *RATES} - set(row)
        assert not missing, f"stats row lacks {sorted(missing)}: {row}"
    return {row[key]: {c: row[c] for c in COUNTS} for row in rows}


def trace(s: Ingested, query: str) -> dict[str, Any]:
    result = json.loads(mailmon(s.workdir, "trace", query, "--json", "--db", s.db_url))
    assert isinstance(result, dict)
    return result


def check_ndrs_only_when_asked(s: Ingested, ndrs: int) -> None:
    """The MTA's ``ndrs`` null-sender notices count only with ``--include-ndr``, as app.test's."""
    plain = counts(stats(s, "--by", "domain"), "domain")
    assert "app.test" not in plain
    with_ndr = counts(stats(s, "--by", "domain", "--include-ndr"), "domain")
    ndr_row = dict.fromkeys(COUNTS, 0) | {"submitted": ndrs, "delivered": ndrs}
    assert with_ndr == plain | {"app.test": ndr_row}
