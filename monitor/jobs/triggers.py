"""When a job runs: a crontab line or an interval, as APScheduler triggers.

Intervals are counted from the UNIX epoch, not from the start of the process, so a job's
slots are the same in every process and after every restart (every 60 s: on the minute),
and the slot a run covers can be compared with the one stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

__all__ = ["cron_trigger", "describe", "interval_trigger", "latest_slot", "next_slot"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering: 0 (and 7) = sun


def cron_trigger(expr: str, time_zone: str = "UTC") -> CronTrigger:
    """A trigger from a crontab line (minute hour day month day-of-week) read in ``time_zone``.

    Day-of-week numbers mean what they mean to cron (0 or 7 = Sunday, 1 = Monday):
    APScheduler 3 counts from Monday, so they are handed to it as names. ValueError with
    the reason for a line it cannot read.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expr!r}: expected 5 fields (minute hour day month day-of-week), "
            f"got {len(fields)}"
        )
    try:
        days = _crontab_days(fields[4])
        return CronTrigger(minute=fields[0], hour=fields[1], day=fields[2], month=fields[3],
                           day_of_week=days, timezone=ZoneInfo(time_zone))  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"cron {expr!r}: {exc}") from None


def interval_trigger(seconds: float) -> IntervalTrigger:
    """Every ``seconds``, on a grid counted from the epoch."""
    return IntervalTrigger(seconds=seconds, start_date=_EPOCH, timezone=UTC)


def describe(trigger: BaseTrigger, cron: str | None = None) -> str:
    """The trigger as ``mailmon jobs`` shows it: ``every 60 s``, ``cron 0 8 * * mon (UTC)``."""
    if isinstance(trigger, IntervalTrigger):
        return f"every {trigger.interval_length:g} s"
    return f"cron {cron or trigger} ({getattr(trigger, 'timezone', 'UTC')})"


def next_slot(trigger: BaseTrigger, after: float) -> float:
    """The first slot strictly after ``after`` (UNIX seconds); infinity if there is none."""
    if isinstance(trigger, IntervalTrigger):
        return _grid(trigger, after) + trigger.interval_length
    moment = datetime.fromtimestamp(after, UTC)
    fire = trigger.get_next_fire_time(moment, moment)
    return float("inf") if fire is None else fire.timestamp()


def latest_slot(trigger: BaseTrigger, now: float, since: float | None) -> float:
    """The last slot at or before ``now``, looking no further back than the first after ``since``.

    A run late by several slots covers them all (coalesced): the stored slot is this one.
    ``now`` itself when no slot is known (``since`` None, or the first slot is still ahead).
    """
    if isinstance(trigger, IntervalTrigger):
        return _grid(trigger, now)
    if since is None:
        return now
    slot = next_slot(trigger, since)
    if slot > now:
        return now
    for _ in range(100_000):  # a minutely cron line down for more than two months: stop there
        following = next_slot(trigger, slot)
        if following > now:
            break
        slot = following
    return slot


def _grid(trigger: IntervalTrigger, at: float) -> float:
    """The interval slot at or before ``at``."""
    start = trigger.start_date.timestamp()
    step = trigger.interval_length
    return start + (at - start) // step * step


def _crontab_days(field: str) -> str:
    """A crontab day-of-week field as a list of day names (``*`` as it is)."""
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        span, _, step_text = item.partition("/")
        step = _number(step_text, "step") if step_text else 1
        if step < 1:
            raise ValueError(f"day-of-week step {step_text!r} must be at least 1")
        if span == "*":
            low, high = 0, 6
        elif "-" in span:
            first, _, last = span.partition("-")
            low, high = _day(first), _day(last)
        else:
            low = _day(span)
            high = 7 if step_text else low  # "1/2": from Monday, every second day
        if low > high:
            raise ValueError(f"day-of-week range {span!r} runs backwards")
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(_DAYS[d] for d in sorted(days))


def _day(token: str) -> int:
    if token in _DAYS:
        return _DAYS.index(token)
    day = _number(token, "day of week")
    if day > 7:
        raise ValueError(f"day of week {token!r}: 0-7 (0 and 7 are Sunday) or mon..sun")
    return day


def _number(token: str, what: str) -> int:
    if not token.isdigit():
        raise ValueError(f"{what} {token!r}: not a number or day name")
    return int(token)
