"""The work of the jobs in ``monitor.jobs.catalog``, bound to what ``serve`` built."""

from __future__ import annotations

import logging
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

__all__ = ["dmarc_reports", "dns_check", "jobs_for", "rollup", "top_domains"]

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


def dns_check(config: Config, driver: Driver) -> Callable[[], None]:
    """Check our domains' posture and the DNSBLs; store the results, set the gauges."""
    from monitor.dnscheck.run import DnsSettings

    settings = DnsSettings.of(config)  # an unknown list stops serve before it starts
    if not settings.configured:
        if effective(config, "dns_check").enabled:
            raise ConfigError("[jobs.dns_check] is enabled without [dns] domains or "
                              "sending_ips (or [dmarc] domains)")  # fmt: skip
        return lambda: None  # not scheduled

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
