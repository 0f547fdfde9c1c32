"""Which subjects a bounded rollup reader keeps on their own; the others add up per provider.

::

    choice = Choice(RECIPIENT_DOMAINS, limit=1000, always=("gmail.com",))
    kept = choice.at(conn, end)    # None: every subject seen so far fits, all are kept

For the UTC day of ``end`` the order is: the subjects of the week before the day, busiest
first (attempts, ties by name), then those new that day in the order they first appeared
(by minute, ties by name).  The first ``limit`` of that order are kept, with ``always``.
While every subject seen since the week before the day fits, ``at`` says None and no
subject is summed into the rest.

Only counter rows before ``end`` decide, so a live evaluation and a replay of the same time
choose alike.  Volume alone would not do for the day's new subjects: their order by volume
moves with every minute, and each change of the choice means summing the week again; the
order of first appearance only grows at its end, so a day changes its choice at most once
(when the ``limit + 1``-th subject appears), and a store whose history is one day is
bounded too.  Nothing here holds more than ``limit + 1`` subjects.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, case, func, select

from monitor.rollup.counts import ATTEMPT_OUTCOMES, OUTCOMES
from monitor.rollup.views import View

__all__ = ["Choice", "first_seen", "top_subjects"]

DAY = 86400
#: The week before a day: where its busiest subjects come from.
WEEK_SECONDS = 7 * DAY


def top_subjects(conn: Connection, view: View, start: int, end: int, limit: int) -> list[str]:
    """The ``limit`` subjects with the most attempts in ``[start, end)``, busiest first
    (ties by name); subjects with counter rows but no attempts come last."""
    c = view.c
    attempts = func.sum(case((c.outcome.in_(ATTEMPT_OUTCOMES), c.count), else_=0))
    query = (
        select(view.column)
        .where(c.bucket >= start, c.bucket < end, c.outcome.in_(OUTCOMES),
               *view.where, view.column != "")
        .group_by(view.column)
        .order_by(attempts.desc(), view.column)
        .limit(limit)
    )  # fmt: skip
    return [row[0] for row in conn.execute(query)]


def first_seen(conn: Connection, view: View, start: int, end: int, limit: int) -> list[str]:
    """The first ``limit`` subjects to have counter rows in ``[start, end)``, by their first
    minute there, ties by name."""
    c = view.c
    query = (
        select(view.column)
        .where(c.bucket >= start, c.bucket < end, c.outcome.in_(OUTCOMES),
               *view.where, view.column != "")
        .group_by(view.column)
        .order_by(func.min(c.bucket), view.column)
        .limit(limit)
    )  # fmt: skip
    return [row[0] for row in conn.execute(query)]


class Choice:
    """The subjects kept on their own at an evaluation time (module docstring)."""

    def __init__(self, view: View, limit: int, always: Iterable[str] = ()) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.view = view
        self.limit = limit
        self.always = frozenset(always)
        self._day = -1
        self._checked = 0  # the day's minutes before this were scanned for new subjects
        self._order: list[str] = []  # while not full: every subject seen, in order
        self._seen: set[str] = set()
        self._kept: list[str] | None = None  # set once full, for the rest of the day
        self._seen_list: list[str] = []  # seen(): the same list while nothing is added

    def at(self, conn: Connection, end: int) -> list[str] | None:
        """The subjects kept at ``end`` (a bucket boundary); None: all of them."""
        day = end // DAY
        if day != self._day or end < self._checked:
            self._start(conn, day)
        if self._kept is None and end > self._checked:
            self._scan(conn, end)
        return self._kept

    def seen(self) -> list[str]:
        """While every subject seen fits: those and ``always``, sorted (a new list only
        when one was added); once full, the kept ones."""
        if self._kept is not None:
            return self._kept
        if len(self._seen_list) != len(self.always | self._seen):
            self._seen_list = sorted(self.always | self._seen)
        return self._seen_list

    def _start(self, conn: Connection, day: int) -> None:
        since = day * DAY
        busiest = top_subjects(conn, self.view, since - WEEK_SECONDS, since, self.limit + 1)
        self._day, self._checked = day, since
        self._kept = None
        self._order, self._seen = busiest, set(busiest)
        if len(busiest) > self.limit:
            self._settle(busiest[: self.limit])

    def _scan(self, conn: Connection, end: int) -> None:
        # At most len(self._seen) <= limit of these are known: limit + 1 rows hold every
        # new subject that fits and the first one that does not.
        for subject in first_seen(conn, self.view, self._checked, end, self.limit + 1):
            if subject in self._seen:
                continue
            if len(self._order) == self.limit:
                self._settle(self._order)
                break
            self._order.append(subject)
            self._seen.add(subject)
        self._checked = end

    def _settle(self, subjects: list[str]) -> None:
        self._kept = sorted(self.always | set(subjects))
        self._order, self._seen = [], set()
