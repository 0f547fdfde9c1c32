"""Runs the jobs on an APScheduler ``BackgroundScheduler``, their state kept in the store.

Every job runs at most once at a time (``max_instances=1``); runs missed while the
process was busy are coalesced into one; a run that fails is logged, counted
(``mailmon_job_failures_total``), stored as the job's last error, and the job runs again
at its next time. Jobs that are not ``local`` claim their slot in the store before they
run (``monitor.store.jobs.claim``): a slot missed while no process ran runs once at start,
and a slot already covered (a restart after the weekly report) does not run again.

On Linux the jobs' threads run at a lower CPU priority (``JOB_NICENESS``): a job is
minutes of work done in seconds (the rollup reads the store), and while it runs the
webhook endpoints and the store's writer, which answer senders waiting on them, should
get the cores first.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import Engine

from monitor.jobs.triggers import describe, latest_slot, next_slot
from monitor.store import jobs as state

if TYPE_CHECKING:
    from monitor.metrics import Metrics

__all__ = ["Job", "Scheduler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A named piece of work and when it runs (see ``monitor.jobs.catalog.JobSpec``)."""

    name: str
    run: Callable[[], object]
    trigger: BaseTrigger
    description: str = ""
    local: bool = False
    at_start: bool = False


class Scheduler:
    """The jobs of one process::

        scheduler = Scheduler(store.engine, [Job("rollup", evaluate, interval_trigger(60))])
        scheduler.start()
        ...
        scheduler.stop()

    ``clock`` (UNIX seconds) decides which slots are due and stamps the stored state; the
    runs themselves are timed by APScheduler on the wall clock.
    """

    def __init__(
        self,
        engine: Engine,
        jobs: Iterable[Job],
        *,
        metrics: Metrics | None = None,
        instance: str = "",
        clock: Callable[[], float] = time.time,
        misfire_grace_seconds: float = 3600.0,
        workers: int = 4,
    ) -> None:
        self.jobs = {job.name: job for job in jobs}
        self._engine = engine
        self._metrics = metrics
        self._instance = instance
        self._clock = clock
        self._running = 0
        self._stopped = False
        self._idle = threading.Condition()
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={
                "max_instances": 1,
                "coalesce": True,
                "misfire_grace_time": int(misfire_grace_seconds),
            },
        )

    def start(self) -> None:
        """Record the jobs in the store and schedule them; the due ones run now."""
        now = self._clock()
        triggers = {j.name: j.description or describe(j.trigger) for j in self.jobs.values()}
        stored = state.register(self._engine, triggers, now)
        for job in self.jobs.values():
            found = stored[job.name]
            covered = found.slot_at if found.slot_at is not None else found.created_at
            due = job.at_start or next_slot(job.trigger, covered) <= now
            extra = {"next_run_time": datetime.now(UTC)} if due else {}
            self._scheduler.add_job(self._execute, job.trigger, args=[job], id=job.name,
                                    name=job.name, **extra)  # fmt: skip
            if self._metrics is not None:
                self._metrics.job_failures.labels(job.name)  # shown at 0 from the start
                if found.last_success_at is not None:
                    self._metrics.job_last_success.labels(job.name).set(found.last_success_at)
        self._scheduler.start()
        for name in self.jobs:
            state.set_next(self._engine, name, self.next_run(name))
        log.info("jobs scheduled: %s", ", ".join(f"{n} ({t})" for n, t in triggers.items()))

    def run_now(self, name: str) -> None:
        """Run a job as soon as it is free (a job that is not local still needs its slot due)."""
        self._scheduler.modify_job(name, next_run_time=datetime.now(UTC))

    def next_run(self, name: str) -> float | None:
        """When APScheduler runs the job next (UNIX seconds), None if it will not."""
        job = self._scheduler.get_job(name)
        moment = None if job is None else job.next_run_time
        return None if moment is None else moment.timestamp()

    def stop(self, timeout: float = 10.0) -> None:
        """Schedule nothing more and wait up to ``timeout`` seconds for running jobs."""
        with self._idle:
            self._stopped = True  # a run already handed to a worker thread does not start
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        with self._idle:
            self._idle.wait_for(lambda: self._running == 0, timeout)

    def _execute(self, job: Job) -> None:
        with self._idle:
            if self._stopped:
                return
            self._running += 1
        lower_priority()
        try:
            self._run(job)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def _run(self, job: Job) -> None:
        error: str | None = None
        try:
            now = self._clock()
            due_after = None if job.local else partial(next_slot, job.trigger)
            covers = partial(latest_slot, job.trigger)
            if not state.claim(self._engine, job.name, now, ran_by=self._instance,
                               due_after=due_after, slot=covers):  # fmt: skip
                log.info("job %s: its slot has run already; next at its next time", job.name)
                return
            job.run()
        except Exception as exc:  # the job runs again at its next time
            log.exception("job %s failed; it runs again at its next time", job.name)
            first = (str(exc).splitlines() or [""])[0]
            error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
            if self._metrics is not None:
                self._metrics.job_failures.labels(job.name).inc()
        finished = self._clock()
        if error is None and self._metrics is not None:
            self._metrics.job_last_success.labels(job.name).set(finished)
        try:
            # After APScheduler has moved the job on (get_job waits for its lock).
            state.finish(self._engine, job.name, finished, error=error,
                         next_run_at=self.next_run(job.name))  # fmt: skip
        except Exception:
            log.exception("job %s: its state could not be stored", job.name)


#: The niceness of the threads that run jobs (see the module docstring).
JOB_NICENESS = 10


def lower_priority(niceness: int = JOB_NICENESS) -> None:
    """Run the calling thread at ``niceness`` unless it runs nicer already (Linux alone:
    elsewhere the call would change the whole process).  Raising one's own niceness needs
    no privilege; a refusal (a sandbox) leaves the thread as it was."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < niceness:
            os.setpriority(os.PRIO_PROCESS, thread, niceness)
    except OSError as exc:
        log.debug("job thread stays at its priority: %s", exc)
