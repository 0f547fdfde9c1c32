"""End to end: Postfix log -> ``mailmon serve`` -> real Prometheus -> real Alertmanager -> webhook.

Issue 5, "End-to-end test with the real components".  ``mailmon serve`` follows a Postfix
log (BSD syslog) in a temp dir; a private Prometheus (Debian ``prometheus``) scrapes it
every second and evaluates the rule files of ``alerts/``; a private Alertmanager (Debian
``prometheus-alertmanager``) with a config derived from ``alerts/alertmanager.yml`` posts
to a webhook receiver in this process.  Everything listens on free loopback ports and is
stopped in teardown, pass or fail.

The rollup engine works in *event* time (it evaluates at the start of the newest counter
minute over the 5 minutes before it), so the traffic is written with timestamps relative
to the current minute ``M``: normal traffic 12-7 minutes before, then gmail.test deferring
us with ``421 4.7.28 ... unusual rate of unsolicited mail`` in the 5 minutes before ``M``
while outlook.test stays fine, then one line at ``M`` that moves the newest minute on.
For the recovery, gmail.test accepts everything in the minutes after ``M`` and a last line
at ``M + 5 min`` moves the short window entirely past the rejections.

Meanwhile badly signed SendGrid webhooks are posted to ``POST /webhooks/sendgrid`` (the
service has a real key configured): they are refused, counted in
``mailmon_events_rejected_total{reason="bad_signature"}``, and that real metric makes
``MailmonWebhookAuthFailures`` reach the chat receiver.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from servers.prometheus import free_port as _free_port
from servers.prometheus import get as _get
from servers.prometheus import prometheus_config
from servers.prometheus import start as _start
from servers.prometheus import tool as _tool
from servers.prometheus import wait as _wait

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"
ALERT = "MailmonDomainRejecting"
BAD, GOOD = "gmail.test", "outlook.test"
FOR = "5s"  # the test copy's `for:` of MailmonDomainRejecting (alerts/: 3m)
AUTH_ALERT = "MailmonWebhookAuthFailures"
AUTH_FOR = "2s"  # the test copy's `for:` of MailmonWebhookAuthFailures (alerts/: 10m)

RELAYS = {
    BAD: "gmail-smtp-in.l.google.com[142.250.1.26]:25",
    GOOD: "outlook-com.olc.protection.outlook.com[52.101.1.2]:25",
}
GMAIL_421 = (
    "host gmail-smtp-in.l.google.com[142.250.1.26] said: 421-4.7.28 [192.0.2.10      15] "
    "Our system has detected an unusual rate of unsolicited mail originating from your IP "
    "address. To protect our users from spam, mail sent from your IP address has been "
    "temporarily rate limited. Please visit "
    "https://support.google.com/mail/?p=UnsolicitedRateLimitError to review our Bulk Email "
    "Senders Guidelines. a1si123 - gsmtp (in reply to end of DATA command)"
)


# ---------------------------------------------------------------------------- helpers


class Webhook:
    """An Alertmanager webhook receiver on 127.0.0.1 in a thread; keeps every POST body."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        lock = self.lock = threading.Lock()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """(receiver, alert) for every alert named ``name`` posted so far."""
        with self.lock:
            return [
                (post["receiver"], alert)
                for post in self.posts
                for alert in post["alerts"]
                if alert["labels"].get("alertname") == name
            ]


# ---------------------------------------------------------------------------- Postfix lines


def _bsd(t: float) -> str:
    d = datetime.fromtimestamp(t, UTC)
    return f"{d:%b} {d.day:2d} {d:%H:%M:%S}"


_QUEUE_IDS = itertools.count(0x3A1000000)


def _message(t: float, rcpt: str, *, rejected: bool = False) -> str:
    """One message to ``rcpt`` at ``t``: qmgr from=..., then smtp sent or deferred (4.7.28)."""
    qid = f"{next(_QUEUE_IDS):010X}"
    domain = rcpt.rpartition("@")[2]
    stamp = _bsd(t)
    head = (
        f"{stamp} mx1 postfix/qmgr[1102]: {qid}: from=<news@app.example>, size=4211, "
        "nrcpt=1 (queue active)\n"
        f"{stamp} mx1 postfix/smtp[1203]: {qid}: to=<{rcpt}>, relay={RELAYS[domain]}, "
        "delay=0.62, delays=0.05/0.01/0.21/0.35, "
    )
    if rejected:
        return head + f"dsn=4.7.28, status=deferred ({GMAIL_421})\n"
    return (
        head + f"dsn=2.0.0, status=sent (250 2.0.0 OK  {int(t)} q{qid.lower()} - gsmtp)\n"
        f"{stamp} mx1 postfix/qmgr[1102]: {qid}: removed\n"
    )


def _spread(start: float, end: float, n: int) -> list[float]:
    """``n`` whole-second times evenly in [start, end)."""
    return [float(int(start + i * (end - start) / n)) for i in range(n)]


def _append(log: Path, lines: list[tuple[float, str]]) -> None:
    with log.open("a") as f:
        f.writelines(line for _, line in sorted(lines, key=lambda tl: tl[0]))


# ---------------------------------------------------------------------------- configs


def _prometheus_config(tmp: Path, mailmon: int, alertmanager: int) -> Path:
    shutil.copy(ALERTS / "recording.rules.yml", tmp / "recording.rules.yml")
    rules = yaml.safe_load((ALERTS / "mailmon.rules.yml").read_text())
    found = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in (ALERT, AUTH_ALERT):
                # TEST COPY: only the timing of MailmonDomainRejecting and
                # MailmonWebhookAuthFailures differs from alerts/: `for: 3m` -> 5s, `for: 10m`
                # -> 2s, and their groups' `interval: 1m` -> 1s (with 1m, Prometheus would
                # evaluate them once a minute and `for:` alone would not make them fast).
                # Expressions, labels and annotations are the real ones.
                rule["for"] = FOR if rule["alert"] == ALERT else AUTH_FOR
                group["interval"] = "1s"
                found.append(rule["alert"])
    assert sorted(found) == sorted([ALERT, AUTH_ALERT]), f"in alerts/mailmon.rules.yml: {found}"
    (tmp / "mailmon.rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    return prometheus_config(tmp, ["recording.rules.yml", "mailmon.rules.yml"], mailmon, alertmanager)


def _alertmanager_config(tmp: Path, hook: str) -> Path:
    """alerts/alertmanager.yml with short timers and every receiver posting to ``hook``."""
    config = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    timers = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "10m"}

    def shorten(route: dict[str, Any]) -> None:
        for key in timers:
            if key in route:
                route[key] = timers[key]
        for child in route.get("routes", []):
            shorten(child)

    config["route"].update(timers)
    shorten(config["route"])
    config["receivers"] = [
        {
            "name": receiver["name"],
            "webhook_configs": [{"url": f"{hook}/{receiver['name']}", "send_resolved": True}],
        }
        for receiver in config["receivers"]
    ]
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- webhooks


def _sendgrid_key(tmp: Path) -> Path:
    """The public half of a fresh SendGrid signing key, as ``secret_file``."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp / "sendgrid.key"
    path.write_text(base64.b64encode(public).decode() + "\n")
    return path


def _post_forged(base: str, n: int) -> None:
    """``n`` SendGrid batches signed with another key than the configured one: each is 403."""
    other = ec.generate_private_key(ec.SECP256R1())
    for i in range(n):
        stamp = str(int(time.time()))
        body = json.dumps([{"event": "delivered", "email": f"r{i}@example.org",
                            "timestamp": int(stamp), "sg_event_id": f"forged{i}"}]).encode()
        signature = other.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        request = urllib.request.Request(f"{base}/webhooks/sendgrid", data=body, method="POST", headers={
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp, "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403, refused.value.code


# ---------------------------------------------------------------------------- the test


def _gauges(base: str) -> dict[str, dict[str, str]]:
    """domain -> labels of mailmon_domain_rejecting, with the sample value under 'value'."""
    out = {}
    for line in _get(f"{base}/metrics").decode().splitlines():
        if line.startswith("mailmon_domain_rejecting{"):
            labels, value = line[len("mailmon_domain_rejecting{") :].rsplit("} ", 1)
            pairs = dict(p.split("=", 1) for p in labels.split(","))
            entry = {k: v.strip('"') for k, v in pairs.items()}
            out[entry["domain"]] = entry | {"value": value}
    return out


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def test_domain_rejecting_pages_and_resolves(tmp_path: Path, stack: ExitStack) -> None:
    """gmail.test starts answering 421 4.7.28: the pager receiver gets MailmonDomainRejecting
    for it (labels, annotations), nothing for outlook.test, and the resolution after recovery."""
    prometheus, alertmanager = _tool("prometheus"), _tool("prometheus-alertmanager")
    promtool, amtool = _tool("promtool"), _tool("amtool")
    ports = {name: _free_port() for name in ("mailmon", "prometheus", "alertmanager")}
    mm, prom, am = (
        f"http://127.0.0.1:{ports[n]}" for n in ("mailmon", "prometheus", "alertmanager")
    )
    logs = [tmp_path / n for n in ("mailmon.out", "prometheus.out", "alertmanager.out")]

    hook = Webhook()
    stack.callback(hook.close)

    # --- configs
    maillog = tmp_path / "mail.log"
    maillog.touch()
    mailmon_toml = tmp_path / "mailmon.toml"
    mailmon_toml.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "mailmon.db"}"\n'
        f'[service]\nlisten_host = "127.0.0.1"\nlisten_port = {ports["mailmon"]}\n'
        f'[[logs]]\nkind = "postfix"\npath = "{maillog}"\npoll_interval_seconds = 0.1\n'
        f'[metrics]\ndomains = ["{BAD}", "{GOOD}"]\n'
        "[rollup]\ninterval_seconds = 1\n"  # the smallest the config allows
        f'[webhooks.sendgrid]\nsecret_file = "{_sendgrid_key(tmp_path)}"\n'
    )
    prom_yml = _prometheus_config(tmp_path, ports["mailmon"], ports["alertmanager"])
    am_yml = _alertmanager_config(tmp_path, hook.url)
    for check in ([promtool, "check", "config", str(prom_yml)],
                  [amtool, "check-config", str(am_yml)]):  # fmt: skip
        result = subprocess.run(check, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{check}\n{result.stdout}{result.stderr}"

    # --- start everything (teardown stops it in reverse order, also on failure)
    env = os.environ | {"MAILMON_RESOLVE_MX": "0", "MAILMON_DATA_DIR": str(tmp_path)}
    env.pop("MAILMON_DB_URL", None)
    env.pop("MAILMON_CONFIG", None)
    _start(stack, [sys.executable, "-m", "monitor", "serve", "--config", str(mailmon_toml)],
           logs[0], env=env)  # fmt: skip
    _start(stack, [alertmanager, f"--config.file={am_yml}", f"--storage.path={tmp_path / 'am'}",
                   f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                   "--cluster.listen-address="], logs[2])  # fmt: skip
    _start(stack, [prometheus, f"--config.file={prom_yml}",
                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                   f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], logs[1])  # fmt: skip

    def query(expr: str) -> list[dict[str, Any]]:
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return list(json.loads(_get(url))["data"]["result"])

    _wait("mailmon /healthz", lambda: b'"ok"' in _get(f"{mm}/healthz"), 30, logs)
    _wait("Alertmanager /-/ready", lambda: _get(f"{am}/-/ready") is not None, 30, logs)

    # --- forged webhooks: one, so that Prometheus has the series from a low value, then more
    _post_forged(mm, 1)
    rejected = 'mailmon_events_rejected_total{source="sendgrid",reason="bad_signature"}'
    _wait(f"Prometheus scraped {rejected}", lambda: query(rejected), 30, logs)
    _post_forged(mm, 15)

    # --- traffic through the followed Postfix log, in event time
    started = time.monotonic()
    minute = time.time() // 60 * 60  # M: the rollup will evaluate here
    lines: list[tuple[float, str]] = []
    for domain in (BAD, GOOD):  # normal: 40 each, 12-7 minutes before M
        for i, t in enumerate(_spread(minute - 720, minute - 420, 40)):
            lines.append((t, _message(t, f"user{i}@{domain}")))
    for i, t in enumerate(_spread(minute - 300, minute - 5, 36)):  # the 5 minutes before M
        lines.append((t, _message(t, f"user{i}@{BAD}", rejected=True)))
    for i, t in enumerate(_spread(minute - 300, minute - 5, 36)):
        lines.append((t, _message(t, f"user{i}@{GOOD}")))
    lines.append((minute, _message(minute, f"now@{GOOD}")))  # the newest minute moves to M
    _append(maillog, lines)

    # mailmon's own gauge first (a failure here is mailmon's, not Prometheus')
    gauges = _wait(
        f"mailmon_domain_rejecting{{domain={BAD!r}}} == 1 on /metrics",
        lambda: (g := _gauges(mm)).get(BAD, {}).get("value") == "1.0" and g,
        30,
        logs,
    )
    provider = gauges[BAD]["provider"]  # .test is in no provider map: expect "other"
    assert gauges[GOOD]["value"] == "0.0", gauges

    # Prometheus must see both series, and Alertmanager (the first scrape takes ~6 s)
    _wait("Prometheus scraped the rejecting gauges",
          lambda: len(query("mailmon_domain_rejecting")) >= 2, 30, logs)  # fmt: skip
    _wait("Prometheus knows the Alertmanager",
          lambda: json.loads(_get(f"{prom}/api/v1/alertmanagers"))["data"]["activeAlertmanagers"],
          30, logs)  # fmt: skip

    firing = _wait(
        f"webhook got a firing {ALERT} for {BAD}",
        lambda: [
            (receiver, a) for receiver, a in hook.alerts(ALERT)
            if a["status"] == "firing" and a["labels"].get("domain") == BAD
        ],
        60,
        logs,
    )  # fmt: skip
    fired_after = time.monotonic() - started
    receiver, alert = firing[0]
    assert receiver == "pager", receiver  # severity=critical routes to the pager
    assert alert["labels"] == {
        "alertname": ALERT, "domain": BAD, "provider": provider, "severity": "critical"
    }  # fmt: skip
    annotations = alert["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}, annotations
    assert annotations["summary"] == f"{BAD} ({provider}) is rejecting our mail"
    assert BAD in annotations["description"]
    assert annotations["runbook_url"].endswith("/docs/runbook.md#mailmondomainrejecting")
    # outlook.test: its gauge is scraped (0) and it never became an alert, not even pending
    assert query(f'mailmon_domain_rejecting{{domain="{GOOD}"}} == 0'), "outlook.test not scraped"
    assert not query(f'ALERTS{{alertname="{ALERT}",domain="{GOOD}"}}')
    assert not [a for _, a in hook.alerts(ALERT) if a["labels"].get("domain") != BAD]

    # the forged webhooks, from the real counter: a warning for sendgrid, to the chat receiver
    receiver, alert = _wait(
        f"webhook got a firing {AUTH_ALERT} for sendgrid",
        lambda: [(r, a) for r, a in hook.alerts(AUTH_ALERT) if a["status"] == "firing"],
        60,
        logs,
    )[0]
    assert receiver == "chat", receiver
    assert alert["labels"] == {"alertname": AUTH_ALERT, "severity": "warning", "source": "sendgrid"}
    assert alert["annotations"]["summary"].endswith(
        "sendgrid webhook calls failed authentication in 15 minutes"), alert["annotations"]

    # --- recovery: gmail.test accepts again after M; the last line, at M + 5 min, moves the
    # short window (the 5 minutes before the newest minute) past every rejection.
    recovered = time.monotonic()
    lines = []
    for i, t in enumerate(_spread(minute + 1, minute + 290, 60)):
        lines.append((t, _message(t, f"back{i}@{BAD}")))
    for i, t in enumerate(_spread(minute + 1, minute + 290, 20)):
        lines.append((t, _message(t, f"back{i}@{GOOD}")))
    lines.append((minute + 300, _message(minute + 300, f"later@{GOOD}")))
    _append(maillog, lines)

    resolved = _wait(
        f"webhook got the resolved {ALERT} for {BAD}",
        lambda: [
            (receiver, a) for receiver, a in hook.alerts(ALERT)
            if a["status"] == "resolved" and a["labels"].get("domain") == BAD
        ],
        60,
        logs,
    )  # fmt: skip
    receiver, alert = resolved[0]
    assert receiver == "pager"
    assert alert["labels"]["domain"] == BAD and alert["endsAt"] > alert["startsAt"]
    assert _gauges(mm)[BAD]["value"] == "0.0"
    assert not [a for _, a in hook.alerts(ALERT) if a["labels"].get("domain") != BAD]
    print(f"provider={provider!r}: fired {fired_after:.1f} s after the traffic, resolved "
          f"{time.monotonic() - recovered:.1f} s after the recovery")  # fmt: skip
