"""Scheduled work: the rollup evaluation, the top-domains refresh and, next, probes, report
fetches, DNS checks and the weekly report.

``catalog.py`` names the jobs and their default triggers (``[jobs.NAME]`` overrides them),
``builtin.py`` binds their work to what ``serve`` built, ``scheduler.py`` runs them on
APScheduler with their state in the store (``monitor.store.jobs``), ``triggers.py`` reads
crontab lines and intervals.
"""

from monitor.jobs.catalog import CATALOG, JobSpec
from monitor.jobs.scheduler import Job, Scheduler

__all__ = ["CATALOG", "Job", "JobSpec", "Scheduler"]
