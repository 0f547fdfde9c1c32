"""The work of the jobs in ``monitor.jobs.catalog``, bound to what ``serve`` built."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from monitor.config import Config
from monitor.driver import Driver
from monitor.errors import ConfigError
from monitor.gauges import DomainLabeler
from monitor.jobs.catalog import CATALOG, effective, trigger_of
from monitor.jobs.scheduler import Job
from monitor.rollup import LiveClock, RollupEngine, newest_event_time
from monitor.store import Store

__all__ = [
    "dmarc_imap", "dmarc_reports", "dns_check", "jobs_for", "rollup", "seed_probes",
    "top_domains", "weekly_report",
]  # fmt: skip

log = logging.getLogger(__name__)


def rollup(config: Config, store: Store, engine: RollupEngine) -> Callable[[], None]:
    """One live evaluation of the rollup engine.

    Event time: it evaluates at the newest event seen, on the interval's grid, so that a
    replay with the same step finds the same incidents; while the log is quiet the wall
    clock moves event time on (LiveClock), so incidents open and resolve then too.
    """
    interval = effective(config, "rollup").interval_seconds or 60.0  # a cron line: by minute
    ahead = config.ingest.max_future_seconds
    clock = LiveClock(grid_seconds=max(60, int(interval) // 60 * 60))

    def evaluate() -> None:
        newest = newest_event_time(store, not_after=time.time() + ahead)
        at = clock.next_at(newest, time.monotonic())
        if at is not None:
            engine.evaluate(at)

    return evaluate


def top_domains(config: Config, store: Store, labeler: DomainLabeler) -> Callable[[], None]:
    """Give the busiest recipient domains of the store their own ``domain`` label."""

    def refresh() -> None:
        labeler.set_top(store.top_domains(config.metrics.top_domains))

    return refresh


def dmarc_reports(config: Config, driver: Driver) -> Callable[[], None]:
    """Read the report files that arrived in ``[dmarc] directory``; move each when read."""
    d = config.dmarc
    if d.directory is None:
        if effective(config, "dmarc_reports").enabled:  # stops serve before it starts
            raise ConfigError("[jobs.dmarc_reports] is enabled without [dmarc] directory")
        return lambda: None  # not scheduled
    directory = Path(d.directory)
    done = Path(d.done_directory) if d.done_directory else directory / "done"
    failed = Path(d.failed_directory) if d.failed_directory else directory / "failed"

    def scan() -> None:
        from monitor.collectors.reports import reports_for
        from monitor.collectors.reports.files import scan_directory

        if not directory.is_dir():
            raise ConfigError(f"[dmarc] directory {directory} is not a directory")
        summary = scan_directory(reports_for(config, driver), directory, done, failed,
                                 min_age_seconds=d.min_age_seconds)  # fmt: skip
        if summary.files:
            log.info("DMARC reports: %d files, %d reports, %d records stored (%d already), "
                     "refused %s", summary.files, summary.reports, summary.stored,
                     summary.duplicates, dict(summary.refused) or "none")  # fmt: skip

    return scan


def dmarc_imap(config: Config, driver: Driver) -> Callable[[], None]:
    """Read the report emails of ``[dmarc.imap]``; archive each when stored."""
    settings = config.dmarc.imap
    if settings is None:
        if effective(config, "dmarc_imap").enabled:  # stops serve before it starts
            raise ConfigError("[jobs.dmarc_imap] is enabled without [dmarc.imap]")
        return lambda: None  # not scheduled
    if effective(config, "dmarc_imap").enabled:
        settings.password()  # a missing secret stops serve before it starts; read at each run

    def fetch() -> None:
        from monitor.collectors.reports import reports_for
        from monitor.collectors.reports.imap import ReportMailbox

        summary = ReportMailbox(reports_for(config, driver), settings).run()
        if summary["messages"]:
            log.info("DMARC mailbox: %d messages, %d records stored (%d already), refused %s, "
                     "moved %s", summary["messages"], summary["stored"], summary["duplicates"],
                     summary["refused"] or "none", summary["moved"] or "none")  # fmt: skip

    return fetch


def weekly_report(config: Config, store: Store) -> Callable[[], None]:
    """The last complete ISO week's report, mailed and/or written once (monitor.report.job)."""
    r = config.report
    if not (r.relay_host or r.out_directory):
        if effective(config, "weekly_report").enabled:  # stops serve before it starts
            raise ConfigError("[jobs.weekly_report] is enabled without [report] relay_host "
                              "or out_directory")  # fmt: skip
        return lambda: None  # not scheduled
    from monitor.report.job import weekly_report as job  # pandas, matplotlib: only when used

    return job(config, store)


def seed_probes(
    config: Config, driver: Driver, store: Store, stop: threading.Event | None = None
) -> Callable[[], None]:
    """One probe run: send to every seed, poll the mailboxes, store the placements."""
    if not config.seeds.mailboxes:
        if effective(config, "seed_probes").enabled:  # stops serve before it starts
            raise ConfigError("[jobs.seed_probes] is enabled without [seeds] mailboxes")
        return lambda: None  # not scheduled

    def probe() -> None:
        from monitor.collectors.seeds.run import run_probes

        result = run_probes(config.seeds, driver, store, stop=stop)
        placed = {o.probe.seed: o.placement for o in result.outcomes}
        log.info("seed probes %s: %s", result.run_id, placed)
        errors = sorted(seed for seed, where in placed.items() if where == "error")
        if errors:
            # Stored with the job's state and counted as a failure: a mailbox to look at.
            raise RuntimeError(f"seed probes could not be read for {', '.join(errors)}")

    return probe


def dns_check(config: Config, driver: Driver) -> Callable[[], None]:
    """Check our domains' posture and the DNSBLs; store the results, set the gauges."""
    if not effective(config, "dns_check").enabled:
        return lambda: None  # not scheduled; checkdmarc is not even imported
    from monitor.dnscheck.run import DnsSettings

    settings = DnsSettings.of(config)  # an unknown list stops serve before it starts
    if not settings.configured:
        raise ConfigError("[jobs.dns_check] is enabled without [dns] domains or "
                          "sending_ips (or [dmarc] domains)")  # fmt: skip

    def check() -> None:
        from monitor.dnscheck.metrics import posture_metrics
        from monitor.dnscheck.run import regressions, run_posture, store_run

        run = run_posture(settings)
        store_run(driver.pipeline, run)
        driver.pipeline.flush()
        run.regressed = regressions(driver.pipeline.store, run, days=settings.history_days)
        if driver.metrics is not None:
            posture_metrics(driver.metrics.registry).update(run)
        worse = [c for c in run.checks if c.status != "pass"]
        log.info("DNS posture: %d checks (%d not passing, %d regressed), %d DNSBL lookups "
                 "(%d listed) in %.1f s", len(run.checks), len(worse), len(run.regressed),
                 len(run.listings), sum(r.listed for r in run.listings), run.seconds)  # fmt: skip

    return check


def jobs_for(config: Config, work: Mapping[str, Callable[[], object]]) -> list[Job]:
    """The enabled jobs of the catalog with their configured triggers and their ``work``."""
    jobs = []
    for name, spec in CATALOG.items():
        settings = effective(config, name)
        if not settings.enabled:
            continue
        trigger, description = trigger_of(settings)
        jobs.append(Job(name, work[name], trigger, description, spec.local, spec.at_start))
    return jobs
