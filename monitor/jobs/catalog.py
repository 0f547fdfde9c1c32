"""The jobs Mailmon knows, by name, and when each runs unless ``[jobs.NAME]`` says otherwise.

A new job adds a :class:`JobSpec` here and its work where ``serve`` builds it
(``monitor.jobs.builtin``); ``[jobs.NAME]`` can then move it, or turn it off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from apscheduler.triggers.base import BaseTrigger

from monitor.config import Config, JobConfig
from monitor.jobs.triggers import cron_trigger, describe, interval_trigger

__all__ = ["CATALOG", "JobSpec", "effective", "trigger_of"]


@dataclass(frozen=True)
class JobSpec:
    """A job's name, what it does, its default trigger and how it starts."""

    name: str
    summary: str
    default: Callable[[Config], JobConfig]
    #: It fills this process's memory (gauges, labels): every ``serve`` runs it for itself,
    #: no slot is claimed in the store.
    local: bool = False
    #: It runs as the scheduler starts, whatever the store says (the rest run at start only
    #: for a slot missed while no process ran them).
    at_start: bool = False


CATALOG: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec(
            "rollup",
            "evaluate the rollup detectors at the newest event time (gauges, incidents)",
            lambda c: JobConfig(interval_seconds=c.rollup.interval_seconds),
            local=True,
            at_start=True,
        ),
        JobSpec(
            "top_domains",
            "refresh the busiest recipient domains that get their own metric label",
            lambda c: JobConfig(interval_seconds=3600),
            local=True,
        ),
        JobSpec(
            "dmarc_reports",
            "read new DMARC and SMTP TLS report files of [dmarc] directory, then move them",
            lambda c: JobConfig(interval_seconds=300, enabled=c.dmarc.directory is not None),
        ),
        JobSpec(
            "dmarc_imap",
            "read new DMARC and SMTP TLS report emails of [dmarc.imap], then archive them",
            lambda c: JobConfig(interval_seconds=300, enabled=c.dmarc.imap is not None),
        ),
        JobSpec(
            "weekly_report",
            "mail (or write) the last ISO week's deliverability report, once per week",
            lambda c: JobConfig(cron="0 8 * * mon", time_zone=c.report.time_zone,
                                enabled=bool(c.report.relay_host or c.report.out_directory)),
        ),
        JobSpec(
            "seed_probes",
            "send a probe to every [seeds] mailbox and record where each landed",
            lambda c: JobConfig(interval_seconds=6 * 3600, enabled=bool(c.seeds.mailboxes)),
        ),
        JobSpec(
            "dns_check",
            "check the DNS posture of our domains and ask the DNSBLs about our IPs and domains",
            # Opt-in by [dns]: the lists have terms of use, and [dmarc] domains alone must
            # not send a process's first queries to public resolvers.
            lambda c: JobConfig(interval_seconds=3600,
                                enabled=bool(c.dns.domains or c.dns.sending_ips)),
            local=True,
            at_start=True,
        ),
    )
}


def effective(config: Config, name: str) -> JobConfig:
    """The job's settings: ``[jobs.NAME]`` over the job's default."""
    chosen = config.jobs.get(name)
    default = CATALOG[name].default(config)
    if chosen is None:
        return default
    if chosen.cron is None and chosen.interval_seconds is None:
        update: dict[str, object] = {"enabled": chosen.enabled}
        if "time_zone" in chosen.model_fields_set:  # else the default's zone stays
            update["time_zone"] = chosen.time_zone
        return default.model_copy(update=update)
    return chosen


def trigger_of(job: JobConfig) -> tuple[BaseTrigger, str]:
    """The APScheduler trigger of a job's settings and how ``mailmon jobs`` shows it."""
    if job.cron is not None:
        trigger: BaseTrigger = cron_trigger(job.cron, job.time_zone)
        return trigger, describe(trigger, job.cron)
    assert job.interval_seconds is not None, "every default has a trigger"
    trigger = interval_trigger(job.interval_seconds)
    return trigger, describe(trigger)
