"""Probes through a real Postfix: missing probes are explained by Postfix's own log lines.

``mailmon probe run`` submits to a private Postfix (tests/servers/postfix.py), which relays
``seeds.test`` over SMTP to an aiosmtpd relay that hands each message to Dovecot's LMTP,
and ``bounced.test`` to an SMTP peer that refuses it as spam (``550 5.7.1``).  Meanwhile
``mailmon serve`` follows Postfix's maillog into the same store, as in production.  The
seed whose Sieve script discards probes is ``missing`` with "delivered but not found"
(Postfix says ``status=sent``), the bounced one is ``missing`` with Postfix's bounce, the
third is in the inbox: the findings come from real log lines, joined by Message-ID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from servers.dovecot import DovecotInstance, free_port
from servers.lmtp_relay import LmtpRelay
from servers.postfix import PostfixInstance
from servers.prometheus import get, wait
from servers.smtp_sink import Behaviour, SmtpSink
from test_cli import mailmon

pytestmark = pytest.mark.integration

USERS = {"pfinbox": "pw-pf-1", "pfgone": "pw-pf-2", "pfbounce": "pw-pf-3"}
SEEDS = {"pfinbox": "pfinbox@seeds.test", "pfgone": "pfgone@seeds.test",
         "pfbounce": "pfbounce@bounced.test"}  # fmt: skip


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("seedpf")
    with ExitStack() as stack:
        dovecot = stack.enter_context(DovecotInstance(tmp, users=USERS, tls=False))
        dovecot.set_sieve("pfgone", 'if exists "X-Mailmon-Probe" { discard; stop; }\n')
        relay = stack.enter_context(LmtpRelay(dovecot.lmtp_port))
        # bounced.test's MX takes the message, then refuses it as spam after DATA.
        refuser = stack.enter_context(SmtpSink(default=Behaviour.SPAM))
        postfix = PostfixInstance(tmp, free_port(), {
            "seeds.test": f"smtp:[127.0.0.1]:{relay.port}",
            "bounced.test": f"smtp:[127.0.0.1]:{refuser.port}",
        })  # fmt: skip
        stack.callback(postfix.stop)
        postfix.start()
        port = free_port()
        seeds = "".join(
            f'[[seeds.mailboxes]]\naddress = "{address}"\nimap_host = "127.0.0.1"\n'
            f'imap_port = {dovecot.imap_port}\nimap_security = "none"\nusername = "{user}"\n'
            f'password_env = "SEED_PW_{user.upper()}"\n'
            for user, address in SEEDS.items()
        )
        config = tmp / "mailmon.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{tmp / "m.db"}"\n[service]\nlisten_port = {port}\n'
            f'[[logs]]\nkind = "postfix"\npath = "{postfix.log_file}"\npoll_interval_seconds = 0.1\n'
            '[seeds]\nsender = "probe@app.test"\ntimeout_seconds = 8\npoll_interval_seconds = 0.3\n'
            f'[seeds.smtp]\nport = {postfix.port}\nsecurity = "none"\n{seeds}'
            "[jobs.seed_probes]\nenabled = false\n")  # fmt: skip
        env = os.environ | {f"SEED_PW_{u.upper()}": pw for u, pw in USERS.items()}
        serve = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--config",
                                  str(config)], stdout=(tmp / "serve.out").open("w"),
                                 stderr=subprocess.STDOUT, env=env)  # fmt: skip
        stack.callback(serve.wait, 30)
        stack.callback(serve.terminate)
        wait("mailmon serve", lambda: b'"ok"' in get(f"http://127.0.0.1:{port}/healthz"), 30,
             [tmp / "serve.out"])  # fmt: skip
        run = subprocess.run([sys.executable, "-m", "monitor", "probe", "run", "--json", "--config",
                              str(config)], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
        assert run.returncode == 0, run.stderr + postfix.log_tail()
        yield {"run": json.loads(run.stdout), "config": config, "postfix": postfix}


def test_findings_come_from_postfix_log_lines(outcome: dict[str, Any]) -> None:
    """inbox; discarded after Postfix delivered it; bounced by Postfix with 5.7.1."""
    rows = {r["seed"]: r for r in outcome["run"]["placements"]}
    assert {seed: rows[address]["placement"] for seed, address in SEEDS.items()} == {
        "pfinbox": "inbox", "pfgone": "missing", "pfbounce": "missing"}  # fmt: skip
    assert rows[SEEDS["pfgone"]]["finding"] == "delivered but not found"
    bounced = rows[SEEDS["pfbounce"]]["finding"]
    assert bounced.startswith("bounced 550 5.7.1 (spamdetected)")
    assert "message rejected as spam" in bounced


def test_trace_joins_the_probe_and_postfix(outcome: dict[str, Any]) -> None:
    """The probe's timeline holds its submission, Postfix's delivery and its placement."""
    rows = {r["seed"]: r for r in outcome["run"]["placements"]}
    mid = rows[SEEDS["pfinbox"]]["message_id"]
    traced = json.loads(mailmon("trace", mid, "--json", "--config", str(outcome["config"])).stdout)
    [delivery] = traced["deliveries"]
    kinds = [(e["source"].partition(":")[0], e["type"]) for e in delivery["events"]]
    assert ("seeds", "submitted") in kinds and ("postfix", "delivered") in kinds
    assert kinds[-1] == ("seeds", "placed") and delivery["state"] == "delivered"
