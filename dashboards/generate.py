"""Generate Mailmon's Grafana dashboards (``dashboards/*.json``) from this file.

    python dashboards/generate.py          # rewrite the JSON files
    python dashboards/generate.py --check  # exit 1 when a JSON file differs from this file

Plain dicts in the Grafana dashboard JSON model (schemaVersion 39, Grafana 10/11), no SDK:
grafana-foundation-sdk (PyPI) builds dashboards, but its JSON needed patching afterwards
(no panel ids, empty refIds, ``options: null``, schemaVersion 36), and a dependency-free
script is what CI and reviewers can run anywhere.  Panel ids and grid positions are computed, so adding a panel is one line.
Every panel and query uses the ``$datasource`` variable; no datasource uid is hard-coded.
Queries read the recording rules of ``alerts/recording.rules.yml`` where one exists and
the raw counters of ``docs/metrics.md`` otherwise.
"""

# ruff: noqa: E501  (one panel per statement: its PromQL and description read best unbroken)
from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["mailmon"]
FILTER = 'provider=~"$provider", domain=~"$domain"'
FINISHED = 'outcome=~"delivered|bounced|expired"'

# Who has to act for each bounce reason (issue 4's blame set), for the blame panels: the
# bounce counter carries the reason, not the blame.  Where the classification rules give
# one reason several blames, the group is the one most of them give.
BLAME_OF_REASON: dict[str, tuple[str, ...]] = {
    "recipient": ("userunknown", "hostunknown", "hasmoved", "notaccept", "mailboxfull",
                  "suspend", "filtered", "syntaxerror", "vacation"),
    "reputation": ("blocked", "badreputation"),
    "authentication": ("authfailure", "requireptr"),
    "content": ("spamdetected", "virusdetected", "contenterror", "mesgtoobig", "exceedlimit",
                "notcompliantrfc"),
    "policy": ("policyviolation", "rejected", "norelaying", "securityerror", "failedstarttls"),
    "rate": ("speeding", "toomanyconn", "ratelimited"),
    "infrastructure": ("expired", "systemerror", "systemfull", "networkerror", "mailererror"),
    "unknown": ("undefined", "onhold", "suppressed", "delivered", "feedback"),
}  # fmt: skip


# ---------------------------------------------------------------------------- building blocks


def q(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> dict:
    """One Prometheus target."""
    target: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend}
    if instant:
        target |= {"instant": True, "range": False}
    else:
        target |= {"instant": False, "range": True}
    if fmt != "time_series":
        target["format"] = fmt
    return target


def panel(kind: str, title: str, description: str, targets: list[dict], *, w: int = 12,
          h: int = 8, unit: str = "short", options: dict | None = None,
          defaults: dict | None = None) -> dict:  # fmt: skip
    """A panel without id and position; :func:`dashboard` adds them."""
    for ref, target in zip("ABCDEFGHIJ", targets, strict=False):
        target["refId"] = ref
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit} | (defaults or {}), "overrides": []},
        "options": options or {},
        "gridPos": {"w": w, "h": h},
    }


def timeseries(title: str, description: str, *targets: dict, unit: str = "short",
               w: int = 12, stack: bool = False) -> dict:  # fmt: skip
    custom = {"drawStyle": "line", "fillOpacity": 20 if stack else 0, "showPoints": "never"}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return panel("timeseries", title, description, list(targets), w=w, unit=unit,
                 defaults={"custom": custom},
                 options={"legend": {"displayMode": "table", "placement": "right",
                                     "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}})  # fmt: skip


def stat(title: str, description: str, target: dict, *, unit: str = "short",
         thresholds: list[tuple[float | None, str]] | None = None, w: int = 4, h: int = 4) -> dict:  # fmt: skip
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    return panel("stat", title, description, [target], w=w, h=h, unit=unit,
                 defaults={"thresholds": {"mode": "absolute", "steps": steps}},
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False},
                          "colorMode": "value", "graphMode": "area"})  # fmt: skip


def table(title: str, description: str, target: dict, *, w: int = 12, h: int = 8) -> dict:
    return panel("table", title, description, [target], w=w, h=h,
                 options={"showHeader": True, "sortBy": [{"displayName": "Value", "desc": True}]})  # fmt: skip


def incidents(title: str, description: str, *targets: dict, w: int = 12) -> dict:
    """A state timeline of 0/1 incident gauges: ok (green) or open (red)."""
    return panel("state-timeline", title, description, list(targets), w=w,
                 options={"showValue": "never", "mergeValues": True},
                 defaults={"mappings": [{"type": "value", "options": {
                     "0": {"text": "ok", "color": "green"}, "1": {"text": "open", "color": "red"}}}]})  # fmt: skip


def variable(name: str, label: str, definition: str, *, multi: bool = True) -> dict:
    """A query variable over label values, refreshed when the time range changes."""
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "definition": definition,
        "query": {"query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "allValue": ".*" if multi else None,
        "current": {},
        "hide": 0,
    }


DATASOURCE_VARIABLE = {
    "type": "datasource",
    "name": "datasource",
    "label": "Data source",
    "query": "prometheus",
    "refresh": 1,
    "current": {},
    "hide": 0,
}
PROVIDER = variable("provider", "Provider", "label_values(mailmon_deliveries_total, provider)")
DOMAIN = variable(
    "domain", "Domain", 'label_values(mailmon_deliveries_total{provider=~"$provider"}, domain)'
)
# Chained to $provider only: the sending-IP gauges have no domain label.
SENDING_IP = variable(
    "sending_ip", "Sending IP",
    'label_values(mailmon_sending_ip_incident_open{provider=~"$provider"}, sending_ip)',
)
IP_FILTER = 'provider=~"$provider", sending_ip=~"$sending_ip"'
SOURCE = variable("source", "Source", "label_values(mailmon_events_ingested_total, source)")


def dashboard(uid: str, title: str, description: str, rows: Iterable[tuple[str, list[dict]]],
              variables: Iterable[dict] = ()) -> dict:  # fmt: skip
    """A dashboard from (row title, panels) pairs: ids and grid positions are assigned here."""
    panels: list[dict] = []
    ids = iter(range(1, 1000))
    y = 0
    for row_title, row_panels in rows:
        panels.append({"type": "row", "id": next(ids), "title": row_title, "collapsed": False,
                       "panels": [], "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}})  # fmt: skip
        y += 1
        x = height = 0
        for p in row_panels:
            w, h = p["gridPos"]["w"], p["gridPos"]["h"]
            if x + w > 24:
                x, y, height = 0, y + height, 0
            panels.append({"id": next(ids), **p, "gridPos": {"x": x, "y": y, "w": w, "h": h}})
            x, height = x + w, max(height, h)
        y += height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "1m",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [DATASOURCE_VARIABLE, *variables]},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": TAGS, "asDropdown": True, "title": "Mailmon"}],
        "panels": panels,
    }


def ratio(numerator: str, denominator: str) -> str:
    """numerator / denominator, 0 (not nothing) when the numerator has no series."""
    return f"({numerator} or 0 * {denominator}) / ({denominator} > 0)"


def blame(selector: str, window: str) -> str:
    """Bounces per second per blame group: one ``label_replace`` per group, joined with ``or``."""
    parts = [
        f'label_replace(sum(rate(mailmon_bounces_total{{{selector}, reason=~"{"|".join(reasons)}"}}'
        f'[{window}])), "blame", "{group}", "", "")'
        for group, reasons in BLAME_OF_REASON.items()
    ]
    return "sum by (blame) (\n  " + "\n  or ".join(parts) + "\n)"


# ---------------------------------------------------------------------------- the dashboards


def overview() -> dict:
    finished = "sum(provider_domain:mailmon_deliveries:rate1h)"
    attempts = "sum(provider_domain:mailmon_delivery_attempts:rate1h)"
    by_provider = "sum by (provider) (provider_domain:mailmon_deliveries:rate5m)"
    return dashboard(
        "mailmon-overview",
        "Mailmon / Overview",
        "Delivery, bounce, deferral and complaint rates, open incidents and volumes by provider.",
        [
            ("Last hour", [
                stat("Delivered (1 h)", "Recipients accepted by the receiving server in the last hour.",
                     q('sum(provider_domain_outcome:mailmon_deliveries:rate1h{outcome="delivered"}) * 3600', instant=True)),
                stat("Delivery rate (1 h)", "Delivered / (delivered + bounced + expired).",
                     q(ratio('sum(provider_domain_outcome:mailmon_deliveries:rate1h{outcome="delivered"})', finished), instant=True),
                     unit="percentunit", thresholds=[(None, "red"), (0.9, "orange"), (0.97, "green")]),
                stat("Bounce rate (1 h)", "Bounced / finished recipients; MailmonBounceRateHigh fires above 5 %.",
                     q(ratio('sum(provider_domain_outcome:mailmon_deliveries:rate1h{outcome="bounced"})', finished), instant=True),
                     unit="percentunit", thresholds=[(None, "green"), (0.02, "orange"), (0.05, "red")]),
                stat("Deferral rate (1 h)", "Deferred attempts / all attempts.",
                     q(ratio('sum(provider_domain_outcome:mailmon_deliveries:rate1h{outcome="deferred"})', attempts), instant=True),
                     unit="percentunit", thresholds=[(None, "green"), (0.1, "orange"), (0.25, "red")]),
                stat("Complaint rate (24 h)", "Complaints / delivered over 24 h; Gmail and Yahoo: stay below 0.1 %, never reach 0.3 %.",
                     q(ratio("sum(rate(mailmon_complaints_total[1d]))", "sum(provider:mailmon_delivered:rate1d)"), instant=True),
                     unit="percentunit", thresholds=[(None, "green"), (0.001, "orange"), (0.003, "red")]),
                stat("Domains rejecting", "Provider/domain pairs with an open domain-rejecting incident (MailmonDomainRejecting).",
                     q("sum(max without (instance, job) (mailmon_domain_rejecting))", instant=True),
                     thresholds=[(None, "green"), (1, "red")]),
                stat("Open incidents", "Open rollup-engine incidents of every kind; which: Open incidents now below, details: mailmon incidents.",
                     q("sum(kind:mailmon_incidents_open:sum)", instant=True),
                     thresholds=[(None, "green"), (1, "red")], w=8),
                stat("Providers silent", "Providers with no attempt for an hour that always have traffic at this hour (MailmonProviderSilent).",
                     q('sum(max by (provider) (mailmon_provider_incident_open{kind="provider_silent"}))', instant=True),
                     thresholds=[(None, "green"), (1, "red")], w=8),
                stat("Queues stuck", "Provider/domain pairs with deliveries deferred for hours (MailmonQueueStuck).",
                     q('sum(max by (provider, domain) (mailmon_domain_incident_open{kind="queue_age"}))', instant=True),
                     thresholds=[(None, "green"), (1, "red")], w=8),
            ]),
            ("Rates", [
                timeseries("Bounce rate by provider (5 m)", "Bounced / finished recipients per provider.",
                           q(ratio('sum by (provider) (provider_domain_outcome:mailmon_deliveries:rate5m{outcome="bounced"})', by_provider), "{{provider}}"),
                           unit="percentunit", w=8),
                timeseries("Deferral rate by provider (15 m)", "Deferred attempts / attempts per provider.",
                           q(ratio('sum by (provider) (rate(mailmon_deliveries_total{outcome="deferred"}[15m]))',
                                   "sum by (provider) (provider_domain:mailmon_delivery_attempts:rate15m)"), "{{provider}}"),
                           unit="percentunit", w=8),
                timeseries("Complaint rate by provider (24 h)", "The measure of Gmail's and Yahoo's sender rules (MailmonComplaintRateHigh).",
                           q("provider:mailmon_complaint_ratio:rate1d", "{{provider}}"),
                           q("max by (provider) (mailmon_provider_complaint_ratio)", "{{provider}} engine"), unit="percentunit", w=8),
            ]),
            ("Incidents", [
                table("Open incidents now", "Which detector fired for which provider and subject: a domain, or a sending IP, sending domain or stream for the sender-side kinds; a provider-level kind has none.",
                      q("max by (kind, provider, domain) (mailmon_domain_incident_open == 1)\nor\nmax by (kind, provider) (mailmon_provider_incident_open == 1)\n"
                        "or\nmax by (kind, provider, sending_ip) (mailmon_sending_ip_incident_open == 1)\n"
                        "or\nmax by (kind, provider, sender_domain) (mailmon_sender_domain_incident_open == 1)\n"
                        "or\nmax by (kind, provider, stream) (mailmon_stream_incident_open == 1)",
                        instant=True, fmt="table")),
                timeseries("Open incidents by kind", "Open rollup-engine incidents per detector kind (kind:mailmon_incidents_open:sum).",
                           q("kind:mailmon_incidents_open:sum", "{{kind}}"), stack=True),
                incidents("Domain incidents", "Per detector kind, the provider/domain pairs that had an incident in the time range (4 kinds per domain would bury them); domains outside metrics.domains pool into other.",
                          q("max by (kind, provider, domain) (mailmon_domain_incident_open)\nand on (kind, provider, domain)\n"
                            "(max by (kind, provider, domain) (max_over_time(mailmon_domain_incident_open[$__range])) == 1)",
                            "{{kind}} {{provider}} {{domain}}")),
                incidents("Provider incidents", "Complaint rate, provider silent and delivery latency: the providers that had an incident in the time range.",
                          q("max by (kind, provider) (mailmon_provider_incident_open)\nand on (kind, provider)\n"
                            "(max by (kind, provider) (max_over_time(mailmon_provider_incident_open[$__range])) == 1)",
                            "{{kind}} {{provider}}")),
                timeseries("Rejecting share (5 m, event time)", "Share of attempts failing for reputation, policy, rate or block reasons: the detector's input.",
                           q("max by (provider, domain) (mailmon_domain_rejecting_ratio)", "{{provider}} {{domain}}"), unit="percentunit", w=24),
            ]),
            ("Sending IPs", [
                stat("Sending IPs with incidents", "Provider/sending-IP pairs with an open sending_ip_rejecting or sending_ip_bounce_rate incident (MailmonSendingIpRejecting); KumoMTA sources only.",
                     q("sum(max by (provider, sending_ip) (mailmon_sending_ip_incident_open))", instant=True),
                     thresholds=[(None, "green"), (1, "red")], h=8),
                table("Sending IPs with open incidents now", "Which of our addresses a provider refuses or bounces (details: mailmon incidents; per IP: the drill-down's Sending IPs row).",
                      q("max by (kind, provider, sending_ip) (mailmon_sending_ip_incident_open == 1)", instant=True, fmt="table"), w=10),
                incidents("Sending-IP incidents", "Per detector kind, the provider/sending-IP pairs that had an incident in the time range; IPs outside metrics.sending_ips and the top ones pool into other.",
                          q("max by (kind, provider, sending_ip) (mailmon_sending_ip_incident_open)\nand on (kind, provider, sending_ip)\n"
                            "(max by (kind, provider, sending_ip) (max_over_time(mailmon_sending_ip_incident_open[$__range])) == 1)",
                            "{{kind}} {{provider}} {{sending_ip}}"), w=10),
            ]),
            ("Volumes", [
                timeseries("Outcomes per minute", "Recipients by final outcome; deferred counts attempts.",
                           q("sum by (outcome) (provider_domain_outcome:mailmon_deliveries:rate5m) * 60", "{{outcome}}"), stack=True),
                timeseries("Finished recipients per minute by provider", "Delivered + bounced + expired per provider.",
                           q(f"{by_provider} * 60", "{{provider}}"), stack=True),
            ]),
        ],
    )  # fmt: skip


def domain() -> dict:
    sel = f"{{{FILTER}}}"
    return dashboard(
        "mailmon-domain",
        "Mailmon / Domain and provider",
        "One provider or recipient domain: volumes, rates against their baselines, incidents, latency.",
        [
            ("Now", [
                stat("Finished (1 h)", "Delivered + bounced + expired recipients in the last hour.",
                     q(f"sum(provider_domain:mailmon_deliveries:rate1h{sel}) * 3600", instant=True)),
                stat("Delivery rate (1 h)", "Delivered / finished recipients.",
                     q(ratio(f'sum(provider_domain_outcome:mailmon_deliveries:rate1h{{{FILTER}, outcome="delivered"}})',
                             f"sum(provider_domain:mailmon_deliveries:rate1h{sel})"), instant=True),
                     unit="percentunit", thresholds=[(None, "red"), (0.9, "orange"), (0.97, "green")]),
                stat("Bounce rate (1 h)", "Bounced / finished recipients.",
                     q(f"max(provider_domain:mailmon_bounce_ratio:rate1h{sel})", instant=True),
                     unit="percentunit", thresholds=[(None, "green"), (0.02, "orange"), (0.05, "red")]),
                stat("Deferral rate (15 m)", "Deferred attempts / attempts (MailmonDeferralSpike compares it with the 1 d baseline).",
                     q(f"max(provider_domain:mailmon_deferral_ratio:rate15m{sel})", instant=True),
                     unit="percentunit", thresholds=[(None, "green"), (0.1, "orange"), (0.25, "red")]),
                stat("Complaint rate (24 h)", "Complaints / delivered over 24 h.",
                     q(f"max(provider_domain:mailmon_complaint_ratio:rate1d{sel})", instant=True),
                     unit="percentunit", thresholds=[(None, "green"), (0.001, "orange"), (0.003, "red")]),
                stat("Rejecting", "1 while a domain-rejecting incident is open for the selection.",
                     q(f"max(mailmon_domain_rejecting{sel})", instant=True),
                     thresholds=[(None, "green"), (1, "red")]),
            ]),
            ("Volumes and rates", [
                timeseries("Outcomes per minute", "Recipients by final outcome; deferred counts attempts.",
                           q(f"sum by (outcome) (provider_domain_outcome:mailmon_deliveries:rate5m{sel}) * 60", "{{outcome}}"), stack=True),
                timeseries("Delivery rate (5 m)", "Delivered / finished recipients per domain.",
                           q(ratio(f'sum by (provider, domain) (provider_domain_outcome:mailmon_deliveries:rate5m{{{FILTER}, outcome="delivered"}})',
                                   f"sum by (provider, domain) (provider_domain:mailmon_deliveries:rate5m{sel})"), "{{domain}}"),
                           unit="percentunit"),
                timeseries("Bounce rate", "Bounced / finished recipients, short and long window; engine: the bounce-rate detector's 1 h in event time.",
                           q(f"provider_domain:mailmon_bounce_ratio:rate5m{sel}", "{{domain}} 5m"),
                           q(f"provider_domain:mailmon_bounce_ratio:rate1h{sel}", "{{domain}} 1h"),
                           q(f"mailmon_domain_bounce_ratio{sel}", "{{domain}} 1h engine"), unit="percentunit"),
                timeseries("Deferral rate against its baseline", "15 m deferral rate and the 1 d baseline it is compared with; engine: the deferral-spike detector's 15 m in event time.",
                           q(f"provider_domain:mailmon_deferral_ratio:rate15m{sel}", "{{domain}} 15m"),
                           q(f"provider_domain:mailmon_deferral_ratio:rate1d{sel}", "{{domain}} 1d baseline"),
                           q(f"mailmon_domain_deferral_ratio{sel}", "{{domain}} 15m engine"), unit="percentunit"),
                timeseries("Complaint rate (24 h)", "Complaints / delivered over 24 h per domain.",
                           q(f"provider_domain:mailmon_complaint_ratio:rate1d{sel}", "{{domain}}"), unit="percentunit"),
                timeseries("Rejecting share (5 m, event time)", "The domain-rejecting detector's input, and its verdict.",
                           q(f"mailmon_domain_rejecting_ratio{sel}", "{{domain}} share"),
                           q(f"mailmon_domain_rejecting{sel}", "{{domain}} rejecting"), unit="percentunit"),
            ]),
            ("Incidents and queue", [
                incidents("Incidents", "The rollup engine's verdict per detector kind: the selected domains' and their providers' (details: mailmon incidents).",
                          q(f"max by (kind, domain) (mailmon_domain_incident_open{sel})", "{{kind}} {{domain}}"),
                          q('max by (kind, provider) (mailmon_provider_incident_open{provider=~"$provider"})', "{{kind}} {{provider}}"), w=8),
                timeseries("Deliveries stuck in the queue", "Still deferred longer than [rollup] queue_max_age_seconds after their first attempt (MailmonQueueStuck).",
                           q(f"sum by (domain) (mailmon_domain_queue_stuck{sel})", "{{domain}}"), w=8),
                timeseries("Oldest stuck delivery", "Seconds since the first attempt of the oldest stuck delivery (0: none stuck).",
                           q(f"max by (domain) (mailmon_domain_queue_oldest_age_seconds{sel})", "{{domain}}"), unit="s", w=8),
            ]),
            ("Bounces and latency", [
                timeseries("Bounces per minute by reason", "Bounced recipients by class; hard: userunknown, hostunknown, hasmoved, notaccept.",
                           q(f"sum by (reason) (rate(mailmon_bounces_total{sel}[$__rate_interval])) * 60", "{{reason}}"), stack=True),
                timeseries("Delivery latency by provider (1 h)", "Submission to delivery, per provider (not per domain): the histogram's quantiles and the latency detector's from the delivery rows.",
                           q('provider:mailmon_delivery_delay_seconds:p50_rate1h{provider=~"$provider"}', "{{provider}} p50"),
                           q('provider:mailmon_delivery_delay_seconds:p95_rate1h{provider=~"$provider"}', "{{provider}} p95"),
                           q('mailmon_provider_delivery_latency_seconds{provider=~"$provider", quantile="0.5"}', "{{provider}} p50 engine"),
                           q('mailmon_provider_delivery_latency_seconds{provider=~"$provider", quantile="0.95"}', "{{provider}} p95 engine"), unit="s"),
            ]),
            ("Share of traffic", [
                table("Finished recipients by domain (range)", "Delivered + bounced + expired per domain over the dashboard's time range.",
                      q(f"sort_desc(sum by (provider, domain) (increase(mailmon_deliveries_total{{{FILTER}, {FINISHED}}}[$__range])))",
                        instant=True, fmt="table"), w=24),
            ]),
            ("Sending IPs", [
                timeseries("Rejecting share per sending IP (5 m, event time)", "Share of the IP's attempts at the provider refused or deferred for reputation, policy, rate or block reasons: the sending_ip_rejecting detector's input (KumoMTA sources only; $domain does not apply).",
                           q(f"mailmon_sending_ip_rejecting_ratio{{{IP_FILTER}}}", "{{provider}} {{sending_ip}}"), unit="percentunit", w=8),
                timeseries("Bounce rate per sending IP (1 h, event time)", "Bounced / finished recipients of the IP at the provider: the sending_ip_bounce_rate detector's input.",
                           q(f"mailmon_sending_ip_bounce_ratio{{{IP_FILTER}}}", "{{provider}} {{sending_ip}}"), unit="percentunit", w=8),
                incidents("Sending-IP incidents", "The rollup engine's verdict per sending IP and provider (MailmonSendingIpRejecting; details: mailmon incidents).",
                          q(f"max by (kind, provider, sending_ip) (mailmon_sending_ip_incident_open{{{IP_FILTER}}})", "{{kind}} {{provider}} {{sending_ip}}"), w=8),
            ]),
        ],
        [PROVIDER, DOMAIN, SENDING_IP],
    )  # fmt: skip


def bounces() -> dict:
    sel = f"{{{FILTER}}}"
    return dashboard(
        "mailmon-bounces",
        "Mailmon / Bounce reasons and blame",
        "Why mail bounces (Sisimai reason classes) and who has to act (recipient list, reputation, content, policy, infrastructure).",
        [
            ("Reasons", [
                timeseries("Bounces per minute by reason", "Bounced recipients by class.",
                           q(f"sum by (reason) (rate(mailmon_bounces_total{sel}[$__rate_interval])) * 60", "{{reason}}"), stack=True),
                timeseries("Hard and soft bounces per minute", "Hard: the address will not work (remove it); soft: it may work later.",
                           q(f"sum by (hard) (rate(mailmon_bounces_total{sel}[$__rate_interval])) * 60", "hard={{hard}}"),
                           stack=True),
            ]),
            ("Blame", [
                timeseries("Bounces per minute by blame", "Reasons grouped by who has to act; the per-bounce blame is in mailmon trace and the weekly report.",
                           q(f"{blame(FILTER, '$__rate_interval')} * 60", "{{blame}}"), stack=True),
                panel("piechart", "Blame (range)", "Share of bounces per blame group over the dashboard's time range.",
                      [q(blame(FILTER, "$__range"), "{{blame}}", instant=True)],
                      options={"legend": {"displayMode": "table", "placement": "right", "values": ["value", "percent"]},
                               "pieType": "donut", "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
            ]),
            ("Top", [
                table("Top reasons by domain (range)", "The 20 largest (provider, domain, reason, hard) groups over the time range.",
                      q(f"topk(20, sum by (provider, domain, reason, hard) (increase(mailmon_bounces_total{sel}[$__range])))",
                        instant=True, fmt="table"), w=24),
            ]),
        ],
        [PROVIDER, DOMAIN],
    )  # fmt: skip


def latency() -> dict:
    sel = '{provider=~"$provider"}'
    return dashboard(
        "mailmon-latency",
        "Mailmon / Delivery latency",
        "Submission-to-delivery delay per delivered recipient, per provider.",
        [
            ("Quantiles", [
                timeseries("p50 and p95 (1 h)", "From the histogram's recording rules; MailmonDeliveryLatencyHigh fires when p95 passes 30 minutes.",
                           q(f"provider:mailmon_delivery_delay_seconds:p50_rate1h{sel}", "{{provider}} p50"),
                           q(f"provider:mailmon_delivery_delay_seconds:p95_rate1h{sel}", "{{provider}} p95"), unit="s", w=8),
                timeseries("p50 and p95 (1 h, rollup engine)", "The latency detector's, exact from the delivery rows over the last hour of event time; it opens a delivery_latency incident when more than 5 % are slower than max(2 x the previous day's p95, 30 min).",
                           q('mailmon_provider_delivery_latency_seconds{provider=~"$provider", quantile="0.5"}', "{{provider}} p50"),
                           q('mailmon_provider_delivery_latency_seconds{provider=~"$provider", quantile="0.95"}', "{{provider}} p95"), unit="s", w=8),
                timeseries("p99 (dashboard interval)", "The slowest percent, at the dashboard's resolution.",
                           q(f"histogram_quantile(0.99, sum by (provider, le) (rate(mailmon_delivery_delay_seconds_bucket{sel}[$__rate_interval])))",
                             "{{provider}} p99"), unit="s", w=8),
            ]),
            ("Per recipient domain (rollup engine)", [
                timeseries("p50 and p95 per domain", "Exact over the last hour of event time (1h), and over the 24 whole hours before it from a histogram (24h); domains outside metrics.domains / top_domains have no quantiles (they do not pool).",
                           q('mailmon_domain_delivery_latency_seconds{provider=~"$provider"}', "{{provider}} {{domain}} q{{quantile}} {{window}}"), unit="s"),
                timeseries("Deliveries behind the domain quantiles", "Few deliveries make noisy quantiles; `other` pools the domains without a label.",
                           q('mailmon_domain_delivery_latency_deliveries{provider=~"$provider"}', "{{provider}} {{domain}} {{window}}")),
            ]),
            ("Per sending IP (rollup engine)", [
                timeseries("p50 and p95 per sending IP", "As per domain, for the address that made the deciding attempt (KumoMTA sources); IPs outside metrics.sending_ips / top_sending_ips have none.",
                           q('mailmon_sending_ip_delivery_latency_seconds{provider=~"$provider"}', "{{provider}} {{sending_ip}} q{{quantile}} {{window}}"), unit="s"),
                timeseries("Deliveries behind the sending-IP quantiles", "The volume per IP and window; `other` pools the IPs without a label.",
                           q('mailmon_sending_ip_delivery_latency_deliveries{provider=~"$provider"}', "{{provider}} {{sending_ip}} {{window}}")),
            ]),
            ("Distribution", [
                panel("bargauge", "Delivered by delay bucket (range)", "How many deliveries took at most each bucket's delay, cumulative.",
                      [q(f"sum by (le) (increase(mailmon_delivery_delay_seconds_bucket{sel}[$__range]))", "{{le}}",
                         instant=True, fmt="heatmap")],
                      options={"displayMode": "gradient", "orientation": "horizontal",
                               "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
                timeseries("Deliveries per minute with a measured delay", "The volume behind the quantiles; few deliveries make noisy quantiles.",
                           q(f"sum by (provider) (rate(mailmon_delivery_delay_seconds_count{sel}[$__rate_interval])) * 60", "{{provider}}")),
            ]),
            ("Incidents", [
                incidents("Delivery latency incidents", "1 while the rollup engine has an open delivery_latency incident for the provider (details: mailmon incidents).",
                          q('max by (provider) (mailmon_provider_incident_open{kind="delivery_latency", provider=~"$provider"})', "{{provider}}"), w=24),
            ]),
        ],
        [PROVIDER],
    )  # fmt: skip


def ingestion() -> dict:
    sel = '{source=~"$source"}'
    return dashboard(
        "mailmon-ingestion",
        "Mailmon / Ingestion health",
        "Is every source still flowing into mailmon: lines read, events stored, input rejected, lag.",
        [
            ("Service", [
                stat("Mailmon up", "Prometheus' scrape of mailmon (MailmonDown fires after 5 minutes at 0).",
                     q('min(up{job="mailmon"})', instant=True),
                     thresholds=[(None, "red"), (1, "green")]),
                stat("Version", "mailmon_build_info.",
                     q("count by (version) (mailmon_build_info)", "{{version}}", instant=True), w=4),
                stat("Oldest source lag", "Seconds since the newest event of the quietest source (MailmonIngestionStalled: 30 min).",
                     q(f"max(time() - mailmon_source_last_event_timestamp_seconds{sel})", instant=True),
                     unit="s", thresholds=[(None, "green"), (900, "orange"), (1800, "red")]),
                stat("Bytes behind", "Written to followed logs and not read yet (log sources only, whatever the source selection).",
                     q("sum(mailmon_source_bytes_behind)", instant=True), unit="bytes"),
            ]),
            ("Flow", [
                timeseries("Events stored per second", "New events per source (duplicates are not counted).",
                           q(f"sum by (source) (rate(mailmon_events_ingested_total{sel}[$__rate_interval]))", "{{source}}")),
                timeseries("Log lines read per second", "Lines read from followed logs per source.",
                           q(f"sum by (source) (rate(mailmon_source_lines_total{sel}[$__rate_interval]))", "{{source}}")),
                timeseries("Input rejected per minute", "Input that could not become events, by reason (unparsed, bad_signature, too_large ...).",
                           q(f"sum by (source, reason) (rate(mailmon_events_rejected_total{sel}[$__rate_interval])) * 60", "{{source}} {{reason}}")),
                timeseries("Duplicates per minute", "Events the store already had: input read again (a re-ingested file, a webhook the provider retried). Stored once; a steady flow means a sender retries what was acknowledged.",
                           q(f"sum by (source) (rate(mailmon_events_duplicate_total{sel}[$__rate_interval])) * 60", "{{source}}")),
                timeseries("Source lag", "Seconds between now and the newest event of each source.",
                           q(f"time() - max by (source) (mailmon_source_last_event_timestamp_seconds{sel})", "{{source}}"), unit="s"),
            ]),
        ],
        [SOURCE],
    )  # fmt: skip


DASHBOARDS = (overview, domain, bounces, latency, ingestion)


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    out = {}
    for build in DASHBOARDS:
        board = build()
        out[f"{board['uid']}.json"] = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
    return out


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (HERE / n).is_file()
                 or (HERE / n).read_text("utf-8") != text]  # fmt: skip
        extra = {p.name for p in HERE.glob("*.json")} - set(files)
        for name in sorted({*stale, *extra}):
            print(f"{name}: out of date; run python dashboards/generate.py", file=sys.stderr)
        return 1 if stale or extra else 0
    for name, text in files.items():
        (HERE / name).write_text(text, "utf-8")
    return 0


# ---------------------------------------------------------------------------- seed placement


def placement() -> dict:
    """Seed-inbox probes (docs/seeds.md): where our mail lands per provider."""
    sel = '{provider=~"$seed_provider"}'
    measured = 'provider=~"$seed_provider", placement!="error"'
    return dashboard(
        "mailmon-placement",
        "Mailmon / Inbox placement",
        "Seed-inbox probes: the share that reached the inbox per provider, where the rest went, time to inbox, and seed mailboxes that could not be read.",
        [
            ("Placement (6 h)", [
                stat("Inbox rate", "Probes in the inbox or a Gmail tab over the probes whose mailbox could be read, last 6 hours (MailmonSeedPlacementLow: under 80 % with at least 6 probes).",
                     q(f"min(provider:mailmon_seed_inbox_ratio:rate6h{sel})", instant=True),
                     unit="percentunit", thresholds=[(None, "red"), (0.8, "orange"), (0.95, "green")], w=6),
                stat("Probes", "Probes placed in the last 6 hours (one per seed and run).",
                     q(f"sum(increase(mailmon_seed_probes_total{sel}[6h]))", instant=True), w=6),
                stat("In spam", "Probes filed as spam in the last 6 hours.",
                     q(f"sum(increase(mailmon_seed_probes_total{{{measured}, placement=\"spam\"}}[6h])) or 0 * sum(increase(mailmon_seed_probes_total{sel}[6h]))", instant=True),
                     thresholds=[(None, "green"), (1, "red")], w=6),
                stat("Unreadable", "Probes whose seed mailbox could not be read or that were not submitted (placement error: wrong password, expired token, server down, no spam folder); fix [seeds], see `mailmon probe results`.",
                     q(f"sum(increase(mailmon_seed_probes_total{{provider=~\"$seed_provider\", placement=\"error\"}}[6h])) or 0 * sum(increase(mailmon_seed_probes_total{sel}[6h]))", instant=True),
                     thresholds=[(None, "green"), (1, "orange")], w=6),
            ]),
            ("By provider", [
                timeseries("Inbox rate by provider (6 h)", "The recording rule behind MailmonSeedPlacementLow.",
                           q(f"provider:mailmon_seed_inbox_ratio:rate6h{sel}", "{{provider}}"), unit="percentunit"),
                timeseries("Placements per hour", "Where the probes landed: inbox, tab:NAME (Gmail), spam, trash, missing (not found before the timeout), error.",
                           q(f"sum by (placement) (increase(mailmon_seed_probes_total{sel}[1h]))", "{{placement}}"), stack=True),
                table("Placements by provider (24 h)", "Probes per provider and placement over the last day.",
                      q(f"sum by (provider, placement) (increase(mailmon_seed_probes_total{sel}[24h]))", instant=True, fmt="table")),
                timeseries("Time to inbox p50 and p95 (6 h)", "Submission to arrival (IMAP INTERNALDATE), probes found in the inbox or a tab.",
                           q(f"histogram_quantile(0.5, sum by (provider, le) (rate(mailmon_seed_time_to_inbox_seconds_bucket{sel}[6h])))", "{{provider}} p50"),
                           q(f"histogram_quantile(0.95, sum by (provider, le) (rate(mailmon_seed_time_to_inbox_seconds_bucket{sel}[6h])))", "{{provider}} p95"), unit="s"),
            ]),
        ],
        [variable("seed_provider", "Provider", "label_values(mailmon_seed_probes_total, provider)")],
    )  # fmt: skip


DASHBOARDS = (*DASHBOARDS, placement)
# ---------------------------------------------------------------------------- DMARC and posture

HEADER_FROM = variable("header_from", "From: domain", "label_values(mailmon_dmarc_messages_total, header_from)")


def dmarc_posture() -> dict:
    """DMARC aggregate and TLS reports (they arrive daily: panels sum the last day), DNS
    posture checks and DNSBL listings of the dns_check job."""
    sel = '{header_from=~"$header_from"}'
    failing = '{header_from=~"$header_from", dkim_aligned="false", spf_aligned="false"}'
    return dashboard(
        "mailmon-dmarc-posture",
        "Mailmon / DMARC and posture",
        "Who sends as our domains and do receivers trust us: DMARC and SMTP TLS reports, SPF/DKIM/DMARC/MTA-STS posture, DNS blocklists.",
        [
            ("DMARC (aggregate reports, last day)", [
                timeseries("DMARC pass rate by domain", "Share of the messages reported in the last day with DKIM or SPF aligned and passing (MailmonDmarcFailures fires under 95% with at least 100 messages).",
                           q(f"1 - header_from:mailmon_dmarc_fail_ratio:rate1d{sel}", "{{header_from}}"), unit="percentunit", w=8),
                timeseries("Dispositions", "Messages reported in the last day by what the receivers did with them (none, quarantine, reject).",
                           q(f"sum by (disposition) (increase(mailmon_dmarc_messages_total{sel}[1d]))", "{{disposition}}"), w=8, stack=True),
                timeseries("Failing DMARC by domain", "Messages reported in the last day with neither DKIM nor SPF aligned: our unconfigured senders, or spoofing.",
                           q(f"sum by (header_from) (increase(mailmon_dmarc_messages_total{failing}[1d]))", "{{header_from}}"), w=8),
            ]),
            ("SMTP TLS reports (last day)", [
                timeseries("TLS-RPT failed sessions", "Failed SMTP TLS sessions to our MX reported in the last day, by policy domain and RFC 8460 result type.",
                           q("sum by (policy_domain, result_type) (increase(mailmon_tlsrpt_failed_sessions_total[1d]))", "{{policy_domain}} {{result_type}}"), w=12),
                timeseries("TLS-RPT sessions", "Successful and failed SMTP TLS sessions reported in the last day, by policy domain.",
                           q("sum by (policy_domain, result) (increase(mailmon_tlsrpt_sessions_total[1d]))", "{{policy_domain}} {{result}}"), w=12),
            ]),
            ("DNS posture", [
                table("Posture checks", "The dns_check job's last verdict per domain and check: 1 pass, 0.5 warn, 0 fail (`mailmon dns check DOMAIN` gives the reasons).",
                      q("min by (domain, check) (mailmon_dns_check)", instant=True, fmt="table"), w=10, h=10),
                panel("state-timeline", "Posture over time", "Each check's verdict over time: a change to warn or fail after a DNS edit shows here (MailmonDnsPostureRegressed).",
                      [q("min by (domain, check) (mailmon_dns_check)", "{{domain}} {{check}}")], w=10, h=10,
                      options={"showValue": "never", "mergeValues": True},
                      defaults={"mappings": [{"type": "value", "options": {
                          "1": {"text": "pass", "color": "green"}, "0.5": {"text": "warn", "color": "orange"},
                          "0": {"text": "fail", "color": "red"}}}]}),
                stat("Regressed checks", "Checks worse than before their last change (MailmonDnsPostureRegressed).",
                     q("sum(mailmon_dns_check_regressed)", instant=True), thresholds=[(None, "green"), (1, "red")], w=4, h=5),
                stat("Lookup errors (1h)", "Checks and DNSBL lookups that got no usable answer in the last hour (timeouts, SERVFAIL, a list refusing our resolver).",
                     q("sum(increase(mailmon_dns_lookup_errors_total[1h])) or vector(0)", instant=True), thresholds=[(None, "green"), (1, "orange")], w=4, h=5),
            ]),
            ("DNS blocklists", [
                stat("Listings now", "Our sending IPs and domains listed, summed over the lists (MailmonDnsblListed).",
                     q("sum(mailmon_dnsbl_listed)", instant=True), thresholds=[(None, "green"), (1, "red")], w=4, h=8),
                table("DNSBL listings", "Per sending IP or domain and list (zone): 1 listed, 0 not.",
                      q("max by (target, list) (mailmon_dnsbl_listed)", instant=True, fmt="table"), w=8),
                incidents("Listings over time", "When each target was listed on each list.",
                          q("max by (target, list) (mailmon_dnsbl_listed)", "{{target}} on {{list}}"), w=12),
            ]),
        ],
        [HEADER_FROM],
    )  # fmt: skip


DASHBOARDS = (*DASHBOARDS, dmarc_posture)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
