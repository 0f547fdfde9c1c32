"""``[providers] rules_file`` names providers wherever a verdict depends on one.

Two places name a provider outside the resolver: a report's sender (its ``From`` domain,
for a plain-text bounce) and a remote MTA (a DSN's ``Remote-MTA``, ``classify --mx``).
A rules file that maps ``corp-mail.test`` to GMX makes GMX's own rules decide there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.classify import classify
from monitor.collectors.mail.dsn import parse
from monitor.provider_rules import ProviderRules

MAILMON = [sys.executable, "-m", "monitor"]
RULES = '[providers.gmx]\ndomains = ["corp-mail.test"]\nmx_suffixes = ["corp-mail.test"]\n'
REPLY = "554 transaction failed: sender address has no valid reputation"  # GMX's text

# A plain-text bounce written by the provider's own mail system: its From names it.
TEXT_BOUNCE = f"""\
From: Mail Delivery System <MAILER-DAEMON@corp-mail.test>
To: sender@app.example
Subject: Mail delivery failed: returning message to sender
Date: Tue, 03 Mar 2026 10:00:00 +0000
Message-ID: <bounce-1@corp-mail.test>

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  alice@corp-mail.test
    {REPLY}

------ This is a copy of the message, including all the headers. ------

From: sender@app.example
To: alice@corp-mail.test
Subject: hello
Message-ID: <orig-1@app.example>

hello
"""

# An RFC 3464 DSN from our own relay: the Remote-MTA names the provider.
DSN = f"""\
From: MAILER-DAEMON@relay.app.example
To: sender@app.example
Subject: Undelivered Mail Returned to Sender
Date: Tue, 03 Mar 2026 10:00:00 +0000
Message-ID: <bounce-2@relay.app.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.app.example

Final-Recipient: rfc822; bob@customer.example
Action: failed
Status: 5.0.0
Remote-MTA: dns; mx1.corp-mail.test
Diagnostic-Code: smtp; {REPLY}

--B
Content-Type: text/rfc822-headers

From: sender@app.example
To: bob@customer.example
Message-ID: <orig-2@app.example>

--B--
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    rules = tmp_path / "providers.toml"
    rules.write_text(RULES)
    path = tmp_path / "mailmon.toml"
    path.write_text(f'[providers]\nresolve_mx = false\nrules_file = "{rules}"\n')
    return path


def _mailmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAILMON, *args], capture_output=True, text=True, check=True)


def test_parse_names_sender_and_remote_mta_by_the_given_rules() -> None:
    """Given rules name a plain-text bounce's sender and a DSN's Remote-MTA; packaged do not."""
    custom = ProviderRules.load().extended(ProviderRules.from_toml(RULES))
    for email in (TEXT_BOUNCE, DSN):
        assert parse(email.encode()).recipients[0].rule != "gmx.bad_reputation"
        assert parse(email.encode(), provider_rules=custom).recipients[0].rule == (
            "gmx.bad_reputation"
        )


def test_classify_names_the_mx_host_by_the_given_rules() -> None:
    """``mx_host`` selects the provider the given rules name, and the cache keeps them apart."""
    custom = ProviderRules.load().extended(ProviderRules.from_toml(RULES))
    host = "mx1.corp-mail.test"
    assert classify(None, None, REPLY, mx_host=host).rule == "rfc5321.554"
    assert classify(None, None, REPLY, mx_host=host, provider_rules=custom).rule == (
        "gmx.bad_reputation"
    )


def test_cli_classify_honours_rules_file(tmp_path: Path, config: Path) -> None:
    """`mailmon classify FILE` and `--response --mx` use the config's rules file."""
    files = [tmp_path / "text.eml", tmp_path / "dsn.eml"]
    for path, email in zip(files, (TEXT_BOUNCE, DSN), strict=True):
        path.write_text(email)
    out = _mailmon("--config", str(config), "classify", *map(str, files), "--json")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["recipient"], r["rule"]) for r in rows] == [
        ("alice@corp-mail.test", "gmx.bad_reputation"),
        ("bob@customer.example", "gmx.bad_reputation"),
    ]
    reply = ["classify", "--response", REPLY, "--mx", "mx1.corp-mail.test", "--json"]
    assert json.loads(_mailmon("--config", str(config), *reply).stdout)["rule"] == (
        "gmx.bad_reputation"
    )
    assert json.loads(_mailmon(*reply).stdout)["rule"] == "rfc5321.554"


def test_cli_ingest_honours_rules_file(tmp_path: Path, config: Path) -> None:
    """`mailmon ingest eml` stores the verdicts the config's rules file leads to."""
    files = [tmp_path / "text.eml", tmp_path / "dsn.eml"]
    for path, email in zip(files, (TEXT_BOUNCE, DSN), strict=True):
        path.write_text(email)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    _mailmon("--config", str(config), "ingest", "eml", *map(str, files), "--db", db, "--json")
    for original, recipient in (
        ("orig-1", "alice@corp-mail.test"),
        ("orig-2", "bob@customer.example"),
    ):
        trace = json.loads(
            _mailmon("trace", f"<{original}@app.example>", "--json", "--db", db).stdout
        )
        found = {d["recipient"]: (d["state"], d["reason"]) for d in trace["deliveries"]}
        assert found[recipient] == ("bounced", "badreputation")
