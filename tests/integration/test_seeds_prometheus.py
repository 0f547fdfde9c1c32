"""The placement dashboard and MailmonSeedPlacementLow against a real Prometheus that scraped a
``mailmon serve`` whose seed_probes job read real Dovecot mailboxes.

Four seeds on a private Dovecot fed by an aiosmtpd-to-LMTP relay: at Google one lands in
the inbox and two are filed into Junk by Sieve; a Yahoo seed's password is wrong (error).
``serve`` runs the job every 3 seconds; Prometheus (Debian ``prometheus``) scrapes it every
second and evaluates test copies of ``alerts/`` (every group each second).  Then every
panel of ``dashboards/mailmon-placement.json`` must return data, and
MailmonSeedPlacementLow must be active (pending: its ``for:`` is 30 minutes) for google
only: the unreadable Yahoo seed says nothing of placement.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from grafana_boards import load_all
from servers.dovecot import DovecotInstance
from servers.lmtp_relay import LmtpRelay
from servers.prometheus import free_port, get, prometheus_config, query, start, tool, wait

from integration.test_dashboards_promql import _empty_panels

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USERS = {"g1": "pw-g1", "g2": "pw-g2", "g3": "pw-g3", "y1": "pw-y1"}
JUNK = 'require "fileinto";\nif exists "X-Mailmon-Probe" { fileinto "Junk"; stop; }\n'


def _rules(tmp: Path) -> list[str]:
    """TEST COPIES of alerts/: every group evaluated every second (expressions unchanged)."""
    names = []
    for name in ("recording.rules.yml", "mailmon.rules.yml"):
        rules = yaml.safe_load((ROOT / "alerts" / name).read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        (tmp / name).write_text(yaml.safe_dump(rules, sort_keys=False))
        names.append(name)
    return names


def _seed(user: str, port: int, provider: str) -> str:
    return (f'[[seeds.mailboxes]]\naddress = "{user}@seeds.test"\nprovider = "{provider}"\n'
            f'imap_host = "127.0.0.1"\nimap_port = {port}\nimap_security = "none"\n'
            f'username = "{user}"\npassword_env = "SEED_PW_{user.upper()}"\n')  # fmt: skip


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("seedprom")
    ports = {name: free_port() for name in ("mailmon", "prometheus")}
    mm, prom = (f"http://127.0.0.1:{ports[n]}" for n in ("mailmon", "prometheus"))
    logs = [tmp / "mailmon.out", tmp / "prometheus.out"]
    with ExitStack() as stack:
        dovecot = stack.enter_context(DovecotInstance(tmp, users=USERS, tls=False))
        dovecot.set_sieve("g2", JUNK)
        dovecot.set_sieve("g3", JUNK)
        relay = stack.enter_context(LmtpRelay(dovecot.lmtp_port))
        a = dovecot.imap_port
        (tmp / "mailmon.toml").write_text(
            f'[database]\nurl = "sqlite:///{tmp / "mailmon.db"}"\n'
            f'[service]\nlisten_port = {ports["mailmon"]}\n'
            '[seeds]\nsender = "probe@app.test"\ntimeout_seconds = 3\npoll_interval_seconds = 0.2\n'
            f'imap_timeout_seconds = 3\n[seeds.smtp]\nport = {relay.port}\nsecurity = "none"\n'
            + _seed("g1", a, "gmail") + _seed("g2", a, "gmail") + _seed("g3", a, "gmail")
            + _seed("y1", a, "yahoo") + "[jobs.seed_probes]\ninterval_seconds = 3\n")  # fmt: skip
        env = os.environ | {f"SEED_PW_{u.upper()}": pw for u, pw in USERS.items()}
        env |= {"SEED_PW_Y1": "wrong", "MAILMON_RESOLVE_MX": "0", "MAILMON_DATA_DIR": str(tmp)}
        env.pop("MAILMON_DB_URL", None)
        env.pop("MAILMON_CONFIG", None)
        prom_yml = prometheus_config(tmp, _rules(tmp), ports["mailmon"])
        start(stack, [sys.executable, "-m", "monitor", "serve", "--config",
                      str(tmp / "mailmon.toml")], logs[0], env=env)  # fmt: skip
        wait("mailmon /healthz", lambda: b'"ok"' in get(f"{mm}/healthz"), 30, logs)
        start(stack, [tool("prometheus"), f"--config.file={prom_yml}",
                      f"--storage.tsdb.path={tmp / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], logs[1])  # fmt: skip
        # Six Google probes counted by Prometheus (the first scrape of a series is its start).
        wait("Prometheus saw six Google probes grow the counters",
             lambda: query(prom, 'provider:mailmon_seed_probes:rate6h{provider="google"} * 21600 >= 6'
                           ' and on () sum(increase(mailmon_seed_probes_total{placement="error"}[1m])) > 0'),
             120, logs)  # fmt: skip
        yield prom


def test_every_placement_panel_returns_data(prom: str) -> None:
    """Every target of the placement dashboard returns data, with one provider and with All."""
    boards = {n: b for n, b in load_all().items() if n == "mailmon-placement.json"}
    assert boards
    assert _empty_panels(prom, boards) == []


def test_placement_alert_pending_for_google_only(prom: str) -> None:
    """One Google probe in three reaches the inbox: MailmonSeedPlacementLow is active for
    google; Yahoo's probes could not be read (error) and raise nothing."""
    wait("MailmonSeedPlacementLow active",
         lambda: query(prom, 'ALERTS{alertname="MailmonSeedPlacementLow", provider="google"}'),
         30, [])  # fmt: skip
    active = query(prom, 'ALERTS{alertname="MailmonSeedPlacementLow"}')
    assert {r["metric"]["provider"] for r in active} == {"google"}
    [ratio] = query(prom, 'provider:mailmon_seed_inbox_ratio:rate6h{provider="google"}')
    assert 0.2 < float(ratio["value"][1]) < 0.5  # 1 of 3 per run
    assert not query(prom, 'provider:mailmon_seed_inbox_ratio:rate6h{provider="yahoo"}')
