"""Alerts are code: rules pass promtool, every alert is tested, documented and routed."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ALERTS / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/mailmon/mailmon/blob/main/docs/runbook.md#"
INSTALL_HINT = (
    "install Debian's prometheus (promtool) and prometheus-alertmanager (amtool): "
    "sudo scripts/install-test-deps.sh"
)

# The alerts issue 5 asks for.
ISSUE_5_ALERTS = {
    "MailmonDomainRejecting",
    "MailmonBounceRateHigh",
    "MailmonComplaintRateHigh",
    "MailmonDeferralSpike",
    "MailmonDeliveryLatencyHigh",
    "MailmonIngestionStalled",
    "MailmonWebhookAuthFailures",
    "MailmonSeedPlacementLow",
    "MailmonDmarcFailures",
    "MailmonDnsblListed",
    "MailmonDown",
}
# Alerts on a 0/1 gauge or on `up`: no volume to guard, so no low-volume case. The rollup
# engine's incident gauges (domain rejecting, provider silent, queue stuck) carry their
# volume guards and statistical tests in the engine (tests/test_rollup*.py).
UNGUARDED = {
    "MailmonDomainRejecting",
    "MailmonProviderSilent",
    "MailmonQueueStuck",
    "MailmonDnsblListed",
    "MailmonDown",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: {INSTALL_HINT}")
    return path


def _check(args: list[str]) -> str:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout}{result.stderr}"
    return result.stdout


def _alerting_rules() -> list[dict[str, Any]]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def _recording_rules() -> list[dict[str, Any]]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(rule for rule in group["rules"] if "record" in rule)
    return rules


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    parts = re.findall(r"(\d+)([smhdw])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_rule_files_pass_promtool_check() -> None:
    """`promtool check rules` accepts every rule file."""
    assert RULE_FILES, "no alerts/*.rules.yml"
    _check([_tool("promtool"), "check", "rules", *map(str, RULE_FILES)])


def test_promtool_unit_tests_pass() -> None:
    """Every `promtool test rules` file in alerts/tests/ passes (run side by side)."""
    promtool = _tool("promtool")
    assert TEST_FILES, "no alerts/tests/*.yml"
    runs = {
        path.name: subprocess.Popen(
            [promtool, "test", "rules", str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for path in TEST_FILES
    }
    failures = []
    for name, run in runs.items():
        output, _ = run.communicate(timeout=300)
        if run.returncode != 0:
            failures.append(f"{name}:\n{output}")
    assert not failures, "\n".join(failures)


def test_alertmanager_config_passes_amtool() -> None:
    """`amtool check-config` accepts the example Alertmanager configuration."""
    _check([_tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG)])


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=MailmonDomainRejecting", "severity=critical"], "pager"),
        (["alertname=MailmonBounceRateHigh", "severity=warning"], "chat"),
        (["alertname=SomethingElse"], "chat"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    """Critical alerts go to the pager receiver, warnings and the rest to chat."""
    out = _check(
        [_tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
         *labels]
    )  # fmt: skip
    assert out.split() == [receiver]


def test_alertmanager_config_has_no_inline_secrets() -> None:
    """Receivers read their keys and URLs from files, never from the config itself."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for kind, integrations in receiver.items():
            if kind == "name":
                continue
            for integration in integrations:
                inline = {"url", "api_url", "routing_key", "service_key"} & set(integration)
                assert not inline, f"{receiver['name']}/{kind} has inline {inline}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text.strip() else None


def test_domain_rejecting_inhibits_bounce_and_deferral_alerts(tmp_path: Path) -> None:
    """A real Alertmanager with the example config mutes bounce/deferral alerts of the rejecting domain only, the domain alerts of a rejecting provider, and provider silence while ingestion is stalled; sending-IP alerts are neither muted nor grouped together."""
    binary = _tool("prometheus-alertmanager")
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    # Receivers without integrations: nothing leaves this machine.
    config["receivers"] = [{"name": receiver["name"]} for receiver in config["receivers"]]
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "alertmanager.log").open("w") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'alertmanager.yml'}",
             f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "alertmanager.log").read_text()
                assert time.monotonic() < deadline, "Alertmanager not ready after 15 s"
                time.sleep(0.05)

        def alert(name: str, severity: str, domain: str, provider: str) -> dict[str, Any]:
            labels = {"alertname": name, "severity": severity, "provider": provider}
            return {"labels": labels | {"domain": domain}}

        _http(
            f"{base}/api/v2/alerts",
            [
                alert("MailmonDomainRejecting", "critical", "gmail.com", "google"),
                alert("MailmonBounceRateHigh", "warning", "gmail.com", "google"),
                alert("MailmonDeferralSpike", "warning", "gmail.com", "google"),
                alert("MailmonDeferralSpike", "warning", "outlook.com", "microsoft"),
                alert("MailmonDeliveryLatencyHigh", "warning", "gmail.com", "google"),
                {"labels": {"alertname": "MailmonIngestionStalled", "severity": "warning",
                            "source": "postfix"}},
                {"labels": {"alertname": "MailmonProviderSilent", "severity": "warning",
                            "provider": "microsoft"}},
                alert("MailmonDomainRejecting", "critical", "hotmail.com", "microsoft"),
                {"labels": {"alertname": "MailmonProviderRejecting", "severity": "critical",
                            "provider": "yahoo"}},
                alert("MailmonDomainRejecting", "critical", "yahoo.com", "yahoo"),
                alert("MailmonDeferralSpike", "warning", "aol.com", "yahoo"),
                *({"labels": {"alertname": "MailmonSendingIpRejecting", "severity": "warning",
                              "provider": "microsoft", "sending_ip": ip}}
                  for ip in ("203.0.113.7", "203.0.113.8")),
            ],
        )
        expected = {
            ("MailmonDomainRejecting", "gmail.com"): "active",
            ("MailmonBounceRateHigh", "gmail.com"): "suppressed",
            ("MailmonDeferralSpike", "gmail.com"): "suppressed",
            ("MailmonDeferralSpike", "outlook.com"): "active",
            ("MailmonDeliveryLatencyHigh", "gmail.com"): "active",
            ("MailmonIngestionStalled", "postfix"): "active",
            ("MailmonProviderSilent", "microsoft"): "suppressed",  # blind, not silent
            ("MailmonDomainRejecting", "hotmail.com"): "active",
            # Yahoo rejecting us explains its domains: one page, for the provider.
            ("MailmonProviderRejecting", "yahoo"): "active",
            ("MailmonDomainRejecting", "yahoo.com"): "suppressed",
            ("MailmonDeferralSpike", "aol.com"): "suppressed",
            # A rejecting domain does not say which IP to pull, nor the reverse: both stay.
            ("MailmonSendingIpRejecting", "203.0.113.7"): "active",
            ("MailmonSendingIpRejecting", "203.0.113.8"): "active",
        }
        # Alertmanager marks inhibited alerts asynchronously: wait for it to settle.
        deadline = time.monotonic() + 15
        while True:
            states = {
                (a["labels"]["alertname"], _subject(a["labels"])): a["status"]["state"]
                for a in _http(f"{base}/api/v2/alerts")
            }
            if states == expected or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # Two listed IPs at one provider are two notifications, each with its own summary.
        ip_groups = [
            g["labels"] for g in _http(f"{base}/api/v2/alerts/groups")
            if g["labels"].get("alertname") == "MailmonSendingIpRejecting"
        ]
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert states == expected
    assert sorted(str(g.get("sending_ip")) for g in ip_groups) == ["203.0.113.7", "203.0.113.8"]


def _subject(labels: dict[str, str]) -> str:
    """What an alert is about: its sending IP or domain, else its provider, else its source."""
    return (labels.get("sending_ip") or labels.get("domain") or labels.get("provider")
            or labels.get("source", ""))


def test_issue_5_alerts_exist() -> None:
    """Every alert issue 5 names is defined."""
    assert {rule["alert"] for rule in _alerting_rules()} >= ISSUE_5_ALERTS


def test_every_alert_has_for_severity_and_annotations() -> None:
    """Every alerting rule has for:, a known severity, summary, description and runbook_url."""
    for rule in _alerting_rules():
        name = rule["alert"]
        assert _seconds(rule.get("for", "")) > 0, f"{name} has no for:"
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key), f"{name} has no {key}"
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), name


def test_runbook_urls_point_at_runbook_sections() -> None:
    """Every runbook_url anchor is a heading in docs/runbook.md."""
    anchors = {
        _anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in _alerting_rules():
        anchor = rule["annotations"]["runbook_url"].rpartition("#")[2]
        assert anchor in anchors, f"{rule['alert']}: no '# ...' heading for #{anchor}"


def test_recording_rules_follow_level_metric_operations() -> None:
    """Recording rule names read level:metric:operations and are unique."""
    names = [rule["record"] for rule in _recording_rules()]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"[a-z_]+:mailmon_[a-z_]+:[a-z0-9_]+", name), name


def _cases() -> dict[str, dict[str, bool]]:
    """Per alert: whether alerts/tests/ has a firing, a pending and a quiet group."""
    found: dict[str, dict[str, bool]] = {}
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text()).get("tests", []):
            pending_at: set[tuple[str, int]] = set()
            for expr_test in group.get("promql_expr_test", []):
                if 'alertstate="pending"' not in expr_test["expr"]:
                    continue
                for sample in expr_test.get("exp_samples", []):
                    name = re.search(r'alertname="(\w+)"', sample["labels"])
                    if name:
                        pending_at.add((name.group(1), _seconds(expr_test["eval_time"])))
            by_alert: dict[str, list[dict[str, Any]]] = {}
            for case in group.get("alert_rule_test", []):
                by_alert.setdefault(case["alertname"], []).append(case)
            for name, cases in by_alert.items():
                seen = found.setdefault(name, {"fires": False, "pending": False, "quiet": False})
                firing = [c for c in cases if c.get("exp_alerts")]
                for case in firing:
                    for expected in case["exp_alerts"]:
                        assert "severity" in expected.get("exp_labels", {}), (path.name, name)
                        keys = set(expected.get("exp_annotations", {}))
                        assert keys >= {"summary", "description", "runbook_url"}, (path, name)
                seen["fires"] |= bool(firing)
                seen["quiet"] |= not firing
                seen["pending"] |= any(
                    not c.get("exp_alerts") and (name, _seconds(c["eval_time"])) in pending_at
                    for c in cases
                )
    return found


def test_every_alert_has_cases_that_fire_pend_and_stay_quiet() -> None:
    """Each alert has a promtool case that fires with exact annotations, one pending inside for: (on ALERTS), and a low-volume one that stays quiet."""
    found = _cases()
    for name in sorted({rule["alert"] for rule in _alerting_rules()}):
        seen = found.get(name, {})
        assert seen.get("fires"), f"{name}: no case that fires"
        assert seen.get("pending"), f"{name}: no case pending inside for: (ALERTS, exp_alerts: [])"
        if name not in UNGUARDED:
            assert seen.get("quiet"), f"{name}: no test group where it stays quiet at low volume"


def test_domain_rejecting_group_evaluates_every_minute_and_its_tests_model_it() -> None:
    """MailmonDomainRejecting's group has `interval: 1m`, and every promtool file testing it evaluates every 1m too.

    promtool evaluates every group at the test file's `evaluation_interval`, not at the
    group's own interval, so a test file with another cadence would test a different rule.
    """
    groups = [
        group
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        if any(rule.get("alert") == "MailmonDomainRejecting" for rule in group["rules"])
    ]
    assert len(groups) == 1
    assert groups[0].get("interval") == "1m"
    testing = [
        path
        for path in TEST_FILES
        if any(
            case["alertname"] == "MailmonDomainRejecting"
            for group in yaml.safe_load(path.read_text()).get("tests", [])
            for case in group.get("alert_rule_test", [])
        )
    ]
    assert testing
    for path in testing:
        assert yaml.safe_load(path.read_text()).get("evaluation_interval") == "1m", path.name
