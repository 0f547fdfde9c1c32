"""Every dashboard query, run against a real Prometheus that scraped a real ``mailmon serve``.

``mailmon serve`` follows a Postfix log (BSD syslog) and takes KumoMTA log-hook records
(complaints arrive as ``Feedback`` records) on ``POST /ingest/kumomta``; a private
Prometheus (Debian ``prometheus``) scrapes it every second and evaluates
``alerts/recording.rules.yml`` every second (the test copy's only change).  Traffic comes
in two rounds so that every counter has grown between two scrapes and every ``rate()`` is
above zero.  The rollup engine judges the same traffic in event time: Postfix lines three
minutes ago, each round's complaints in a later minute (the engine evaluates at the start
of the newest minute, so round 2's complaints bring round 1's into its windows), and one
gmail.com delivery deferred since five hours ago, which opens a queue-age incident, and
yandex.ru mail at this hour on the six days before and none since, which opens a
provider-silent one (the test config lowers ``queue_min_stuck`` and
``silent_min_expected`` to 1), and KumoMTA deliveries and bounces from two egress
addresses, one of which Microsoft refuses often enough to open a sending-IP incident
(default minimum volumes).  Then each dashboard's template variables
are resolved with the ``label_values()`` queries Grafana would run, and every panel target
is run with them substituted, once with the first value of each variable and once with
"All": each must parse and return data.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_boards import label_values, load_all, query_panels, substitute, variables
from servers.prometheus import free_port, get, prometheus_config, query, start, tool, wait

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOMAINS = ("gmail.com", "outlook.com", "yahoo.com")
RELAYS = {
    "gmail.com": "gmail-smtp-in.l.google.com[142.250.1.26]:25",
    "outlook.com": "outlook-com.olc.protection.outlook.com[52.101.1.2]:25",
    "yahoo.com": "mta5.am0.yahoodns.net[67.195.228.106]:25",
    "yandex.ru": "mx.yandex.ru[77.88.21.249]:25",  # the provider that goes silent
}
DEFERRED = (
    "dsn=4.7.28, status=deferred (host {host} said: 421 4.7.28 Our system has detected an "
    "unusual rate of unsolicited mail originating from your IP address. "
    "(in reply to end of DATA command))"
)
BOUNCED = {  # two reasons with different blames per domain
    "userunknown": "dsn=5.1.1, status=bounced (host {host} said: 550 5.1.1 <{rcpt}>: "
    "Recipient address rejected: User unknown in virtual mailbox table "
    "(in reply to RCPT TO command))",
    "spamdetected": "dsn=5.7.1, status=bounced (host {host} said: 554 5.7.1 Message rejected "
    "as spam by Content Filtering. (in reply to end of DATA command))",
}
# KumoMTA egress sources: 203.0.113.7 is listed and Microsoft refuses it, 203.0.113.8 gets
# through.  The refusals are spread over three Microsoft domains, each below [rollup]
# min_attempts (20) after both rounds, while the IP's 24 pass it: an IP incident its
# domains do not have (the runbook's case).
BLOCKED_IP, GOOD_IP = "203.0.113.7", "203.0.113.8"
LISTED = "Service unavailable, Client host [203.0.113.7] blocked using Spamhaus"
MICROSOFT_DOMAINS = ("hotmail.com", "live.com", "msn.com")
_QUEUE_IDS = itertools.count(0x4B1000000)
TRANSMIT = 42  # seconds from an attempt's start (qmgr) to its result (smtp)


def _bsd(t: float) -> str:
    d = datetime.fromtimestamp(t, UTC)
    return f"{d:%b} {d.day:2d} {d:%H:%M:%S}"


def _postfix(
    t: float, rcpt: str, outcome: str, *, qid: str | None = None, arrived: float | None = None
) -> list[tuple[float, str]]:
    """One delivery attempt to ``rcpt`` as (event time, line): qmgr from=... when the attempt
    starts (TRANSMIT seconds before ``t``), the smtp line for ``outcome`` at ``t``.

    ``qid`` and ``arrived`` make it a retry of an earlier attempt: Postfix's delay= counts
    from the message's arrival, the rollup engine's latency from its first qmgr line.
    """
    qid = qid or f"{next(_QUEUE_IDS):010X}"
    start = t - TRANSMIT
    delay = t - (start if arrived is None else arrived)
    relay = RELAYS[rcpt.rpartition("@")[2]]
    host = relay.rsplit(":", 1)[0].replace("[", " [")
    smtp = (
        f"{_bsd(t)} mx1 postfix/smtp[1203]: {qid}: to=<{rcpt}>, relay={relay}, "
        f"delay={delay:g}, delays={delay - TRANSMIT + 0.05:g}/0.01/0.21/{TRANSMIT - 0.27:g}, "
    )
    if outcome == "sent":
        smtp += f"dsn=2.0.0, status=sent (250 2.0.0 OK {int(t)} q{qid.lower()})\n"
    elif outcome == "deferred":
        smtp += DEFERRED.format(host=host) + "\n"
    else:
        smtp += BOUNCED[outcome].format(host=host, rcpt=rcpt) + "\n"
    lines = [
        (start, f"{_bsd(start)} mx1 postfix/qmgr[1102]: {qid}: from=<news@app.example>, "
                "size=4211, nrcpt=1 (queue active)\n"),
        (t, smtp),
    ]  # fmt: skip
    if outcome != "deferred":
        lines.append((t, f"{_bsd(t)} mx1 postfix/qmgr[1102]: {qid}: removed\n"))
    return lines


def _stuck(t: float) -> list[tuple[float, str]]:
    """A gmail.com message first deferred five hours before ``t`` and deferred again at
    ``t``: older than ``[rollup] queue_max_age_seconds`` (4 h), so it counts as stuck."""
    first = t - 5 * 3600
    qid = f"{next(_QUEUE_IDS):010X}"
    return [
        *_postfix(first, "stuck@gmail.com", "deferred", qid=qid),
        *_postfix(t, "stuck@gmail.com", "deferred", qid=qid, arrived=first - TRANSMIT),
    ]


def _silent(at: float) -> list[tuple[float, str]]:
    """A yandex.ru delivery in the hour before ``at``'s hour on each of the six days before
    (the provider-silent detector's baseline) and none in the last hour: yandex went silent."""
    hour = at // 3600 * 3600 - 3600
    return [
        line
        for day in range(1, 7)
        for line in _postfix(hour - day * 86400 + 1800, f"h{day}@yandex.ru", "sent")
    ]


def _kumomta(n: int, t: int, kind: str, ip: str, rcpt: str) -> dict[str, Any]:
    """One KumoMTA Delivery or Bounce log record sent from egress address ``ip``."""
    domain = rcpt.rpartition("@")[2]
    ok = kind == "Delivery"
    code, text = (250, "OK") if ok else (550, LISTED)
    return {
        "type": kind, "id": f"kumo-{n}-{ip}-{rcpt}", "timestamp": t, "created": t - 5,
        "sender": "news@app.example", "recipient": rcpt, "queue": domain, "num_attempts": 1,
        "headers": {"Message-ID": f"<kumo-{n}-{rcpt}@app.example>"},
        "source_address": {"address": f"{ip}:0", "name": "mx1"},
        "peer_address": {"name": f"{domain.replace('.', '-')}.mail.protection.example.",
                         "addr": "192.0.2.25"},
        "response": {"code": code, "enhanced_code": {"class": 2 if ok else 5, "subject": 0 if ok else 7,
                                                      "detail": 0 if ok else 1},
                     "content": text, "command": "."},
    }  # fmt: skip


def _egress(n: int, minute: float) -> list[dict[str, Any]]:
    """Round ``n``'s KumoMTA traffic, after the Postfix lines and before the complaints:
    per IP 12 attempts at Microsoft and 3 deliveries at Gmail (so the first provider that
    $provider lists has sending IPs too)."""
    records = []
    for k in range(12):
        t = int(minute) + 45 + k // 2  # inside the minute of the Postfix lines
        ms = MICROSOFT_DOMAINS[k % len(MICROSOFT_DOMAINS)]
        records.append(_kumomta(n, t, "Bounce", BLOCKED_IP, f"r{n}-k{k}@{ms}"))
        records.append(_kumomta(n, t, "Delivery", GOOD_IP, f"r{n}-k{k}@outlook.com"))
    for k in range(3):
        for ip in (BLOCKED_IP, GOOD_IP):
            rcpt = f"r{n}-{ip}-{k}@gmail.com"
            records.append(_kumomta(n, int(minute) + 50 + k, "Delivery", ip, rcpt))
    return records


def _post(mailmon: str, lines: list[str]) -> None:
    request = urllib.request.Request(
        f"{mailmon}/ingest/kumomta", data="\n".join(lines).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _round(log: Path, mailmon: str, n: int, minute: float, logs: list[Path]) -> None:
    """One round of traffic: Postfix lines to every domain in the event-time ``minute`` (the
    first round: also the stuck delivery and yandex's past), then KumoMTA deliveries and
    bounces from two sending IPs in the same minute, a complaint per domain ``n`` minutes
    later and one bad record through the KumoMTA hook.

    The hook's events are newer, so they come second: the rollup engine evaluates when the
    newest event time moves on (to the start of its minute), and must find the Postfix
    attempts stored by then.
    """
    # The engine's last evaluation is at minute + 2 min, when round 2's complaints arrive.
    timed = [*_stuck(minute + 40), *_silent(minute + 120)] if n == 1 else []
    for i, domain in enumerate(DOMAINS):
        for j, outcome in enumerate(["sent"] * 8 + ["deferred", "userunknown", "spamdetected"]):
            t = minute + 10 * i + j  # event time: inside the rollup's short window
            timed += _postfix(t, f"r{n}-{j}@{domain}", outcome)
    lines = [line for _t, line in sorted(timed, key=lambda tl: tl[0])]  # a log is in time order
    lines.append("this line is no syslog line\n")  # counted as unparsed
    with log.open("a") as f:
        f.writelines(lines)
    total = log.read_text().count("\n")
    wait(f"mailmon read the {total} log lines of round {n}",
         lambda: f'mailmon_source_lines_total{{source="postfix"}} {total}.0'.encode()
         in get(f"{mailmon}/metrics"), 30, logs)  # fmt: skip
    records = [
        {
            "type": "Feedback", "id": f"fbl-{n}-{domain}", "timestamp": int(minute) + 60 * n + 10,
            "sender": "news@app.example", "recipient": "fbl@app.example",
            "headers": {"Message-ID": f"<r{n}@app.example>"},
            "feedback_report": {"feedback_type": "abuse",
                                "original_rcpto_to": [f"<r{n}-0@{domain}>"]},
            "response": {"code": 250, "content": "", "command": "."},
        }
        for domain in DOMAINS
    ]
    # Deliveries and bounces in their own request, stored before the newer complaints move
    # the engine's evaluation on.
    _post(mailmon, [json.dumps(r) for r in _egress(n, minute)])
    _post(mailmon, [*map(json.dumps, records), '{"type": "NoSuchRecord"}'])


def _run(prom: str, target: dict[str, Any], expr: str) -> list[dict[str, Any]]:
    """Run ``expr`` as Grafana would (instant or range over the last minute); 400 -> fail."""
    now = time.time()
    if target.get("instant"):
        params = {"query": expr, "time": f"{now:.3f}"}
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode(params)
    else:
        params = {"query": expr, "start": f"{now - 60:.3f}", "end": f"{now:.3f}", "step": "5"}
        url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(params)
    try:
        body = json.loads(get(url))
    except urllib.error.HTTPError as exc:
        pytest.fail(f"Prometheus refused {expr!r}: {exc.read().decode(errors='replace')}")
    return list(body["data"]["result"])


def _has_number(result: list[dict[str, Any]]) -> bool:
    values = [v for s in result for v in ([s["value"]] if "value" in s else s["values"])]
    return any(not math.isnan(float(v[1])) for v in values)


def _selection(prom: str, board: dict[str, Any], all_values: bool) -> dict[str, str]:
    """Each query variable's value as Grafana would set it: its label_values() are listed
    (under the values chosen for the variables before it), then the first one or "All"."""
    chosen: dict[str, str] = {}
    for v in variables(board):
        if v["type"] != "query":
            continue
        selector, label = label_values(v["definition"])
        match = substitute(selector or "", chosen)
        url = f"{prom}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": match})
        values = sorted(json.loads(get(url))["data"])
        assert values, f"{board['uid']}: variable {v['name']} ({match}) has no values"
        chosen[v["name"]] = v["allValue"] if all_values else values[0]
    return chosen


def _empty_panels(prom: str, boards: dict[str, dict[str, Any]]) -> list[str]:
    """Every (dashboard, panel, target, selection) whose query returns no number."""
    empty = []
    for name, board in boards.items():
        for all_values in (False, True):
            selection = _selection(prom, board, all_values)
            for p in query_panels(board):
                for t in p["targets"]:
                    expr = substitute(t["expr"], selection)
                    if not _has_number(_run(prom, t, expr)):
                        empty.append(f"{name} / {p['title']} / {t['refId']} {selection}: {expr}")
    return empty


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def test_every_panel_query_returns_data(tmp_path: Path, stack: ExitStack) -> None:
    """Every target of every dashboard parses and returns data from a Prometheus scraping a
    mailmon that followed real Postfix log lines and took KumoMTA complaints."""
    prometheus, promtool = tool("prometheus"), tool("promtool")
    ports = {name: free_port() for name in ("mailmon", "prometheus")}
    mm, prom = (f"http://127.0.0.1:{ports[n]}" for n in ("mailmon", "prometheus"))
    logs = [tmp_path / "mailmon.out", tmp_path / "prometheus.out"]

    maillog = tmp_path / "mail.log"
    maillog.touch()
    (tmp_path / "mailmon.toml").write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "mailmon.db"}"\n'
        f'[service]\nlisten_host = "127.0.0.1"\nlisten_port = {ports["mailmon"]}\n'
        f'[[logs]]\nkind = "postfix"\npath = "{maillog}"\npoll_interval_seconds = 0.1\n'
        f"[metrics]\ndomains = {json.dumps(list(DOMAINS))}\n"
        # One stuck delivery opens a queue-age incident, one delivery a day makes a provider's
        # silence an incident (defaults: 20 each), so a short test shows both.
        "[rollup]\ninterval_seconds = 1\nqueue_min_stuck = 1\nsilent_min_expected = 1\n"
    )
    # TEST COPY of the recording rules: evaluated every second instead of every minute.
    rules = yaml.safe_load((ROOT / "alerts" / "recording.rules.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    (tmp_path / "recording.rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    prom_yml = prometheus_config(tmp_path, ["recording.rules.yml"], ports["mailmon"])
    check = subprocess.run([promtool, "check", "config", str(prom_yml)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    env = os.environ | {"MAILMON_RESOLVE_MX": "0", "MAILMON_DATA_DIR": str(tmp_path)}
    env.pop("MAILMON_DB_URL", None)
    env.pop("MAILMON_CONFIG", None)
    start(stack, [sys.executable, "-m", "monitor", "serve", "--config",
                  str(tmp_path / "mailmon.toml")], logs[0], env=env)  # fmt: skip
    start(stack, [prometheus, f"--config.file={prom_yml}",
                  f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], logs[1])  # fmt: skip
    wait("mailmon /healthz", lambda: b'"ok"' in get(f"{mm}/healthz"), 30, logs)

    # Round 1 creates the series; once Prometheus has scraped them, round 2 makes them grow.
    # Postfix traffic three minutes ago: round 2's complaints (minute + 2 min) are still past.
    minute = time.time() // 60 * 60 - 180
    _round(maillog, mm, 1, minute, logs)
    wait("mailmon counted round 1",
         lambda: b'mailmon_complaints_total{domain="yahoo.com"' in get(f"{mm}/metrics")
         and b'outcome="bounced"' in get(f"{mm}/metrics"), 30, logs)  # fmt: skip
    wait("Prometheus scraped round 1",
         lambda: query(prom, 'count(mailmon_bounces_total) >= 6 and count(mailmon_complaints_total) >= 3'),
         30, logs)  # fmt: skip
    _round(maillog, mm, 2, minute, logs)
    wait("Prometheus scraped round 2",
         lambda: query(prom, f'sum(mailmon_complaints_total) >= {2 * len(DOMAINS)}'),
         30, logs)  # fmt: skip

    boards = load_all()
    # The recording rules and the rollup gauges need a few evaluations after the scrape.
    deadline = time.monotonic() + 30
    while (empty := _empty_panels(prom, boards)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not empty, "panels without data:\n" + "\n".join(empty)
    # The sending-IP rows show the incident the traffic was built for, not some other one.
    ip = f'provider="microsoft", sending_ip="{BLOCKED_IP}"'
    assert query(prom, f'mailmon_sending_ip_incident_open{{kind="sending_ip_rejecting", {ip}}} == 1')
    assert query(prom, f'mailmon_sending_ip_incident_open{{provider="microsoft", sending_ip="{GOOD_IP}"}}')
    assert not query(prom, f'mailmon_sending_ip_incident_open{{sending_ip="{GOOD_IP}"}} == 1')
    assert not query(prom, 'mailmon_domain_incident_open{kind="domain_rejecting"} == 1')
