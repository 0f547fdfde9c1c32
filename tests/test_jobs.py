"""The scheduler: interval and cron jobs, no overlap, one run per slot across restarts, failures."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.config import load_config
from monitor.errors import ConfigError
from monitor.jobs import Job, Scheduler
from monitor.jobs.catalog import effective, trigger_of
from monitor.jobs.scheduler import JOB_NICENESS
from monitor.jobs.triggers import cron_trigger, interval_trigger, next_slot
from monitor.metrics import Metrics
from monitor.store import Store
from monitor.store.jobs import read_jobs

MONDAY_8 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC).timestamp()  # a Monday
WEEKLY = "0 8 * * mon"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        yield s


@contextlib.contextmanager
def running(scheduler: Scheduler) -> Iterator[Scheduler]:
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.stop()


def _counter(metrics: Metrics, name: str, job: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"job": job})


def _weekly(store: Store, now: float, runs: list[str], instance: str = "a") -> Scheduler:
    """A weekly cron job that records which instance ran it, under a clock stopped at ``now``."""
    job = Job("report", lambda: runs.append(instance), cron_trigger(WEEKLY))
    return Scheduler(store.engine, [job], instance=instance, clock=lambda: now)


def _wait(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_interval_job_runs_and_its_success_is_recorded(store: Store) -> None:
    """An interval job runs again and again; its last success is on /metrics and in the store."""
    metrics = Metrics(CollectorRegistry())
    runs: list[float] = []
    job = Job("tick", lambda: runs.append(time.time()), interval_trigger(0.05), local=True)
    with running(Scheduler(store.engine, [job], metrics=metrics)):
        assert _wait(lambda: len(runs) >= 3)
    stored = read_jobs(store.engine)["tick"]
    assert stored.trigger == "every 0.05 s"
    assert stored.last_success_at is not None and stored.last_error is None
    assert _counter(metrics, "mailmon_job_last_success_timestamp_seconds", "tick") == pytest.approx(
        stored.last_success_at)
    assert _counter(metrics, "mailmon_job_failures_total", "tick") == 0


def test_jobs_run_at_a_lower_cpu_priority_than_the_service(sqlite_url: str) -> None:
    """A job's thread is niced (the rollup's reads must not take the cores from the webhook
    endpoints and the writer); the thread that started the scheduler is not."""
    seen: list[int] = []

    def job() -> None:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with Store.open(sqlite_url) as store, running(
        Scheduler(store.engine, [Job("nice", job, interval_trigger(0.05), local=True)])
    ):
        assert _wait(lambda: len(seen) >= 2)
    assert set(seen) == {max(before, JOB_NICENESS)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_a_slow_job_never_overlaps_itself(sqlite_url: str) -> None:
    """A job slower than its interval runs one at a time: the due runs are skipped, not stacked."""
    busy, most, done = [0], [0], []
    lock = threading.Lock()

    def slow() -> None:
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.3)
        with lock:
            busy[0] -= 1
        done.append(1)

    with Store.open(sqlite_url) as store, running(
        Scheduler(store.engine, [Job("slow", slow, interval_trigger(0.02), local=True)])
    ):
        assert _wait(lambda: len(done) >= 3)
    assert most[0] == 1


def test_weekly_job_runs_once_for_a_slot_missed_while_down(store: Store) -> None:
    """Down over Monday 08:00: the next start runs the weekly job once; restarts after do not."""
    runs: list[str] = []
    with running(_weekly(store, MONDAY_8 - 86400, runs)):  # Sunday: first scheduled
        pass
    assert runs == [] and read_jobs(store.engine)["report"].slot_at is None

    # Two serves start on Monday at 09:00, after the slot: one of them runs it.
    with running(_weekly(store, MONDAY_8 + 3600, runs, "a")), running(
        _weekly(store, MONDAY_8 + 3600, runs, "b")
    ):
        assert _wait(lambda: bool(runs))
        time.sleep(0.2)
    assert len(runs) == 1
    stored = read_jobs(store.engine)["report"]
    assert (stored.slot_at, stored.last_run_at) == (MONDAY_8, MONDAY_8 + 3600)
    assert stored.ran_by == runs[0]


def test_weekly_job_that_ran_for_this_slot_does_not_run_again_on_start(store: Store) -> None:
    """Restarted at 10:00 after the 08:00 run: nothing runs, not even when asked to run now."""
    runs: list[str] = []
    with running(_weekly(store, MONDAY_8 - 86400, runs)):
        pass
    with running(_weekly(store, MONDAY_8 + 1, runs)):  # on time (the catch-up path)
        assert _wait(lambda: bool(runs))
    assert read_jobs(store.engine)["report"].slot_at == MONDAY_8

    with running(_weekly(store, MONDAY_8 + 7200, runs)) as again:
        next_run = again.next_run("report")
        assert next_run is not None and next_run > time.time()  # not now: next Monday
        again.run_now("report")  # a slot claimed already is not claimed twice
        time.sleep(0.3)
    assert runs == ["a"]
    stored = read_jobs(store.engine)["report"]
    assert stored.last_run_at == MONDAY_8 + 1
    assert stored.next_run_at == next_run


def test_failure_is_counted_stored_and_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A failing job logs, counts on /metrics, stores its error, runs again; `mailmon jobs` shows it."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    metrics = Metrics(CollectorRegistry())
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("the store is read-only\nsecond line")

    with Store.open(db) as store, running(Scheduler(
        store.engine, [Job("top_domains", broken, interval_trigger(0.05), local=True)],
        metrics=metrics,
    )):
        assert _wait(lambda: (_counter(metrics, "mailmon_job_failures_total", "top_domains") or 0) >= 2)
    assert _counter(metrics, "mailmon_job_last_success_timestamp_seconds", "top_domains") is None

    config = tmp_path / "mailmon.toml"
    config.write_text("")
    assert main(["jobs", "--json", "--db", db, "--config", str(config)]) == 0
    rows = {r["job"]: r for r in json.loads(capsys.readouterr().out)}
    failed = rows["top_domains"]
    assert failed["last_error"] == "RuntimeError: the store is read-only"
    assert failed["failures"] == len(calls) >= 2
    assert failed["last_success"] is None and failed["next_run"] is not None
    # The rollup: never scheduled in this store, shown with the config's trigger.
    assert rows["rollup"]["enabled"] is True
    assert (rows["rollup"]["trigger"], rows["rollup"]["last_run"]) == ("every 60 s", None)

    assert main(["jobs", "--db", db, "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "RuntimeError: the store is read-only" in table and "never" in table


def test_jobs_of_the_config(tmp_path: Path) -> None:
    """[jobs.NAME] moves a job to a crontab line or another interval, or turns it off."""
    path = tmp_path / "mailmon.toml"
    path.write_text('[rollup]\ninterval_seconds = 300\n'
                    '[jobs.top_domains]\ncron = "30 6 * * 1-5"\ntime_zone = "Europe/Berlin"\n')
    config = load_config(path)
    assert trigger_of(effective(config, "rollup"))[1] == "every 300 s"  # [rollup]'s interval
    trigger, shown = trigger_of(effective(config, "top_domains"))
    assert shown == "cron 30 6 * * 1-5 (Europe/Berlin)"
    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()
    # Monday 06:30 in Berlin (UTC+1 in December): cron's 1 is Monday, not APScheduler's Tuesday.
    assert next_slot(trigger, saturday) == datetime(2026, 12, 7, 5, 30, tzinfo=UTC).timestamp()

    path.write_text('[jobs.rollup]\ninterval_seconds = 120\n[jobs.top_domains]\nenabled = false\n')
    config = load_config(path)
    assert trigger_of(effective(config, "rollup"))[1] == "every 120 s"
    assert not effective(config, "top_domains").enabled


@pytest.mark.parametrize(("table", "says"), [
    ('[jobs.top_domains]\ncron = "0 8 * *"\n', "jobs.top_domains: Value error, cron '0 8 * *': expected 5 fields"),
    ('[jobs.top_domains]\ncron = "61 8 * * *"\n', "cron '61 8 * * *'"),
    ('[jobs.top_domains]\ncron = "0 8 * * 9"\n', "day of week '9'"),
    ('[jobs.top_domains]\ncron = "0 8 * * fri-mon"\n', "runs backwards"),
    ('[jobs.top_domains]\ncron = "0 8 * * *"\ninterval_seconds = 60\n', "not both"),
    ('[jobs.top_domains]\ntime_zone = "Mars/Olympus"\n', "unknown time zone"),
    ('[jobs.weekly]\ncron = "0 8 * * mon"\n', "unknown job weekly; the jobs are dmarc_imap, dmarc_reports, dns_check, rollup, seed_probes, top_domains, weekly_report"),
    ('[jobs.rollup]\nevery = 5\n', "jobs.rollup.every: Extra inputs are not permitted"),
])  # fmt: skip
def test_bad_job_settings_are_one_clear_error(tmp_path: Path, table: str, says: str) -> None:
    """A crontab line cron cannot read, two triggers, an unknown job or key: an error naming it."""
    path = tmp_path / "mailmon.toml"
    path.write_text(table)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert says in str(caught.value)


@pytest.mark.parametrize(("days", "names"), [
    ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"), ("*/2", "sun,tue,thu,sat"),
    ("5-7", "sun,fri,sat"), ("sun-tue", "sun,mon,tue"), ("mon,3", "mon,wed"),
])  # fmt: skip
def test_day_of_week_numbers_mean_what_they_mean_to_cron(days: str, names: str) -> None:
    """Cron counts the week from Sunday (0 or 7); the trigger gets the days by name."""
    trigger = cron_trigger(f"0 8 * * {days}")
    field = next(f for f in trigger.fields if f.name == "day_of_week")
    expected = cron_trigger(f"0 8 * * {names}")
    assert str(field) == str(next(f for f in expected.fields if f.name == "day_of_week"))
    assert str(field) == names


def _jobs_listed(config: Path) -> dict[str, dict[str, object]]:
    listed = subprocess.run([sys.executable, "-m", "monitor", "jobs", "--json", "--config",
                             str(config)], capture_output=True, text=True, check=True)
    return {r["job"]: r for r in json.loads(listed.stdout)}


def test_serve_runs_the_jobs_and_lists_them(tmp_path: Path) -> None:
    """`mailmon serve` runs the rollup as a job and refreshes the top domains after its first
    poll: `mailmon jobs` (another process) and /metrics show both."""
    from test_service import BSD_FLOW, _free_port

    log = tmp_path / "mail.log"
    log.write_text(BSD_FLOW)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    port = _free_port()
    config = tmp_path / "mailmon.toml"
    config.write_text(f'[database]\nurl = "{db}"\n[service]\nlisten_port = {port}\n'
                      f'[[logs]]\npath = "{log}"\npoll_interval_seconds = 0.1\n'
                      '[metrics]\ntop_domains = 1\n[rollup]\ninterval_seconds = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def metrics_show(line: str) -> str:
        text = ""
        deadline = time.monotonic() + 20
        while line not in text and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            time.sleep(0.1)
        return text

    try:
        text = metrics_show('mailmon_job_last_success_timestamp_seconds{job="rollup"}')
        assert 'mailmon_job_last_success_timestamp_seconds{job="rollup"}' in text
        assert 'mailmon_job_failures_total{job="rollup"} 0.0' in text
        # The store was empty at start: the first flow's recipients are counted as `other`.
        first = 'domain="other",outcome="delivered",provider="google"} 1.0'
        assert first in metrics_show(first)
        with Store.open(db) as store:
            assert _wait(lambda: read_jobs(store.engine)["top_domains"].last_success_at is not None, 10)
        rows = _jobs_listed(config)
        assert rows["rollup"]["trigger"] == "every 1 s" and rows["rollup"]["last_success"]
        assert rows["top_domains"]["trigger"] == "every 3600 s"
        # After the refresh gmail.com is the top domain: the next flow is counted under it.
        with log.open("a") as f:
            f.write(BSD_FLOW.replace("1A2B3C4D5E", "2B3C4D5E6F").replace("m1@", "m2@"))
        want = 'mailmon_deliveries_total{domain="gmail.com",outcome="delivered",provider="google"} 1.0'
        assert want in metrics_show(want)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0]
    assert proc.returncode == 0, out
