"""Seed probes without servers: header verdicts, the probe message, config and secrets,
the placement metrics, and MailmonSeedPlacementLow fed by the metric the code exports."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.collectors.seeds.headers import parse_headers, received_time, tab_of_labels, verdicts
from monitor.collectors.seeds.message import build_probe
from monitor.collectors.seeds.records import SeedPlacement
from monitor.collectors.seeds.settings import SeedConfig, SeedsConfig, TemplateConfig
from monitor.errors import ConfigError
from monitor.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]

MICROSOFT_COPY = b"""\
Received: from EUR05.prod.outlook.com (2603:10a6::1) by AM0PR.outlook.com with HTTPS;\r
 Tue, 3 Mar 2026 10:15:42 +0000\r
Received: from mta.app.test (203.0.113.5) by EUR05.prod.outlook.com; Tue, 3 Mar 2026 10:15:40 +0000\r
Authentication-Results: spf=pass (sender IP is 203.0.113.5) smtp.mailfrom=app.test;\r
 dkim=pass (signature was verified) header.d=app.test;dmarc=pass action=none\r
 header.from=app.test;compauth=pass reason=100\r
Authentication-Results: relay.app.test; dkim=fail; spf=fail\r
X-MS-Exchange-Organization-SCL: 1\r
X-Forefront-Antispam-Report: CIP:203.0.113.5;CTRY:NL;LANG:en;SCL:1;SRV:;IPV:NLI;SFV:NSPM\r
List-Unsubscribe: <mailto:u@app.test>, <https://app.test/u/1>\r
X-Mailmon-Probe: 00112233445566778899aabb\r
Message-ID: <probe.00112233445566778899aabb@app.test>\r
Date: Mon, 1 Jan 2024 00:00:00 +0000\r
\r
"""


def test_top_authentication_results_spam_headers_and_unsubscribe() -> None:
    """The receiver's (topmost) Authentication-Results decides, folded lines included;
    spam headers are kept; List-Unsubscribe without its -Post header is not one-click."""
    v = verdicts(parse_headers(MICROSOFT_COPY))
    assert (v.spf, v.dkim, v.dmarc, v.compauth) == ("pass", "pass", "pass", "pass")
    assert v.spam == ("X-MS-Exchange-Organization-SCL: 1; X-Forefront-Antispam-Report: "
                      "CIP:203.0.113.5;CTRY:NL;LANG:en;SCL:1;SRV:;IPV:NLI;SFV:NSPM")  # fmt: skip
    assert v.list_unsubscribe and not v.one_click
    assert v.token == "00112233445566778899aabb"
    assert v.message_id == "probe.00112233445566778899aabb@app.test"


def test_received_time_is_the_receivers_never_the_date_header() -> None:
    """The top Received header's time (folded), not the sender's Date."""
    when = received_time(parse_headers(MICROSOFT_COPY))
    assert when == datetime(2026, 3, 3, 10, 15, 42, tzinfo=UTC)
    assert received_time(parse_headers(b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n")) is None


def test_no_headers_no_verdicts() -> None:
    """A copy without any of them: nothing invented."""
    v = verdicts(parse_headers(b"Subject: hi\r\n\r\n"))
    assert (v.spf, v.dkim, v.dmarc, v.compauth, v.spam) == (None,) * 5
    assert not v.list_unsubscribe and not v.one_click


@pytest.mark.parametrize(("labels", "tab"), [
    ([b"\\Inbox", b"\\Important"], None),
    ([b"\\Inbox", b"^smartlabel_promo"], "promotions"),
    (["CATEGORY_SOCIAL"], "social"),
    ([b'"^smartlabel_notification"'], "updates"),
    ([b"^smartlabel_group"], "forums"),
    ([b"^smartlabel_personal"], "primary"),
])  # fmt: skip
def test_gmail_tab_from_labels(labels: list[bytes | str], tab: str | None) -> None:
    """X-GM-LABELS category labels name the tab (both spellings Gmail uses)."""
    assert tab_of_labels(labels) == tab


def test_probe_message_carries_token_marker_and_one_click() -> None:
    """Token header, subject marker, own Message-ID at the sender's domain, RFC 8058 header."""
    at = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    probe = build_probe(
        run_id="r1", seed="s@gmail.com", provider="google", sender="probe@app.test",
        sender_name="App", at=at, token="ab" * 12,
        template=TemplateConfig(subject="Your receipt", text="Thanks\n", html="<p>Thanks</p>"),
        list_unsubscribe=("mailto:u@app.test", "https://app.test/u"),
    )  # fmt: skip
    m = probe.message
    assert m["X-Mailmon-Probe"] == "ab" * 12 and probe.token == "ab" * 12
    assert m["Subject"] == "Your receipt [abababab]"
    assert m["Message-ID"] == f"<probe.{'ab' * 12}@app.test>"
    assert probe.message_id == f"probe.{'ab' * 12}@app.test"
    assert m["List-Unsubscribe"] == "<mailto:u@app.test>, <https://app.test/u>"
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert m["From"] == "App <probe@app.test>" and m.is_multipart()
    other = build_probe(run_id="r1", seed="t@gmail.com", provider="google", sender="p@app.test",
                        sender_name=None, at=at, template=TemplateConfig(subject="x", text="y"))  # fmt: skip
    assert other.token != probe.token and "List-Unsubscribe" not in other.message


def _seed(**kw: object) -> SeedConfig:
    base: dict[str, object] = {"address": "s@gmail.com", "imap_host": "imap.gmail.com",
                               "password_env": "SEED_TEST_PW"}  # fmt: skip
    return SeedConfig.model_validate({**base, **kw})


def test_providers_by_common_name_and_bounded() -> None:
    """gmail/outlook/icloud/own map to the provider label; anything else is refused."""
    assert [_seed(provider=p).provider for p in ("gmail", "Outlook", "icloud", "own", "gmx")] \
        == ["google", "microsoft", "apple", "other", "gmx"]  # fmt: skip
    with pytest.raises(ValueError, match="unknown provider 'hotmale'"):
        _seed(provider="hotmale")
    with pytest.raises(ValueError, match="password_env or password_file"):
        SeedConfig.model_validate({"address": "s@x.test", "imap_host": "h"})
    with pytest.raises(ValueError, match="need a sender"):
        SeedsConfig.model_validate({"mailboxes": [_seed().model_dump()]})
    assert _seed().port == 993 and _seed(imap_security="starttls").port == 143


def test_secrets_from_env_then_file_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variable wins when set, else the file; errors name the variable or file only."""
    secret = tmp_path / "pw"
    secret.write_text("from-file-s3cret\n")
    seed = _seed(password_file=str(secret))
    monkeypatch.delenv("SEED_TEST_PW", raising=False)
    assert seed.secret() == "from-file-s3cret"
    monkeypatch.setenv("SEED_TEST_PW", "from-env-s3cret")
    assert seed.secret() == "from-env-s3cret"
    monkeypatch.delenv("SEED_TEST_PW")
    secret.write_text("")
    with pytest.raises(ConfigError, match="is empty") as caught:
        seed.secret()
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError, match="SEED_TEST_PW is not set"):
        _seed().secret()


def _placement(provider: str, placement: str, at: datetime, n: int,
               seconds: float | None = None) -> SeedPlacement:  # fmt: skip
    return SeedPlacement("seeds", at, f"run{n}", f"s{n}@x.test", provider, f"t{n}", f"m{n}@x",
                         placement, seconds_to_inbox=seconds)  # fmt: skip


def test_placement_metrics_bounded() -> None:
    """Each new placement counts once by provider and placement; an unknown provider or
    placement is counted as other / error; time to inbox only for the inbox and tabs."""
    metrics = Metrics(CollectorRegistry())
    at = datetime(2026, 12, 6, tzinfo=UTC)
    metrics.observe_records([
        _placement("google", "inbox", at, 1, 12.0), _placement("google", "tab:promotions", at, 2, 40.0),
        _placement("google", "spam", at, 3, 5.0), _placement("nowhere", "inbox", at, 4, 1.0),
        _placement("yahoo", "sideways", at, 5),
    ])  # fmt: skip
    get = metrics.registry.get_sample_value
    assert get("mailmon_seed_probes_total", {"provider": "google", "placement": "inbox"}) == 1
    assert get("mailmon_seed_probes_total", {"provider": "google", "placement": "spam"}) == 1
    assert get("mailmon_seed_probes_total", {"provider": "other", "placement": "inbox"}) == 1
    assert get("mailmon_seed_probes_total", {"provider": "yahoo", "placement": "error"}) == 1
    assert get("mailmon_seed_time_to_inbox_seconds_count", {"provider": "google"}) == 2
    assert get("mailmon_seed_time_to_inbox_seconds_sum", {"provider": "google"}) == 52.0
    assert get("mailmon_seed_time_to_inbox_seconds_bucket", {"provider": "google", "le": "15.0"}) == 1


def _series(steps: list[list[tuple[str, str]]]) -> list[dict[str, str]]:
    """Feed one batch of placements per 10-minute step through the real metric; return
    promtool input series of every mailmon_seed_probes_total sample scraped at each step."""
    metrics = Metrics(CollectorRegistry())
    start = datetime(2026, 12, 6, tzinfo=UTC)
    scraped: list[dict[tuple[tuple[str, str], ...], float]] = []
    for i, batch in enumerate(steps):
        at = start + timedelta(minutes=10 * i)
        metrics.observe_records([_placement(p, where, at, i * 10 + j)
                                 for j, (p, where) in enumerate(batch)])  # fmt: skip
        samples = {}
        for family in metrics.registry.collect():
            for s in family.samples:
                if s.name == "mailmon_seed_probes_total":
                    samples[tuple(sorted(s.labels.items()))] = s.value
        scraped.append(samples)
    keys = sorted({k for step in scraped for k in step})
    out = []
    for key in keys:
        labels = ", ".join(f'{k}="{v}"' for k, v in key)
        # Before a label set's first probe the series does not exist yet: "_" in promtool.
        values = " ".join(str(int(step[key])) if key in step else "_" for step in scraped)
        out.append({"series": f"mailmon_seed_probes_total{{{labels}}}", "values": values})
    return out


def _promtool_case(tmp_path: Path, name: str, series: list[dict[str, str]], alerts: list[object]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: sudo scripts/install-test-deps.sh")
    test = {
        "rule_files": [str(ROOT / "alerts" / "recording.rules.yml"),
                       str(ROOT / "alerts" / "mailmon.rules.yml")],
        "evaluation_interval": "1m",
        "tests": [{"name": name, "interval": "10m", "input_series": series,
                   "alert_rule_test": [{"eval_time": "13h", "alertname": "MailmonSeedPlacementLow",
                                        "exp_alerts": alerts}]}],
    }  # fmt: skip
    path = tmp_path / "seed.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_fires_from_the_exported_metric(tmp_path: Path) -> None:
    """Probe runs every 10 minutes: Gmail in the inbox for 6 hours, then in spam; the
    series the code exports make MailmonSeedPlacementLow fire for google, not for yahoo."""
    steps = [[("google", "inbox" if i < 36 else "spam"), ("yahoo", "inbox")] for i in range(80)]
    _promtool_case(tmp_path, "fires from the exported metric", _series(steps), [{
        "exp_labels": {"severity": "warning", "provider": "google"},
        "exp_annotations": {
            "summary": "Only 0% of seed probes reach the inbox at google",
            "description": "0% of the seed-inbox probes sent to google in the last 6 hours landed "
            "in the inbox (threshold 80%, at least 6 probes); the rest went to spam or did not arrive.",
            "runbook_url": "https://github.com/mailmon/mailmon/blob/main/docs/runbook.md#mailmonseedplacementlow",
        },
    }])  # fmt: skip


def test_unreadable_mailboxes_and_tabs_do_not_fire(tmp_path: Path) -> None:
    """A seed mailbox that cannot be read (error) says nothing of placement, and Gmail's
    Promotions tab is the inbox: neither fires the alert."""
    steps = [[("google", "inbox" if i % 4 == 0 else "error"), ("google", "tab:promotions")]
             for i in range(80)]  # fmt: skip
    _promtool_case(tmp_path, "errors and tabs stay quiet", _series(steps), [])


class GmailFake:
    """What Gmail's IMAP answers (X-GM-EXT-1), for the branch no local server can run:
    LIST with RFC 6154 flags, X-GM-RAW search and X-GM-LABELS."""

    def __init__(self, labels: list[bytes], categories: dict[str, set[int]]) -> None:
        self.labels = labels
        self.categories = categories
        self.searched: list[list[object]] = []
        self.selected: list[tuple[str, bool]] = []

    def list_folders(self) -> list[tuple[tuple[bytes, ...], bytes, str]]:
        return [((b"\\HasNoChildren",), b"/", "INBOX"),
                ((b"\\HasNoChildren", b"\\Junk"), b"/", "[Gmail]/Spam"),
                ((b"\\HasNoChildren", b"\\Trash"), b"/", "[Gmail]/Trash")]  # fmt: skip

    def select_folder(self, name: str, readonly: bool = False) -> dict[bytes, object]:
        self.selected.append((name, readonly))
        return {}

    def search(self, criteria: list[object]) -> list[int]:
        self.searched.append(criteria)
        if criteria[0] == "X-GM-RAW" and self.selected[-1][0] == "INBOX":
            return [7]  # Gmail finds it by rfc822msgid: (HEADER search on a custom header did not)
        if criteria[0] == "UID":
            return [7] if 7 in self.categories.get(str(criteria[3]).split(":")[1], set()) else []
        return []

    def fetch(self, uids: list[int], items: list[bytes]) -> dict[int, dict[bytes, object]]:
        header = b"Message-ID: <probe.t1@app.test>\r\nX-Mailmon-Probe: t1\r\n\r\n"
        return {7: {b"BODY[HEADER]": header, b"INTERNALDATE": datetime(2026, 12, 6, tzinfo=UTC),
                    b"X-GM-LABELS": tuple(self.labels)}}  # fmt: skip


@pytest.mark.parametrize(("labels", "categories", "placement"), [
    ([b"\\Inbox", b"^smartlabel_promo"], {}, "tab:promotions"),
    ([b"\\Inbox"], {"social": {7}}, "tab:social"),
    ([b"\\Inbox", b"\\Important"], {}, "inbox"),
])  # fmt: skip
def test_gmail_tab_from_labels_then_category_search(
    labels: list[bytes], categories: dict[str, set[int]], placement: str
) -> None:
    """On Gmail a probe in INBOX is matched by X-GM-RAW rfc822msgid: when the header search
    finds nothing; its tab comes from X-GM-LABELS, else from X-GM-RAW category:NAME."""
    from monitor.collectors.seeds.imap import SeedMailbox

    box = SeedMailbox(_seed(), "secret")
    fake = GmailFake(labels, categories)
    box._client, box.gmail = fake, True
    [found] = box.find({"t1": "probe.t1@app.test"}).values()
    assert (found.placement, found.folder, found.uid) == (placement, "INBOX", 7)
    assert fake.selected[0] == ("INBOX", True)  # EXAMINE: read-only
    assert ["X-GM-RAW", "rfc822msgid:probe.t1@app.test"] in fake.searched
