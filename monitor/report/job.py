"""The ``weekly_report`` job: the last complete ISO week's report, once per week.

The scheduler already runs a slot once across restarts and instances (its slot claim in
the ``jobs`` table); the week mailed is also kept as the checkpoint ``report:weekly``,
written once the relay took the message, so a second run for the same week (a restart
that re-runs a missed slot, a cron line moved to the afternoon) mails nothing.  A run that
fails before the relay took the message leaves the week unmarked: the next run mails it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from monitor.config import Config
from monitor.report.build import build
from monitor.report.mail import check, send
from monitor.report.week import last_complete_week
from monitor.store import Store

__all__ = ["CHECKPOINT", "weekly_report"]

log = logging.getLogger(__name__)

#: The checkpoint key that remembers the last ISO week reported: {"week", "at", "mailed"}.
CHECKPOINT = "report:weekly"


def weekly_report(
    config: Config, store: Store, *, clock: Callable[[], float] = time.time
) -> Callable[[], None]:
    """The job's work: report the last complete week unless it was reported already."""
    settings = config.report
    if settings.relay_host:
        check(settings)  # a half-configured relay stops serve before it starts

    def run() -> None:
        now = clock()
        week = last_complete_week(now, settings.time_zone)
        done = store.checkpoint(CHECKPOINT) or {}
        if str(done.get("week", "")) >= week.name:  # "2026-W47": names sort as weeks do
            log.info("weekly report: %s was reported already (%s); nothing to do", week.name,
                     done.get("week"))  # fmt: skip
            return
        report = build(store, config, week, now=now)
        if settings.out_directory:
            report.write(Path(settings.out_directory) / week.name, settings)
        mailed = False
        if settings.relay_host:
            send(report.message(settings), settings)
            mailed = True
        store.write([], state={CHECKPOINT: {"week": week.name, "at": now, "mailed": mailed}})
        log.info("weekly report %s done (%s)", week.name,
                 "mailed" if mailed else f"written to {settings.out_directory}")  # fmt: skip

    return run
