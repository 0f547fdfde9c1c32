"""The weekly report delivered: rendered by headless Chromium, mailed to a real SMTP server
on 127.0.0.1, and sent once per week by the job across runs and restarts."""

from __future__ import annotations

import base64
import email
import email.policy
import re
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from browser import chromium
from report_store import NOW, WEEK, build_store
from servers.smtp_sink import SmtpSink

from monitor.cli import main
from monitor.config import Config, ReportConfig, load_config
from monitor.jobs import Scheduler, builtin
from monitor.report import ReportSendError, build, parse_week
from monitor.report.job import CHECKPOINT, weekly_report
from monitor.store import Store

CHARTS = {"providers", "domains", "complaints", "latency", "blame", "seeds"}


@pytest.fixture
def filled(sqlite_url: str) -> Iterator[Store]:
    with Store.open(sqlite_url) as store:
        build_store(store)
        yield store


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink({}) as server:
        yield server


def _config(port: int, **extra: object) -> Config:
    settings = {"relay_host": "127.0.0.1", "relay_port": port, "starttls": False,
                "from_address": "mailmon@example.com",
                "to": ("ops@example.com", "deliverability@example.com")} | extra
    return Config(report=ReportConfig.model_validate(settings))


def _parse(content: bytes) -> EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _inline(message: EmailMessage) -> str:
    """The message's HTML with each ``cid:`` image as a data URI, as a mail client shows it."""
    html = message.get_body(("html",))
    assert html is not None
    text = html.get_content()
    for part in message.walk():
        if part.get_content_type() == "image/png":
            data = base64.b64encode(part.get_content()).decode()
            text = text.replace(f'src="cid:{part["Content-ID"].strip("<>")}"',
                                f'src="data:image/png;base64,{data}"')
    return text


def test_html_renders_in_headless_chromium(filled: Store, tmp_path: Path) -> None:
    """The file and the mail's HTML load in Chromium without console errors, every chart loaded."""
    report = build(filled, Config(), parse_week(WEEK, "UTC"), now=NOW)
    out = tmp_path / "out"
    report.write(out)
    page_html = (out / f"report-{WEEK}.html").read_text()
    mail_html = report.html()
    for html in (page_html, mail_html):  # nothing a mail client would block or run
        assert "<script" not in html and "<style" not in html and "<link" not in html
        assert not re.search(r"""(src|href)=["']https?:""", html)
    assert set(re.findall(r'src="cid:([a-z]+)"', mail_html)) == CHARTS
    received = _parse(report.message(ReportConfig()).as_bytes())
    console: list[tuple[str, str]] = []
    errors: list[str] = []
    seen = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 800, "height": 1000})
        page.on("console", lambda m: console.append((m.type, m.text)))
        page.on("pageerror", lambda e: errors.append(str(e)))
        for name, load in (("file", lambda: page.goto((out / f"report-{WEEK}.html").as_uri(),
                                                      wait_until="load")),
                           ("mail", lambda: page.set_content(_inline(received),
                                                             wait_until="load"))):
            load()
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
            shot = tmp_path / f"{name}.png"
            page.screenshot(path=str(shot), full_page=True)
            seen.append((name, page.title(), images, shot.read_bytes()))
    assert errors == [] and [c for c in console if c[0] in ("error", "warning")] == []
    for name, title, images, png in seen:
        assert title == f"Deliverability report {WEEK}", name
        assert len(images) == len(CHARTS), (name, images)
        assert all(complete and width > 300 for _, complete, width in images), (name, images)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000, name


def test_send_reaches_an_smtp_server_with_both_parts_images_and_csv(
    filled: Store, sqlite_url: str, sink: SmtpSink, tmp_path: Path
) -> None:
    """--send mails one message: text and HTML parts, the inline PNGs, the suppression CSV."""
    path = tmp_path / "mailmon.toml"
    path.write_text(f'[report]\nrelay_host = "127.0.0.1"\nrelay_port = {sink.port}\n'
                    'starttls = false\nfrom_address = "mailmon@example.com"\n'
                    'to = ["ops@example.com"]\n')
    assert main(["report", "weekly", "--week", WEEK, "--send", "--config", str(path),
                 "--db", sqlite_url]) == 0
    assert len(sink.accepted) == 1
    got = sink.accepted[0]
    assert got.mail_from == "mailmon@example.com" and got.rcpt_tos == ("ops@example.com",)
    message = _parse(got.content)
    assert message["Subject"] == f"Deliverability {WEEK}: bounces 5.29%, complaints 1.250%"
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and "THE WEEK IN NUMBERS" in plain.get_content()
    assert html is not None and "Weekly deliverability report" in html.get_content()
    images = {part["Content-ID"].strip("<>"): part.get_content()
              for part in message.walk() if part.get_content_type() == "image/png"}
    assert set(images) == CHARTS
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in images.values())
    assert set(re.findall(r'src="cid:([a-z]+)"', html.get_content())) == set(images)
    attachments = list(message.iter_attachments())
    assert [a.get_filename() for a in attachments] == [f"suppress-{WEEK}.csv"]
    rows = attachments[0].get_content().splitlines()
    assert rows[0] == "recipient,why,reason,last_seen" and len(rows) == 7


def test_the_job_mails_each_week_once_across_runs_and_restarts(
    sqlite_url: str, sink: SmtpSink
) -> None:
    """Run twice, then again after a restart: one mail for the week; the next week gets its own."""
    config = _config(sink.port)
    with Store.open(sqlite_url) as store:
        build_store(store)
        job = weekly_report(config, store, clock=lambda: NOW)
        job()
        job()
        assert len(sink.accepted) == 1
        assert store.checkpoint(CHECKPOINT) == {"week": WEEK, "at": NOW, "mailed": True}
    with Store.open(sqlite_url) as store:  # a restarted serve: a new job, the same store
        weekly_report(config, store, clock=lambda: NOW + 3600)()
        assert len(sink.accepted) == 1
        weekly_report(config, store, clock=lambda: NOW + 7 * 86400)()
        assert len(sink.accepted) == 2
        assert store.checkpoint(CHECKPOINT)["week"] == "2026-W48"
    subjects = [_parse(a.content)["Subject"] for a in sink.accepted]
    assert subjects[0].startswith(f"Deliverability {WEEK}")
    assert subjects[1].startswith("Deliverability 2026-W48")
    assert set(sink.accepted[0].rcpt_tos) == {"ops@example.com", "deliverability@example.com"}


def test_serve_runs_the_job_once_for_its_slot_across_instances_and_restarts(
    sqlite_url: str, sink: SmtpSink
) -> None:
    """As serve schedules it: two instances after Monday 08:00 mail once; a restart, not again."""
    config = _config(sink.port)
    with Store.open(sqlite_url) as store:
        work = {"rollup": lambda: None, "top_domains": lambda: None,
                "weekly_report": builtin.weekly_report(config, store)}

        def serve(at: float, instance: str) -> Scheduler:
            jobs = [j for j in builtin.jobs_for(config, work) if j.name == "weekly_report"]
            assert jobs and jobs[0].description.startswith("cron 0 8 * * mon")
            return Scheduler(store.engine, jobs, instance=instance, clock=lambda: at)

        def run(*schedulers: Scheduler, now: bool = False, wait: float = 3.0) -> None:
            """Start, wait up to ``wait`` s for a mail more than before, stop."""
            seen = len(sink.accepted)
            for s in schedulers:
                s.start()
            try:
                if now:
                    schedulers[0].run_now("weekly_report")
                deadline = time.monotonic() + wait
                while len(sink.accepted) == seen and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.3)
            finally:
                for s in schedulers:
                    s.stop()

        run(serve(NOW - 86400, "a"))  # first scheduled on the Sunday: nothing due
        assert sink.accepted == []
        run(serve(NOW + 3600, "a"), serve(NOW + 3600, "b"), wait=20)  # both start after the slot
        assert len(sink.accepted) == 1
        run(serve(NOW + 7200, "a"), now=True)  # restarted, and asked to run now
        assert len(sink.accepted) == 1


def test_a_refused_send_leaves_the_week_to_the_next_run(
    sqlite_url: str, sink: SmtpSink, tmp_path: Path
) -> None:
    """A relay that cannot be reached fails the run, the week stays unmarked, the next run mails."""
    with Store.open(sqlite_url) as store:
        build_store(store)
        with SmtpSink({}) as gone:
            port = gone.port
        down = weekly_report(_config(port, out_directory=str(tmp_path / "reports")), store,
                             clock=lambda: NOW)
        with pytest.raises(ReportSendError, match="did not take the report"):
            down()
        assert store.checkpoint(CHECKPOINT) is None
        assert (tmp_path / "reports" / WEEK / f"report-{WEEK}.html").is_file()
        weekly_report(_config(sink.port), store, clock=lambda: NOW)()
        assert len(sink.accepted) == 1


def test_a_half_configured_relay_is_refused_before_serve_starts(tmp_path: Path) -> None:
    """A relay without a sender or recipients stops serve at start, naming the missing keys."""
    path = tmp_path / "mailmon.toml"
    path.write_text('[report]\nrelay_host = "127.0.0.1"\n')
    config = load_config(path)
    from monitor.errors import ConfigError

    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store, pytest.raises(
            ConfigError, match="from_address, to"):
        builtin.weekly_report(config, store)
