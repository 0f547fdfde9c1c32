"""When the live service evaluates: event time, moved on by the wall clock while the log is quiet.

::

    clock = LiveClock(grid_seconds=60)
    at = clock.next_at(newest_event_time(store), time.monotonic())
    if at is not None:
        engine.evaluate(at)

While events arrive, ``at`` is the start of the newest counter bucket (the one that may
still be filling), as before.  When no newer event arrives, event time does not stop:
after ``grace_seconds`` of silence, ``at`` moves on by the wall-clock time that passed
since the newest bucket was first seen, so the last bucket gets judged (an incident can
open) and a domain that went quiet can resolve.  Only elapsed monotonic time is used, not
the wall-clock date, so a back-filled log or a skewed clock never jumps event time.
"""

from __future__ import annotations

__all__ = ["LiveClock"]


class LiveClock:
    """Picks the next live evaluation time from the newest event time and a monotonic clock."""

    def __init__(self, grid_seconds: int = 60, grace_seconds: float = 60.0) -> None:
        if grid_seconds < 60 or grid_seconds % 60:
            raise ValueError("grid_seconds must be a whole number of minutes")
        self.grid_seconds = grid_seconds
        self.grace_seconds = grace_seconds
        self._newest: float | None = None
        self._seen_at = 0.0
        self._last: float | None = None

    def next_at(self, newest: float | None, monotonic: float) -> float | None:
        """The event time to evaluate at now, or None when nothing new is due."""
        if newest is None:
            return None
        if newest != self._newest:
            self._newest, self._seen_at = newest, monotonic
        idle = max(0.0, monotonic - self._seen_at - self.grace_seconds)
        at = newest + idle
        at -= at % self.grid_seconds
        # Never backwards: late events for a judged time are seen by the next evaluation.
        if self._last is not None and at <= self._last:
            return None
        self._last = at
        return at
