"""The work of the jobs in ``monitor.jobs.catalog``, bound to what ``serve`` built."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from monitor.config import Config
from monitor.gauges import DomainLabeler
from monitor.jobs.catalog import CATALOG, effective, trigger_of
from monitor.jobs.scheduler import Job
from monitor.rollup import LiveClock, RollupEngine, newest_event_time
from monitor.store import Store

__all__ = ["jobs_for", "rollup", "top_domains"]


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
