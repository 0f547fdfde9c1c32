"""Counts per (provider, recipient domain) over windows ending at an event time, from counters.

One scan of the pre-aggregated ``counters`` over the trailing week answers every window::

    table = window_counts(conn, at)
    table[("google", "gmail.com")]["5m"].rejecting

:class:`WindowReader` gives the same answer for a sequence of evaluation times while
reading only the last hours of minute buckets each time: settled hours are summed once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    case,
    func,
    or_,
    select,
)

from monitor.rollup.choice import Choice
from monitor.rollup.counts import ATTEMPT_OUTCOMES as _ATTEMPT_OUTCOMES
from monitor.rollup.counts import OUTCOMES as _OUTCOMES
from monitor.rollup.counts import Counts
from monitor.rollup.scan import (
    BASELINE,
    BASELINE_SECONDS,
    HOUR,
    REST,
    SHORT,
    SHORTER,
    WEEK_SECONDS,
    WEEKLY,
    WEEKLY_MIN,
    WINDOWS,
    Tally,
    add_tally,
    align,
    baseline_of,
    bump,
    ceil_hour,
    merge,
    merge_tally,
    scan,
    scan_query,
    subject_of,
    window_counts,
    window_sums,
    with_baselines,
)
from monitor.rollup.views import RECIPIENT_DOMAINS, Key, View
from monitor.store.schema import BUCKET_SECONDS

__all__ = [
    "BASELINE",
    "BASELINE_SECONDS",
    "REST",
    "SHORT",
    "WEEKLY",
    "WEEKLY_MIN",
    "WEEK_SECONDS",
    "WINDOWS",
    "Counts",
    "WindowReader",
    "align",
    "baseline_of",
    "merge",
    "window_counts",
    "with_baselines",
]


class WindowReader:
    """``window_counts`` for successive evaluation times, with settled hours summed once.

    A reader reads its view's ``extras`` alongside, as window_counts does.

    With ``max_subjects``, memory is bounded in the number of subjects: the ``max_subjects``
    that ``Choice`` keeps (the busiest of the week before the evaluation's UTC day, then the
    day's new ones as they appear) and the ``always`` ones keep their own counts, the
    others add up per provider as subject ``REST``.  Only data before the evaluation time
    chooses, so a live evaluation and a replay of the same time choose alike.

    Hours that ended ``settle_seconds`` before the evaluation time are read once and kept
    as running sums for the 24 h window and the baseline; each evaluation then reads the
    minute buckets of the last hours and the two partial hours at the windows' starts.
    Counters that arrive for an hour after it settled are seen after the next rebuild,
    which happens when the evaluation time moves backwards, jumps more than a week, or
    crosses a UTC day.
    """

    def __init__(
        self,
        settle_seconds: int = 2 * HOUR,
        view: View = RECIPIENT_DOMAINS,
        max_subjects: int = 0,
        always: Iterable[str] = (),
    ) -> None:
        if settle_seconds < HOUR:
            raise ValueError("settle_seconds must cover the 1 h window")
        self.settle_seconds = settle_seconds
        self.view = view
        self.max_subjects = max_subjects
        self.always = frozenset(always)
        bounded = max_subjects > 0
        self._choice: Choice | None = None  # made at the first read (extras take the main's)
        # The subjects kept (None: every subject) and, for the same-hour-of-week hours,
        # which lie before the choice's days, the subjects those hours were read for.
        self._kept: list[str] | None = None
        self._weekly_kept: list[str] | None = None
        # The hard/soft and blame fields, as window_counts adds them (same subjects kept).
        self._extras = [
            WindowReader(settle_seconds, extra, max_subjects, always) for extra in view.extras
        ]
        # The windows inside the settle time, read from minute buckets every evaluation.
        total = func.sum(view.c.count)
        sums = [*window_sums(view, SHORTER), total]
        # Per "subjects bounded today": the tail and minute statements.
        self._queries = {
            b: (scan_query(view, sums, b), scan_query(view, [total], b)) for b in {False, bounded}
        }
        self._bounded = bounded
        self._hours: dict[int, Tally] = {}
        self._range: tuple[int, int, int] | None = None  # (lo7, lo24, hi) of the sums
        self._sum7: Tally = {}
        self._sum24: Tally = {}
        self._day = -1
        self._weekly: dict[int, Tally] = {}  # hour start -> tally, for weekly()
        # weekly()'s last answer and its hours: the same for a whole event-time hour.
        self._weekly_out: tuple[list[int], dict[Key, list[tuple[int, Counts]]]] | None = None

    def _keep(self, conn: Connection, end: int, kept: tuple[list[str] | None] | None) -> None:
        """Choose the subjects kept on their own at ``end`` (or take ``kept``, the main
        view's choice); a new choice drops what was summed under the old one."""
        if not self._bounded:
            return
        if kept is None:
            if self._choice is None:
                self._choice = Choice(self.view, self.max_subjects, self.always)
            kept = (self._choice.at(conn, end),)
        if kept[0] != self._kept:
            self._kept = kept[0]
            self._range = None
        # Every subject is kept while few enough were seen since the week before the day;
        # the same-hour-of-week hours, older, may hold many more: the seen ones get their own.
        weekly = self._kept
        if weekly is None and self._choice is not None:
            weekly = self._choice.seen()
        if weekly != self._weekly_kept:
            self._weekly_kept = weekly
            self._weekly.clear()
            self._weekly_out = None

    def _params(self, weekly: bool = False) -> dict[str, Any]:
        kept = self._weekly_kept if weekly else self.kept()
        return {} if kept is None else {"kept": kept}

    def _today(self, weekly: bool = False) -> bool:
        """Whether reads (of the same-hour-of-week hours) map the subjects not kept to
        ``REST``."""
        return self._params(weekly) != {}

    def held(self) -> int:
        """Tally entries this reader (and its extras) keeps between evaluations: the hourly
        sums, the running 24 h and 7 d sums and the same-hour-of-week hours."""
        own = sum(len(t) for t in (*self._hours.values(), *self._weekly.values()))
        return own + len(self._sum7) + len(self._sum24) + sum(x.held() for x in self._extras)

    def kept(self) -> list[str] | None:
        """The subjects kept on their own at the last read (None: every subject is)."""
        return self._kept

    def read(
        self,
        conn: Connection,
        at: float,
        into: dict[Key, dict[str, Counts]] | None = None,
        kept: tuple[list[str] | None] | None = None,
    ) -> dict[Key, dict[str, Counts]]:
        """The windows ending at ``at``, added into ``into`` (a fresh table by default)."""
        end = align(at)
        self._keep(conn, end, kept)
        hi = (end - self.settle_seconds) // HOUR * HOUR
        lo7 = ceil_hour(end - BASELINE_SECONDS)
        lo24 = ceil_hour(end - WINDOWS["24h"])
        self._advance(conn, lo7, lo24, hi, day=end // 86400)
        cuts = {f"from_{name}": end - WINDOWS[name] for name in SHORTER}
        tail: dict[str, Tally] = {name: {} for name in (*WINDOWS, BASELINE)}
        for provider, domain, outcome, rej, *totals in scan(
            conn,
            self.view,
            self._queries[self._today()][0],
            start=hi,
            end=end,
            **cuts,
            **self._params(),
        ):
            k = (provider, domain, outcome, int(rej))
            *short_sums, total = (int(t or 0) for t in totals)
            for name, n in zip(SHORTER, short_sums, strict=True):
                tail[name][k] = n
            tail["24h"][k] = total
            tail[BASELINE][k] = total - tail[SHORT][k]
        head24 = self._minutes(conn, end - WINDOWS["24h"], lo24)
        head7 = self._minutes(conn, end - BASELINE_SECONDS, lo7)
        table: dict[Key, dict[str, Counts]] = {} if into is None else into
        for name in WINDOWS:
            add_tally(table, name, tail[name])
        for tally in (head24, self._sum24):
            add_tally(table, "24h", tally)
        for tally in (tail[BASELINE], head7, self._sum7):
            add_tally(table, BASELINE, tally)
        for extra in self._extras:
            # In place (no second table to add up), with the same subjects kept.
            extra.read(conn, at, table, (self.kept(),))
        return table

    def incident_counts(
        self, conn: Connection, spans: dict[Key, list[tuple[float, float]]], at: float
    ) -> tuple[dict[Key, dict[str, Counts]], dict[Key, int]]:
        """Counts inside ``spans`` (incident time), per key and per window's baseline.

        An incident's own failures must not raise the baseline it is judged against, or a
        long incident would end itself while the domain still rejects.  Spans are clipped
        to the baseline window, merged and cut at the windows' starts; settled hours come
        from the hourly sums of the last ``read(at)``, only the ragged ends from minute
        buckets.  Returns, per key, the counts to take out of each window's baseline (the
        part before that window) and the seconds taken out of the short window's.
        """
        end = align(at)
        lo, top = end - BASELINE_SECONDS, end - WINDOWS[SHORT]
        cuts = sorted({end - seconds for seconds in WINDOWS.values()})
        settled_lo, _, settled_hi = self._range or (end, end, end)
        found: dict[Key, dict[str, Counts]] = {}
        seconds: dict[Key, int] = {}
        for key, raw in spans.items():
            merged: list[list[int]] = []
            for start, stop in sorted(raw):
                a = max(lo, align(start))
                b = min(top, -(-int(stop) // BUCKET_SECONDS) * BUCKET_SECONDS)
                if a >= b:
                    continue
                if merged and a <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            if not merged:
                continue
            pieces = []
            for a, b in merged:
                for cut in (c for c in cuts if a < c < b):
                    pieces.append((a, cut))
                    a = cut
                pieces.append((a, b))
            per = found[key] = {name: Counts() for name in WINDOWS}
            minutes: list[tuple[int, int]] = []
            for a, b in pieces:
                h0, h1 = max(ceil_hour(a), settled_lo), min(b // HOUR * HOUR, settled_hi)
                if h0 >= h1:
                    minutes.append((a, b))
                    continue
                minutes += [(a, h0), (h1, b)]
                names = [name for name, w in WINDOWS.items() if b <= end - w]
                for h in range(h0, h1, HOUR):
                    for (p, d, outcome, rej), n in self._hours.get(h, {}).items():
                        if (p, d) == key:
                            for name in names:
                                bump(per[name], outcome, rej, n)
            ranges = [(a, b) for a, b in minutes if a < b]
            if ranges:
                self._minute_counts(conn, key, ranges, end, per)
            seconds[key] = sum(b - a for a, b in merged)
        return found, seconds

    def _minute_counts(
        self,
        conn: Connection,
        key: Key,
        ranges: list[tuple[int, int]],
        end: int,
        per: dict[str, Counts],
    ) -> None:
        view = self.view
        c = view.c
        sums = [
            func.sum(case((c.bucket < end - WINDOWS[name], c.count), else_=0)) for name in WINDOWS
        ]
        rejecting = view.rejecting()
        query = (
            select(view.outcome, rejecting, *sums)
            .where(
                or_(*(and_(c.bucket >= a, c.bucket < b) for a, b in ranges)),
                c.provider == key[0],
                view.column == key[1],
                c.outcome.in_(_OUTCOMES),
                *view.where,
            )
            .group_by(*view.grouped(rejecting))
        )
        for outcome, is_rejecting, *totals in conn.execute(query):
            for name, n in zip(WINDOWS, totals, strict=True):
                bump(per[name], view.name(outcome), int(is_rejecting), int(n or 0))

    def same_hour(self, conn: Connection, at: float, days: int) -> dict[str, list[int]]:
        """Per provider: attempts in the hour before ``at`` on each of the ``days`` previous
        days (hour-aligned); 0 where none.

        Read from the store each time, not from the hours ``read`` keeps: a back-filled log
        or a late batch adds to hours already kept, and a provider's quiet past must not
        hide its usual traffic (six one-hour reads per evaluation).
        """
        end = align(at)
        out: dict[str, list[int]] = {}
        for k in range(1, days + 1):
            hour = (end - k * 86400) // HOUR * HOUR - HOUR
            tally = self._hour_tallies(conn, hour, hour + HOUR).get(hour, {})
            for (provider, _domain, outcome, _rej), n in tally.items():
                if outcome in _ATTEMPT_OUTCOMES:
                    out.setdefault(provider, [0] * days)[k - 1] += n
        return out

    def _minutes(self, conn: Connection, start: int, end: int) -> Tally:
        rows = scan(
            conn,
            self.view,
            self._queries[self._today()][1],
            start=start,
            end=end,
            **self._params(),
        )
        return {(p, d, o, int(r)): int(n or 0) for p, d, o, r, n in rows}

    def weekly(
        self, conn: Connection, at: float, weeks: int
    ) -> dict[Key, list[tuple[int, Counts]]]:
        """Per key: (hour start, counts) of the same clock hour on the same weekday in each
        of the ``weeks`` weeks before ``at`` -- the hour holding the instant before ``at``.

        Those hours are fetched once each and kept while they are asked for, so an
        evaluation every minute reads ``weeks`` hours once per event-time hour.  The
        answer is shared between calls of the same hour: callers must not change it.
        """
        end = align(at)
        hours = [(end - 1 - k * WEEK_SECONDS) // HOUR * HOUR for k in range(1, weeks + 1)]
        for hour in hours:
            if hour not in self._weekly:
                tallies = self._hour_tallies(conn, hour, hour + HOUR, weekly=True)
                self._weekly[hour] = tallies.get(hour, {})
        for hour in [h for h in self._weekly if h not in hours]:
            del self._weekly[hour]
        if self._weekly_out is not None and self._weekly_out[0] == hours:
            return self._weekly_out[1]
        out: dict[Key, list[tuple[int, Counts]]] = {}
        for hour in hours:
            per: dict[Key, Counts] = {}
            for (provider, domain, outcome, rej), n in self._weekly[hour].items():
                counts = per.get((provider, domain))
                if counts is None:
                    counts = per[(provider, domain)] = Counts()
                bump(counts, outcome, rej, n)
            for key, counts in per.items():
                out.setdefault(key, []).append((hour, counts))
        self._weekly_out = (hours, out)
        return out

    def _fetch_hours(self, conn: Connection, start: int, end: int) -> None:
        if end <= start:
            return
        for h in range(start, end, HOUR):
            self._hours[h] = {}
        self._hours.update(self._hour_tallies(conn, start, end))

    def _hour_tallies(
        self, conn: Connection, start: int, end: int, weekly: bool = False
    ) -> dict[int, Tally]:
        """Hour start -> tally of ``[start, end)``, hours without rows left out (``weekly``:
        of same-hour-of-week hours)."""
        view = self.view
        c = view.c
        hour = (c.bucket // HOUR).label("hour")
        rejecting = view.rejecting()
        who = subject_of(view, self._today(weekly))
        query = (
            select(hour, c.provider, who, view.outcome, rejecting, func.sum(c.count))
            .where(
                c.bucket >= start,
                c.bucket < end,
                c.outcome.in_(_OUTCOMES),
                *view.where,
                view.column != "",
            )
            .group_by(*view.grouped(rejecting, hour, c.provider, who))
        )
        out: dict[int, Tally] = {}
        for h, provider, domain, outcome, rej, n in conn.execute(query, self._params(weekly)):
            k = (provider, domain, view.name(outcome), int(rej))
            out.setdefault(int(h) * HOUR, {})[k] = int(n or 0)
        return out

    def _advance(self, conn: Connection, lo7: int, lo24: int, hi: int, day: int) -> None:
        current = self._range
        if (
            current is None
            or day != self._day
            or lo7 < current[0]
            or hi < current[2]
            or lo7 >= current[2]
        ):
            self._hours.clear()
            self._fetch_hours(conn, lo7, hi)
            self._sum7, self._sum24 = {}, {}
            for h, tally in self._hours.items():
                merge_tally(self._sum7, tally)
                if h >= lo24:
                    merge_tally(self._sum24, tally)
        else:
            old7, old24, old_hi = current
            self._fetch_hours(conn, old_hi, hi)
            for h in range(old_hi, hi, HOUR):
                merge_tally(self._sum7, self._hours[h])
                merge_tally(self._sum24, self._hours[h])
            for h in range(old24, lo24, HOUR):
                merge_tally(self._sum24, self._hours[h], -1)
            for h in range(old7, lo7, HOUR):
                merge_tally(self._sum7, self._hours.pop(h), -1)
        self._range = (lo7, lo24, hi)
        self._day = day
