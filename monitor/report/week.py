"""ISO weeks in a time zone: ``2026-W47`` -> its Monday 00:00 to the next Monday 00:00."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from monitor.errors import ConfigError

__all__ = ["Week", "last_complete_week", "parse_week"]

_WEEK = re.compile(r"(\d{4})-?W(\d{1,2})", re.IGNORECASE)


@dataclass(frozen=True)
class Week:
    """One ISO week read in ``time_zone``; ``start`` and ``end`` are UNIX seconds."""

    year: int
    number: int
    time_zone: str

    @property
    def name(self) -> str:
        return f"{self.year}-W{self.number:02d}"

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.number, 1)

    def day(self, offset: int) -> float:
        """UNIX seconds of local midnight ``offset`` days after this week's Monday."""
        local = datetime.combine(self.monday + timedelta(days=offset), time(0),
                                 tzinfo=ZoneInfo(self.time_zone))  # fmt: skip
        return local.timestamp()

    @property
    def start(self) -> float:
        return self.day(0)

    @property
    def end(self) -> float:
        return self.day(7)

    def previous(self) -> Week:
        year, number, _ = (self.monday - timedelta(days=7)).isocalendar()
        return Week(year, number, self.time_zone)

    def following(self) -> Week:
        year, number, _ = (self.monday + timedelta(days=7)).isocalendar()
        return Week(year, number, self.time_zone)


def parse_week(text: str, time_zone: str) -> Week:
    """``2026-W47`` (or ``2026W47``) in ``time_zone``; ConfigError when it names no week."""
    m = _WEEK.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"--week {text!r}: expected an ISO week such as 2026-W47")
    year, number = int(m.group(1)), int(m.group(2))
    try:
        date.fromisocalendar(year, number, 1)
    except ValueError:
        raise ConfigError(f"--week {text!r}: {year} has no week {number}") from None
    return Week(year, number, time_zone)


def last_complete_week(now: float, time_zone: str) -> Week:
    """The last ISO week that ended at or before ``now`` in ``time_zone``."""
    today = datetime.fromtimestamp(now, ZoneInfo(time_zone)).date()
    year, number, _ = (today - timedelta(days=7)).isocalendar()
    return Week(year, number, time_zone)
