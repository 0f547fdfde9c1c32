"""Dashboards and rollup detectors against a real Prometheus that scraped a real ``mailmon serve``.

``mailmon serve`` follows a Postfix log (BSD syslog) and takes KumoMTA log-hook records
(complaints arrive as ``Feedback`` records, KumoMTA's reading of ARF reports) on
``POST /ingest/kumomta``; a private Prometheus (Debian ``prometheus``) scrapes it every
second and evaluates ``alerts/recording.rules.yml`` and ``alerts/mailmon.rules.yml``.
The traffic (``promql_traffic``: which detector judges which subject) comes in two rounds
so that every counter has grown between two scrapes and every ``rate()`` is above zero.

The rollup engine judges the same traffic in event time: Postfix lines three minutes ago,
each round's complaints in a later minute (the engine evaluates at the start of the newest
minute, so round 2's complaints bring round 1's into its windows).  Round 1 opens the
queue-age, provider-silent and sending-IP incidents (the test config lowers
``queue_min_stuck`` and ``silent_min_expected`` to 1), round 2 the deferral-spike (gmail.com),
delivery-latency (google), bounce-rate (outlook.com) and complaint-rate (yahoo) ones with
the detectors' default volumes, which also pass the alert rules' volume guards.

Prometheus's own history: MailmonDeferralSpike compares the last 15 minutes with the last
day, which a Prometheus started by the test does not have.  Before it starts, its TSDB gets
gmail.com's normal yesterday (``promql_traffic.history``, also in the log) as blocks made
by ``promtool tsdb create-blocks-from openmetrics``: the ``mailmon_deliveries_total``
samples a Prometheus scraping since yesterday would hold.  The spike itself is scraped.

The tests then check, on the one run: every dashboard panel parses and returns data (the
template variables resolved with the ``label_values()`` queries Grafana would run, once
with the first value of each variable and once with "All"); each detector's incident is
in ``GET /api/incidents`` with its evidence and its gauges are non-zero in Prometheus while
the other subjects stay quiet; each rate alert is active in Prometheus for its subject only
(pending: the rules' ``for:`` is 10-30 minutes); and the panels that show these gauges
show the incidents.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dmarc_data import DMARC
from dns_server import DNSServer
from grafana_boards import label_values, load_all, query_panels, substitute, variables
from posture_zones import BLOCKLISTS, CLEAN_IP, LISTED_IP, zones
from servers.prometheus import (
    backfill,
    free_port,
    get,
    prometheus_config,
    query,
    start,
    tool,
    wait,
)

from integration import promql_traffic as traffic
from integration.promql_traffic import BLOCKED_IP, DOMAINS, GOOD_IP, Lines

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: The incidents the traffic opens, as (kind, provider, domain, sending IP or sending
#: domain): no other.  app.example sends all of it, so Microsoft refusing one of its IPs
#: and bouncing outlook.com is also that sending domain rejected and bouncing there.
INCIDENTS = {
    ("queue_age", "google", "gmail.com"),
    ("provider_silent", "yandex", ""),
    # Outlook.com alone stays under its line, Microsoft's domains together do not.
    ("provider_rejecting", "microsoft", ""),
    ("sending_ip_rejecting", "microsoft", BLOCKED_IP),
    ("sender_domain_rejecting", "microsoft", "app.example"),
    ("sender_domain_bounce_rate", "microsoft", "app.example"),
    ("deferral_spike", "google", "gmail.com"),
    ("delivery_latency", "google", ""),
    ("bounce_rate", "microsoft", "outlook.com"),
    ("complaint_rate", "yahoo", ""),
}
#: The rate alerts of alerts/mailmon.rules.yml the traffic raises, with their subjects.
ALERTS = {
    ("MailmonDeferralSpike", (("domain", "gmail.com"), ("provider", "google"), ("severity", "warning"))),
    ("MailmonDeliveryLatencyHigh", (("provider", "google"), ("severity", "warning"))),
    ("MailmonBounceRateHigh", (("domain", "outlook.com"), ("provider", "microsoft"), ("severity", "warning"))),
    ("MailmonComplaintRateHigh", (("provider", "yahoo"), ("severity", "warning"))),
    ("MailmonComplaintRateHigh", (("provider", "yahoo"), ("severity", "critical"))),
}  # fmt: skip


#: Real DMARC and TLS reports (parsedmarc's samples) read by serve's dmarc_reports job:
#: round 1 creates every series (example.com passing and failing, a TLS failure), round 2
#: makes them grow: Google's 2,286 failing messages for example.com, RFC 8460's example.
CORPUS = DMARC
REPORTS = {
    1: ["aggregate/addisonfoods.com!example.com!1536105600!1536191999.xml",
        "aggregate/rfc9990-example.net!example.com!1700000000!1700086399.xml",
        "aggregate/rfc9990-sample.xml", "smtp_tls/smtp_tls.json"],
    2: ["aggregate/!large-example.com!1711897200!1711983600.xml",
        "smtp_tls/rfc8460.json", "smtp_tls/mail.ru.json"],
}  # fmt: skip


def _reports(inbox: Path, n: int) -> None:
    """Put round ``n``'s reports where the dmarc_reports job reads (and then moves) them,
    each whole at once: the job runs every second with ``min_age_seconds = 0``, and a
    copy in place was once read half written (a large report recovered short)."""
    for name in REPORTS[n]:
        staged = inbox / f".{Path(name).name}.part"  # hidden: the job leaves it alone
        shutil.copy(CORPUS / name, staged)
        staged.replace(inbox / Path(name).name)


@dataclass(frozen=True)
class Run:
    """The running stack: mailmon's and Prometheus' base URLs, and their output files."""

    mailmon: str
    prometheus: str
    logs: list[Path]


def _post(mailmon: str, lines: list[str]) -> None:
    request = urllib.request.Request(
        f"{mailmon}/ingest/kumomta", data="\n".join(lines).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def _append(log: Path, timed: Lines, *extra: str) -> int:
    """Append ``timed`` in time order (a log is), then ``extra``; the log's line count."""
    with log.open("a") as f:
        f.writelines(line for _t, line in sorted(timed, key=lambda tl: tl[0]))
        f.writelines(extra)
    return log.read_text().count("\n")


def _round(log: Path, mailmon: str, n: int, minute: float, logs: list[Path]) -> None:
    """One round of traffic: Postfix lines to every domain in the event-time ``minute`` (the
    first round: also the stuck delivery and yandex's past; the second: each rate detector's
    subject), then KumoMTA deliveries and bounces from two sending IPs in the same minute,
    the complaints ``n`` minutes later and one bad record through the KumoMTA hook.

    The hook's events are newer, so they come second: the rollup engine evaluates when the
    newest event time moves on (to the start of its minute), and must find the Postfix
    attempts stored by then.
    """
    # The engine's last evaluation is at minute + 2 min, when round 2's complaints arrive.
    if n == 1:
        timed = [*traffic.stuck(minute + 40), *traffic.silent(minute + 120)]
    else:
        timed = [*traffic.deferral_spike(minute), *traffic.slow(minute),
                 *traffic.bounces(minute), *traffic.bulk(minute)]  # fmt: skip
    for i, domain in enumerate(DOMAINS):
        for j, outcome in enumerate(["sent"] * 8 + ["deferred", "userunknown", "spamdetected"]):
            t = minute + 10 * i + j  # event time: inside the rollup's short window
            timed += traffic.postfix(t, f"r{n}-{j}@{domain}", outcome)
    total = _append(log, timed, "this line is no syslog line\n")  # counted as unparsed
    wait(f"mailmon read the {total} log lines of round {n}",
         lambda: f'mailmon_source_lines_total{{source="postfix"}} {total}.0'.encode()
         in get(f"{mailmon}/metrics"), 60, logs)  # fmt: skip
    # Deliveries and bounces in their own request, stored before the newer complaints move
    # the engine's evaluation on.
    egress = [json.dumps(r) for r in traffic.egress(n, minute)]
    _post(mailmon, egress)
    _post(mailmon, egress[:5])  # a sender retrying: duplicates, every round (a rate)
    complaints = traffic.complaints(n, minute)
    _post(mailmon, [*map(json.dumps, complaints), '{"type": "NoSuchRecord"}'])


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


def _rules(tmp: Path) -> list[str]:
    """TEST COPIES of alerts/: every group evaluated every second instead of every minute.
    Expressions, `for:`, labels and annotations are alerts/' own."""
    names = []
    for name in ("recording.rules.yml", "mailmon.rules.yml"):
        rules = yaml.safe_load((ROOT / "alerts" / name).read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        (tmp / name).write_text(yaml.safe_dump(rules, sort_keys=False))
        names.append(name)
    return names


def _backfill(promtool: str, tsdb: Path, port: int, attempts: list[tuple[float, str]],
              minute: float) -> None:  # fmt: skip
    """gmail.com's yesterday as Prometheus would have scraped it from this mailmon, up to 20
    minutes before ``minute`` (none of it inside the 15-minute windows)."""
    target = (("instance", f"127.0.0.1:{port}"), ("job", "mailmon"))
    history = traffic.counter_history(attempts, minute - 23 * 3600 - 300, minute - 1200)
    series = {
        (("domain", "gmail.com"), *target, ("outcome", outcome), ("provider", "google")): samples
        for outcome, samples in history.items()
    }
    backfill(promtool, tsdb, "mailmon_deliveries", series)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """mailmon and Prometheus started, both rounds of traffic read and scraped."""
    tmp = tmp_path_factory.mktemp("promql")
    prometheus, promtool = tool("prometheus"), tool("promtool")
    ports = {name: free_port() for name in ("mailmon", "prometheus")}
    mm, prom = (f"http://127.0.0.1:{ports[n]}" for n in ("mailmon", "prometheus"))
    logs = [tmp / "mailmon.out", tmp / "prometheus.out"]

    inbox = tmp / "reports"
    inbox.mkdir()
    (tmp / "lists.toml").write_text(BLOCKLISTS)
    dns = DNSServer(zones())
    dns.start()
    (tmp / "mailmon.toml").write_text(
        f'[database]\nurl = "sqlite:///{tmp / "mailmon.db"}"\n'
        f'[service]\nlisten_host = "127.0.0.1"\nlisten_port = {ports["mailmon"]}\n'
        f'[[logs]]\nkind = "postfix"\npath = "{tmp / "mail.log"}"\npoll_interval_seconds = 0.1\n'
        f"[metrics]\ndomains = {json.dumps(list(DOMAINS))}\n"
        # One stuck delivery opens a queue-age incident, one delivery a day makes a provider's
        # silence an incident (defaults: 20 each), so a short test shows both.  The rate
        # detectors keep their defaults: the alert rules' volume guards ask as much.
        "[rollup]\ninterval_seconds = 1\nqueue_min_stuck = 1\nsilent_min_expected = 1\n"
        # DMARC/TLS reports dropped in a directory, and the DNS posture of a test domain
        # asked of a DNS server on 127.0.0.1 (one sending IP listed, one clean).
        f'[dmarc]\ndomains = ["example.com", "company-y.example"]\ndirectory = "{inbox}"\n'
        "min_age_seconds = 0\n[jobs.dmarc_reports]\ninterval_seconds = 1\n"
        f'[dns]\ndomains = ["good.test"]\ndkim_selectors = ["s2048"]\n'
        f'sending_ips = ["{CLEAN_IP}", "{LISTED_IP}"]\nnameservers = ["127.0.0.1"]\n'
        f'dns_port = {dns.port}\nblocklists_file = "{tmp / "lists.toml"}"\n'
        'lists = ["zen", "bl", "dbl"]\nmta_sts_fetch_policy = false\n'
    )
    prom_yml = prometheus_config(tmp, _rules(tmp), ports["mailmon"])
    check = subprocess.run([promtool, "check", "config", str(prom_yml)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    # Postfix traffic three minutes ago: round 2's complaints (minute + 2 min) are still past.
    minute = time.time() // 60 * 60 - 180
    # Yesterday is in the log before mailmon starts (read while Prometheus starts up) and
    # in Prometheus' TSDB before Prometheus starts.
    history, attempts = traffic.history(minute)
    lines = _append(tmp / "mail.log", history)
    _backfill(promtool, tmp / "tsdb", ports["mailmon"], attempts, minute)

    env = os.environ | {"MAILMON_RESOLVE_MX": "0", "MAILMON_DATA_DIR": str(tmp)}
    env.pop("MAILMON_DB_URL", None)
    env.pop("MAILMON_CONFIG", None)
    _reports(inbox, 1)
    with ExitStack() as stack:
        stack.callback(dns.stop)
        start(stack, [sys.executable, "-m", "monitor", "serve", "--config",
                      str(tmp / "mailmon.toml")], logs[0], env=env)  # fmt: skip
        wait("mailmon /healthz", lambda: b'"ok"' in get(f"{mm}/healthz"), 30, logs)
        # Prometheus's first scrape then finds all of yesterday: its counters go on from the
        # backfilled samples without a reset.
        wait("mailmon read yesterday",
             lambda: f'mailmon_source_lines_total{{source="postfix"}} {lines}.0'.encode()
             in get(f"{mm}/metrics"), 30, logs)  # fmt: skip
        start(stack, [prometheus, f"--config.file={prom_yml}",
                      f"--storage.tsdb.path={tmp / 'tsdb'}",
                      f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], logs[1])  # fmt: skip

        # Round 1 creates the series; once Prometheus has scraped them, round 2 makes them grow.
        _round(tmp / "mail.log", mm, 1, minute, logs)
        wait("mailmon counted round 1",
             lambda: b'mailmon_complaints_total{domain="yahoo.com"' in get(f"{mm}/metrics")
             and b'outcome="bounced"' in get(f"{mm}/metrics"), 30, logs)  # fmt: skip
        wait("Prometheus scraped round 1",
             lambda: query(prom, 'count(mailmon_bounces_total) >= 6 and count(mailmon_complaints_total) >= 3')
             and query(prom, 'sum(mailmon_dmarc_messages_total) >= 131 and sum(mailmon_tlsrpt_sessions_total) >= 3')
             and query(prom, 'count(mailmon_dns_check) >= 7'),
             30, logs)  # fmt: skip
        _reports(inbox, 2)
        _round(tmp / "mail.log", mm, 2, minute, logs)
        complaints = 2 * len(DOMAINS) + traffic.COMPLAINTS
        wait("Prometheus scraped round 2",
             lambda: query(prom, f"sum(mailmon_complaints_total) >= {complaints}")
             and query(prom, "sum(mailmon_dmarc_messages_total) >= 131 + 2286"),
             30, logs)  # fmt: skip
        yield Run(mm, prom, logs)


def _until(what: str, run: Run, check: Callable[[], list[str]], timeout: float = 30) -> None:
    """Retry ``check`` (a list of what is still wrong) until it is empty; fail with it."""
    wrong: list[str] = []

    def done() -> bool:
        nonlocal wrong
        wrong = check()
        return not wrong

    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(1)
    assert not wrong, f"{what}:\n" + "\n".join(wrong)


def test_every_panel_query_returns_data(run: Run) -> None:
    """Every target of every dashboard parses and returns data from a Prometheus scraping a
    mailmon that followed real Postfix log lines and took KumoMTA complaints."""
    # The placement dashboard reads seed probes, which need mailboxes to read: its panels are
    # run in tests/integration/test_seeds_prometheus.py against a serve probing a Dovecot.
    boards = {n: b for n, b in load_all().items() if n != "mailmon-placement.json"}
    # The recording rules and the rollup gauges need a few evaluations after the scrape.
    _until("panels without data", run, lambda: _empty_panels(run.prometheus, boards))
    prom = run.prometheus
    # The sending-IP rows show the incident the traffic was built for, not some other one.
    ip = f'provider="microsoft", sending_ip="{BLOCKED_IP}"'
    assert query(prom, f'mailmon_sending_ip_incident_open{{kind="sending_ip_rejecting", {ip}}} == 1')
    assert query(prom, f'mailmon_sending_ip_incident_open{{provider="microsoft", sending_ip="{GOOD_IP}"}}')
    assert not query(prom, f'mailmon_sending_ip_incident_open{{sending_ip="{GOOD_IP}"}} == 1')
    assert not query(prom, 'mailmon_domain_incident_open{kind="domain_rejecting"} == 1')



def _open_incidents(run: Run) -> dict[tuple[str, str, str], dict[str, Any]]:
    rows = json.loads(get(f"{run.mailmon}/api/incidents?open=1"))
    return {(r["kind"], r["provider"], r["domain"]): r for r in rows}


def test_detectors_open_incidents_with_evidence(run: Run) -> None:
    """Each rate detector opens its incident for its subject only, with the counts, rates
    and replies that made it fire as evidence in GET /api/incidents."""
    _until("incidents not open", run,
           lambda: [f"missing {i}" for i in sorted(INCIDENTS - set(_open_incidents(run)))])  # fmt: skip
    opened = _open_incidents(run)
    assert set(opened) == INCIDENTS, sorted(opened)
    evidence = {key[0]: row["evidence"] for key, row in opened.items()}

    deferral = evidence["deferral_spike"]  # 100 x 421 4.3.0 in the 15 minutes
    window = deferral["windows"]["15m"]
    assert window["deferred"] == traffic.SPIKE + 3, window  # + 2 rounds' 4.7.28 + the stuck one
    assert window["attempts"] >= deferral["detector"]["min_attempts"]
    assert deferral["wilson_lower"] > deferral["threshold"] == 0.25
    assert deferral["baseline_share"] < 0.25 / 3  # gmail.com's normal yesterday
    top = deferral["top_replies"][0]
    assert (top["count"], top["reply_code"], top["enhanced_status"], top["reason"]) == (
        traffic.SPIKE, 421, "4.3.0", "systemerror"), top  # fmt: skip

    latency = evidence["delivery_latency"]["latency"]  # 20 of ~150 deliveries 40 minutes late
    assert latency["slow"] == traffic.SLOW_N, latency
    assert latency["deliveries"] >= 100
    assert latency["p95"] == traffic.SLOW + traffic.TRANSMIT > latency["threshold"] == 1800
    assert latency["p50"] < 60
    assert evidence["delivery_latency"]["top_reasons"][0] == {
        "count": traffic.SPIKE + traffic.SLOW_N, "outcome": "deferred", "reason": "systemerror"
    }  # fmt: skip

    bounce = evidence["bounce_rate"]  # a quarter of 120 outlook.com recipients unknown
    window = bounce["windows"]["1h"]
    unknown = 2 + traffic.BOUNCE_N // 4  # + one per round
    assert window["bounced"] == unknown + 2, window  # + the spamdetected one per round
    assert window["delivered"] == 2 * (8 + 12) + traffic.BOUNCE_N - traffic.BOUNCE_N // 4
    assert bounce["wilson_lower"] > bounce["threshold"] == 0.05
    assert bounce["top_reasons"][0] == {"count": unknown, "outcome": "bounced",
                                        "reason": "userunknown"}  # fmt: skip
    assert any("5.1.1" in r["text"] and "User unknown" in r["text"] for r in bounce["top_replies"])

    # 26 complaints over 5,200+ deliveries a day: round 2's one per domain is newer than the
    # evaluation it brings about.
    complaint = evidence["complaint_rate"]
    window = complaint["windows"]["24h"]
    assert window["complained"] == 1 + traffic.COMPLAINTS, window
    assert window["delivered"] >= traffic.BULK_N
    assert complaint["value"] == pytest.approx(window["complained"] / window["delivered"], abs=1e-6)
    assert complaint["value"] > 0.003 and complaint["severity"] == "critical", complaint


def _gauges(run: Run, expr: str) -> dict[tuple[str, ...], float]:
    """``expr``'s series in Prometheus as (kind, provider, domain or sending IP) -> value."""
    out = {}
    for series in query(run.prometheus, expr):
        m = series["metric"]
        subject = m.get("domain", m.get("sending_ip", m.get("sender_domain", m.get("stream", ""))))
        key = (m.get("kind", ""), m["provider"], subject)
        out[key] = float(series["value"][1])
    return out


def test_incident_gauges_in_prometheus(run: Run) -> None:
    """Prometheus scraped each open incident and its rate gauge above the detector's line;
    no other domain, provider or sending IP has an incident open."""

    def missing() -> list[str]:
        have = {k for g in ("domain", "provider", "sending_ip", "sender_domain", "stream")
                for k, v in _gauges(run, f"mailmon_{g}_incident_open").items() if v == 1}  # fmt: skip
        return [f"{k} open: {k in have}" for k in sorted(INCIDENTS ^ have)]

    _until("incident gauges", run, missing)
    rates = {
        "mailmon_domain_deferral_ratio": (("", "google", "gmail.com"), 0.25),
        "mailmon_domain_bounce_ratio": (("", "microsoft", "outlook.com"), 0.05),
        "mailmon_provider_complaint_ratio": (("", "yahoo", ""), 0.003),
        'mailmon_provider_delivery_latency_seconds{quantile="0.95"}': (("", "google", ""), 1800),
    }
    for expr, (key, line) in rates.items():
        assert _gauges(run, expr)[key] > line, expr
    # The same gauges of the quiet subjects of that level (the pooled "other" domains, whose
    # KumoMTA refusals have no volume, aside).
    assert max(v for k, v in _gauges(run, "mailmon_domain_deferral_ratio").items()
               if k[2] != "gmail.com") < 0.25  # fmt: skip
    assert max(v for k, v in _gauges(run, "mailmon_domain_bounce_ratio").items()
               if k[2] not in ("outlook.com", "other")) < 0.05  # fmt: skip
    assert max(v for k, v in _gauges(run, "mailmon_provider_complaint_ratio").items()
               if k[1] in ("google", "microsoft")) < 0.003 * 5  # under min_delivered  # fmt: skip
    assert max(v for k, v in _gauges(run, 'mailmon_provider_delivery_latency_seconds{quantile="0.95"}').items()
               if k[1] != "google") < 1800  # fmt: skip


def test_rate_alerts_active_for_their_subjects_only(run: Run) -> None:
    """MailmonDeferralSpike, MailmonDeliveryLatencyHigh, MailmonBounceRateHigh and both
    MailmonComplaintRateHigh rules go pending (their ``for:`` is 10-30 min) in the real
    Prometheus for the subjects of the traffic, and for no other domain or provider."""
    names = {name for name, _labels in ALERTS}

    def active() -> dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]]:
        alerts = json.loads(get(f"{run.prometheus}/api/v1/alerts"))["data"]["alerts"]
        return {
            (a["labels"]["alertname"],
             tuple(sorted((k, v) for k, v in a["labels"].items() if k != "alertname"))): a
            for a in alerts if a["labels"]["alertname"] in names
        }  # fmt: skip

    # MailmonDeferralSpike's day is yesterday's backfill and today's scrapes, one counter.
    gmail = 'mailmon_deliveries_total{domain="gmail.com", outcome=~"delivered|deferred"}'
    assert query(run.prometheus, f"count_over_time({gmail}[1d]) > 200"), "no backfill"
    assert not query(run.prometheus, f"resets({gmail}[1d]) > 0")
    _until("rate alerts", run, lambda: [f"missing {a}" for a in sorted(ALERTS - set(active()))])
    alerts = active()
    assert set(alerts) == ALERTS, sorted(alerts)
    for (name, labels), alert in alerts.items():
        assert alert["state"] in ("pending", "firing"), alert
        subject = dict(labels).get("domain") or dict(labels)["provider"]
        assert subject in alert["annotations"]["summary"], alert
        assert alert["annotations"]["runbook_url"].endswith(f"#{name.lower()}")
    value = {name: float(a["value"]) for (name, _l), a in alerts.items()}
    assert value["MailmonDeferralSpike"] > 0.25
    assert value["MailmonDeliveryLatencyHigh"] > 1800
    assert value["MailmonBounceRateHigh"] > 0.05
    assert value["MailmonComplaintRateHigh"] > 0.003


def _shown(run: Run, board: str, title: str, ref: str, chosen: dict[str, str],
           labels: dict[str, str] | None = None) -> float:  # fmt: skip
    """The newest value a panel target shows for ``chosen`` variables, the largest of the
    series carrying ``labels`` (NaN when none)."""
    panel = next(p for p in query_panels(load_all()[board]) if p["title"] == title)
    target = next(t for t in panel["targets"] if t["refId"] == ref)
    values = chosen | {"sending_ip": ".*"}
    found = [
        float((s["value"] if "value" in s else s["values"][-1])[1])
        for s in _run(run.prometheus, target, substitute(target["expr"], values))
        if (labels or {}).items() <= s["metric"].items()
    ]
    return max(found, default=math.nan)


GMAIL = {"provider": "google", "domain": "gmail.com"}
OUTLOOK = {"provider": "microsoft", "domain": "outlook.com"}
YAHOO = {"provider": "yahoo", "domain": "yahoo.com"}
#: (dashboard, panel, target, variables, series labels, lowest value it must show)
PANELS: list[tuple[str, str, str, dict[str, str], dict[str, str], float]] = [
    ("mailmon-domain.json", "Deferral rate (15 m)", "A", GMAIL, {}, 0.25),
    ("mailmon-domain.json", "Deferral rate against its baseline", "A", GMAIL, {}, 0.25),
    ("mailmon-domain.json", "Deferral rate against its baseline", "C", GMAIL, {}, 0.25),
    ("mailmon-domain.json", "Incidents", "A", GMAIL, {"kind": "deferral_spike"}, 1),
    ("mailmon-domain.json", "Incidents", "B", GMAIL, {"kind": "delivery_latency"}, 1),
    ("mailmon-domain.json", "Delivery latency by provider (1 h)", "B", GMAIL, {}, 1800),
    ("mailmon-domain.json", "Delivery latency by provider (1 h)", "D", GMAIL, {}, 1800),
    ("mailmon-domain.json", "Bounce rate (1 h)", "A", OUTLOOK, {}, 0.05),
    ("mailmon-domain.json", "Bounce rate", "B", OUTLOOK, {}, 0.05),
    ("mailmon-domain.json", "Bounce rate", "C", OUTLOOK, {}, 0.05),
    ("mailmon-domain.json", "Incidents", "A", OUTLOOK, {"kind": "bounce_rate"}, 1),
    ("mailmon-domain.json", "Complaint rate (24 h)", "A", YAHOO, {}, 0.003),
    ("mailmon-domain.json", "Incidents", "B", YAHOO, {"kind": "complaint_rate"}, 1),
    ("mailmon-bounces.json", "Top reasons by domain (range)", "A", OUTLOOK,
     {"domain": "outlook.com", "reason": "userunknown"}, traffic.BOUNCE_N // 4),
    ("mailmon-latency.json", "p50 and p95 (1 h)", "B", GMAIL, {}, 1800),
    ("mailmon-latency.json", "p50 and p95 (1 h, rollup engine)", "B", GMAIL, {}, 1800),
    ("mailmon-latency.json", "Delivery latency incidents", "A", GMAIL, {}, 1),
    ("mailmon-overview.json", "Complaint rate by provider (24 h)", "A", {}, {"provider": "yahoo"}, 0.003),
    ("mailmon-overview.json", "Complaint rate by provider (24 h)", "B", {}, {"provider": "yahoo"}, 0.003),
    ("mailmon-overview.json", "Deferral rate by provider (15 m)", "A", {}, {"provider": "google"}, 0.25),
    ("mailmon-overview.json", "Open incidents", "A", {}, {}, len(INCIDENTS)),
    *[("mailmon-overview.json", "Open incidents by kind", "A", {}, {"kind": kind}, 1)
      for kind in ("deferral_spike", "delivery_latency", "bounce_rate", "complaint_rate")],
    ("mailmon-overview.json", "Open incidents now", "A", {},
     {"kind": "deferral_spike", "domain": "gmail.com"}, 1),
    ("mailmon-overview.json", "Open incidents now", "A", {},
     {"kind": "bounce_rate", "domain": "outlook.com"}, 1),
    ("mailmon-overview.json", "Open incidents now", "A", {},
     {"kind": "sending_ip_rejecting", "sending_ip": BLOCKED_IP}, 1),
    ("mailmon-overview.json", "Open incidents now", "A", {},
     {"kind": "sender_domain_rejecting", "sender_domain": "app.example"}, 1),
    ("mailmon-overview.json", "Provider incidents", "A", {},
     {"kind": "complaint_rate", "provider": "yahoo"}, 1),
    ("mailmon-overview.json", "Provider incidents", "A", {},
     {"kind": "delivery_latency", "provider": "google"}, 1),
]  # fmt: skip


def test_panels_show_the_incidents(run: Run) -> None:
    """The panels that show the rate gauges and incidents show this run's incidents at
    their subjects, above the detectors' lines (not just some data)."""

    def wrong() -> list[str]:
        out = []
        for board, title, ref, chosen, labels, least in PANELS:
            shown = _shown(run, board, title, ref, chosen, labels)
            if not shown >= least:  # NaN (nothing shown) is wrong too
                out.append(f"{board} / {title} / {ref} {chosen} {labels}: {shown} < {least}")
        return out

    _until("panels not showing the incidents", run, wrong)
    # A quiet subject in the same panels: nothing above the line.
    assert _shown(run, "mailmon-domain.json", "Deferral rate (15 m)", "A", YAHOO) < 0.25
    assert _shown(run, "mailmon-domain.json", "Bounce rate (1 h)", "A", YAHOO) < 0.05
    assert _shown(run, "mailmon-latency.json", "p50 and p95 (1 h)", "B", YAHOO) < 1800
    assert _shown(run, "mailmon-domain.json", "Complaint rate (24 h)", "A", GMAIL) < 0.003


def test_dmarc_and_dnsbl_alerts_from_real_reports_and_dns(run: Run) -> None:
    """Real DMARC reports read by serve's job make MailmonDmarcFailures' expression true for
    example.com in Prometheus (pending: its for: is 1h), the listed sending IP makes
    MailmonDnsblListed's true for it only, and the posture gauges are there."""
    prom = run.prometheus

    def wrong() -> list[str]:
        out = []
        if not query(prom, 'header_from:mailmon_dmarc_fail_ratio:rate1d{header_from="example.com"} > 0.9'):
            out.append("example.com's DMARC fail ratio is not above 90%")
        active = json.loads(get(f"{prom}/api/v1/alerts"))["data"]["alerts"]
        seen = {(a["labels"]["alertname"], a["labels"].get("header_from") or a["labels"].get("target"))
                for a in active if a["labels"]["alertname"] in ("MailmonDmarcFailures", "MailmonDnsblListed")}
        want = {("MailmonDmarcFailures", "example.com"), ("MailmonDnsblListed", LISTED_IP)}
        if seen != want:
            out.append(f"active alerts {sorted(seen)}, want {sorted(want)}")
        return out

    _until("DMARC and DNSBL alerts", run, wrong)
    assert query(prom, 'mailmon_dns_check{domain="good.test", check="spf"} == 1')
    assert query(prom, f'mailmon_dnsbl_listed{{target="{CLEAN_IP}", list="zen.test"}} == 0')
