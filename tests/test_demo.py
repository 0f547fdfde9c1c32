"""`mailmon serve --demo` end to end, and the overview page in headless Chromium.

One real `mailmon serve --demo` in accelerated time: the simulator writes a Postfix log (read
by the real follower), posts signed Mailgun webhooks and drops a DMARC report; Gmail starts
rejecting 8 s in, and the real detector must open the incident, seen on /api/incidents,
/metrics, `mailmon incidents` and /.  Chromium (Debian's, through Playwright) loads the page
at desktop and phone widths, with no console error and no request to anywhere else, and runs
a search.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import chromium

ROOT = Path(__file__).resolve().parent.parent
#: ``MAILMON_UPDATE_SCREENSHOTS=1``: the test writes the README's screenshots to docs/.
SCREENSHOTS = ROOT / "docs" / "images"
INCIDENT_AFTER = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self, base: str, directory: Path, proc: subprocess.Popen[str]) -> None:
        self.base = base
        self.directory = directory
        self.proc = proc
        self.started = time.monotonic()
        self.db = f"sqlite:///{directory / 'mailmon.db'}"

    def incidents(self, **params: Any) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.base}/api/incidents", params=params, timeout=5)
        answer.raise_for_status()
        return list(answer.json())

    def wait_for_incident(self, timeout: float = 50.0) -> dict[str, Any]:
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            for item in self.incidents(open=1, kind="domain_rejecting"):
                if (item["provider"], item["domain"]) == ("google", "gmail.com"):
                    return item
            time.sleep(0.5)
        pytest.fail("no domain_rejecting incident for gmail.com within "
                    f"{timeout:.0f} s of the demo's start")  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`mailmon serve --demo` with 30 minutes of history written at 60 times real time."""
    home = tmp_path_factory.mktemp("demo")
    directory = home / "demo"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILMON_")}
    env["MAILMON_DATA_DIR"] = str(home / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "serve", "--demo", "--demo-dir", str(directory),
         "--port", str(port), "--demo-history", "30m", "--demo-speed", "60",
         "--demo-incident-after", f"{INCIDENT_AFTER}s"],
        cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            proc.kill()
            pytest.fail(f"serve --demo did not answer: {proc.communicate()[0]}")
        yield Demo(base, directory, proc)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, output
    assert "DEMO MODE" in output.splitlines()[0]
    assert "Traceback" not in output, output


def _sample(text: str, name: str, labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_demo_opens_the_incident_end_to_end(demo: Demo) -> None:
    """Gmail's 421 4.7.28 / 550 5.7.1 replies, read from the log by the real follower, open
    a domain_rejecting incident that /metrics, `mailmon incidents` and / all show."""
    incident = demo.wait_for_incident()
    took = time.monotonic() - demo.started
    print(f"incident opened {took:.1f} s after the demo started")
    replies = json.dumps(incident["evidence"])
    assert "4.7.28" in replies or "5.7.1" in replies
    metrics = httpx.get(f"{demo.base}/metrics", timeout=5).text
    assert _sample(metrics, "mailmon_domain_rejecting", 'domain="gmail.com",provider="google"') == 1
    assert _sample(metrics, "mailmon_domain_rejecting", 'domain="yahoo.com",provider="yahoo"') == 0
    # every simulated source went through its real collector
    assert (_sample(metrics, "mailmon_events_ingested_total", 'source="postfix"') or 0) > 1000
    assert (_sample(metrics, "mailmon_events_ingested_total", 'source="mailgun"') or 0) > 10
    done = list((demo.directory / "dmarc" / "done").glob("*.xml"))
    assert len(done) == 1, "the DMARC report was read and moved"
    listed = subprocess.run(
        [sys.executable, "-m", "monitor", "incidents", "--open", "--json", "--db", demo.db],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert incident["id"] in [i["id"] for i in json.loads(listed.stdout)]
    html = httpx.get(f"{demo.base}/", timeout=5).text
    assert f'<tr data-id="{incident["id"]}"><td class="bad">domain_rejecting</td>' in html


def _message_id(log: Path) -> str:
    """A Message-ID the demo's log carries (its first)."""
    with log.open(encoding="utf-8") as lines:
        for line in lines:
            if found := re.search(r"message-id=<([^>]+)>", line):
                return found.group(1)
    pytest.fail("no Message-ID in the demo's log")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


@pytest.mark.parametrize("width,height,name", [(1280, 900, "desktop"), (390, 844, "phone")])
def test_page_in_chromium(demo: Demo, browser: Any, tmp_path: Path, width: int, height: int,
                          name: str) -> None:  # fmt: skip
    """The page loads with no console message of error level and no request to any other
    origin; its incident table is /api/incidents' open incidents; a search finds a message."""
    demo.wait_for_incident()
    page = browser.new_page(viewport={"width": width, "height": height})
    console: list[tuple[str, str]] = []
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: console.append((m.type, m.text)))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    before = {i["id"] for i in demo.incidents(open=1)}
    started = time.monotonic()
    answer = page.goto(f"{demo.base}/", wait_until="load")
    load_seconds = time.monotonic() - started
    after = {i["id"] for i in demo.incidents(open=1)}
    assert answer is not None and answer.status == 200
    shown = {int(x) for x in page.eval_on_selector_all(
        "#open-incidents tbody tr", "rows => rows.map(r => r.dataset.id)")}  # fmt: skip
    # Incidents may open or close while the page loads: it shows those open at some moment
    # between the two reads of the API.
    assert before & after <= shown <= before | after
    assert page.locator("#provider-rates tbody tr[data-provider=google]").count() == 1
    assert page.locator("svg.spark").count() >= 2
    shot = tmp_path / f"overview-{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    # the search box runs trace
    wanted = _message_id(demo.directory / "mail.log")
    page.get_by_label("Trace").fill(wanted)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"/trace\?q="))
    assert page.locator("#trace [role=status]").inner_text() == "1 delivery found."
    assert wanted in page.locator("h3.delivery").inner_text()
    assert page.locator("#timeline-0 tbody tr").count() >= 2
    if os.environ.get("MAILMON_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(exist_ok=True)
        shutil.copy(shot, SCREENSHOTS / shot.name)
    page.close()
    print(f"{name}: / loaded in {load_seconds:.2f} s")
    assert [m for m in console if m[0] in ("error", "warning")] == []
    assert errors == []
    assert requests and all(url.startswith(demo.base + "/") for url in requests), requests


def test_first_run_picks_the_demo_only_on_a_fresh_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` (serve --first-run): the demo with no config, no store and no readable
    system log; the system log when it is readable; the configuration otherwise."""
    from monitor.cli import build_parser, serve
    from monitor.cli.common import config_of

    monkeypatch.chdir(tmp_path)
    for name in ("MAILMON_CONFIG", "MAILMON_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILMON_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(serve, "SYSTEM_LOG", str(tmp_path / "mail.log"))

    def mode(*argv: str) -> str:
        args = build_parser().parse_args(["serve", "--first-run", *argv])
        return serve._first_run(args, config_of(args))

    assert mode() == "demo"
    assert mode("--db", f"sqlite:///{tmp_path / 'x.db'}") == "configured"
    (tmp_path / "mail.log").write_text("")
    assert mode() == "system-log"
    (tmp_path / "mail.log").unlink()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mailmon.db").write_text("")
    assert mode() == "configured"  # a store from earlier runs is served, not replaced
    (tmp_path / "data" / "mailmon.db").unlink()
    (tmp_path / "mailmon.toml").write_text('[service]\nlisten_port = 8465\n')
    assert mode() == "configured"


def test_simulated_traffic_is_the_same_for_a_seed_and_rejects_only_at_gmail() -> None:
    """Same seed, same lines in time order; Gmail's 4.7.28 / 5.7.1 replies only from the
    incident on, and no other provider's."""
    from monitor.demo.traffic import PostfixTraffic

    start = 1_800_000_000.0

    def run() -> list[str]:
        traffic = PostfixTraffic(seed=3, per_minute=240, start=start, incident_at=start + 600)
        return [line for t in range(60, 1260, 60) for line in traffic.advance(start + t)]

    lines = run()
    assert lines == run()
    stamps = [line.split(" ", 1)[0] for line in lines]
    assert stamps == sorted(stamps)
    rejecting = [line for line in lines if "4.7.28" in line or "5.7.1" in line]
    assert rejecting and all("to=<customer" in x and "@gmail.com>" in x for x in rejecting)
    incident = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + 600))
    assert min(line.split(" ", 1)[0] for line in rejecting) >= incident


def test_docs_metrics_lists_what_the_real_service_exposes(demo: Demo) -> None:
    """Every metric family a running `mailmon serve` exposes (its followed log, webhooks,
    DMARC job and detectors all at work) is in docs/metrics.md with the same type."""
    from prometheus_client.parser import text_string_to_metric_families

    demo.wait_for_incident()
    documented = dict(re.findall(r"^\| `(mailmon_[a-z_]+)` \| (\w+) \|",
                                 (ROOT / "docs" / "metrics.md").read_text(), re.M))  # fmt: skip
    text = httpx.get(f"{demo.base}/metrics", timeout=5).text
    exposed = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("mailmon_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            exposed[name] = family.type
    assert len(exposed) >= 15
    assert {n: t for n, t in exposed.items() if documented.get(n) != t} == {}


def test_demo_empties_only_its_own_directory(tmp_path: Path) -> None:
    """--demo-dir naming a directory with other files in it is refused, nothing removed; the
    demo's own directory is emptied at each start."""
    from monitor.demo import MARKER, DemoSettings, prepare
    from monitor.errors import ConfigError

    foreign = tmp_path / "log"
    foreign.mkdir()
    (foreign / "mail.log").write_text("someone's mail log\n")
    with pytest.raises(ConfigError, match="not a demo directory"):
        prepare(DemoSettings(directory=foreign))
    assert (foreign / "mail.log").read_text() == "someone's mail log\n"
    own = DemoSettings(directory=tmp_path / "demo")
    prepare(own)
    assert (own.directory / MARKER).exists()
    (own.directory / "mail.log").write_text("old demo lines\n")
    prepare(own)
    assert (own.directory / "mail.log").read_text() == ""
