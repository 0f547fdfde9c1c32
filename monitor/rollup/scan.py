"""The windows' names and lengths, and the SQL sums over ``counters`` they are read with.

:func:`window_counts` answers every window with one scan of the trailing week;
:class:`monitor.rollup.windows.WindowReader` reads the same sums hour by hour.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, literal, select

from monitor.rollup.counts import OUTCOMES as _OUTCOMES
from monitor.rollup.counts import Counts
from monitor.rollup.views import RECIPIENT_DOMAINS, Key, View
from monitor.store.schema import BUCKET_SECONDS

#: Window name -> length in seconds; ``SHORT`` is the one detectors judge.
WINDOWS: dict[str, int] = {"5m": 300, "15m": 900, "1h": 3600, "24h": 86400}
SHORT = "5m"
#: The baseline: the trailing 7 days before ``at``, without the short window; for a
#: longer window ``w``, ``baseline_<w>`` leaves that window out (``baseline_of``).
BASELINE = "baseline"
BASELINE_SECONDS = 7 * 86400
#: The same-hour-of-week baseline (``weekly``): ``WEEKLY`` pools the usable weeks' hours,
#: ``WEEKLY_MIN`` holds, per field, the smallest of them (the volume every week had).
WEEKLY = "weekly"
WEEKLY_MIN = "weekly_min"
WEEK_SECONDS = 7 * 86400

#: The subject holding a bounded reader's other subjects, per provider (never judged alone).
REST = "(rest)"


def align(at: float) -> int:
    """``at`` down to a bucket boundary: windows hold whole buckets only."""
    return int(at // BUCKET_SECONDS) * BUCKET_SECONDS


#: (provider, domain, outcome, rejecting 0/1) -> count
Tally = dict[tuple[str, str, str, int], int]


def subject_of(view: View, bounded: bool) -> Any:
    """The subject column, or for a bounded reader the subject when it is in the parameter
    ``kept`` and ``REST`` otherwise (one expression object: selected and grouped by)."""
    if not bounded:
        return view.column
    kept = view.column.in_(bindparam("kept", expanding=True))
    return case((kept, view.column), else_=literal(REST))


def scan_query(view: View, sums: list[Any], bounded: bool = False) -> Any:
    """Counter rows in ``[:start, :end)`` grouped by (provider, subject, field, rejecting),
    with ``sums``.  Bounds are parameters: a reader builds its statements once and runs
    them every evaluation (building and hashing a statement cost more than running it)."""
    c = view.c
    rejecting = view.rejecting()
    who = subject_of(view, bounded)
    return (
        select(c.provider, who, view.outcome, rejecting, *sums)
        .where(
            c.bucket >= bindparam("start"),
            c.bucket < bindparam("end"),
            c.outcome.in_(_OUTCOMES),
            *view.where,
            view.column != "",
        )
        .group_by(*view.grouped(rejecting, c.provider, who))
    )


def window_sums(view: View, names: Iterable[str]) -> list[Any]:
    """Per window name, the count of its buckets (from parameter ``from_<name>`` on)."""
    c = view.c
    return [func.sum(case((c.bucket >= bindparam(f"from_{n}"), c.count), else_=0)) for n in names]


def scan(conn: Connection, view: View, query: Any, **bounds: Any) -> list[Any]:
    rows = conn.execute(query, bounds)
    if not view.prefix:
        return list(rows)
    return [(p, d, view.name(f), *rest) for p, d, f, *rest in rows]


def add_tally(table: dict[Key, dict[str, Counts]], name: str, tally: Tally) -> None:
    for (provider, domain, outcome, is_rejecting), n in tally.items():
        if not n:
            continue
        per = table.get((provider, domain))
        if per is None:
            per = table[(provider, domain)] = {w: Counts() for w in (*WINDOWS, BASELINE)}
        counts = per[name]
        setattr(counts, outcome, getattr(counts, outcome) + n)
        if is_rejecting:
            counts.rejecting += n


def merge(table: dict[Key, dict[str, Counts]], other: dict[Key, dict[str, Counts]]) -> None:
    """Add ``other``'s windows into ``table`` (another view of the same subjects)."""
    for key, windows in other.items():
        per = table.get(key)
        if per is None:
            table[key] = windows
            continue
        for name, counts in windows.items():
            per[name] = per[name] + counts


def window_counts(
    conn: Connection, at: float, view: View = RECIPIENT_DOMAINS
) -> dict[Key, dict[str, Counts]]:
    """Per (provider, subject): ``Counts`` for every window in WINDOWS and for the baseline.

    Windows end at ``at`` (aligned down to a bucket, exclusive); ``view`` says which rows
    count (by default, our own non-delivery notices and rows without a recipient domain
    are left out) and its ``extras`` add the hard/soft and blame counts.
    """
    table = _window_counts(conn, at, view)
    for extra in view.extras:
        merge(table, _window_counts(conn, at, extra))
    return table


def _window_counts(conn: Connection, at: float, view: View) -> dict[Key, dict[str, Counts]]:
    end = align(at)
    query = scan_query(view, [*window_sums(view, WINDOWS), func.sum(view.c.count)])
    cuts = {f"from_{name}": end - seconds for name, seconds in WINDOWS.items()}
    rows = scan(conn, view, query, start=end - BASELINE_SECONDS, end=end, **cuts)
    names = (*WINDOWS, BASELINE)
    short = list(WINDOWS).index(SHORT)
    tallies: dict[str, Tally] = {name: {} for name in names}
    for provider, domain, outcome, is_rejecting, *totals in rows:
        values = [int(t or 0) for t in totals]
        values[-1] -= values[short]  # the baseline leaves the short window out
        for name, n in zip(names, values, strict=True):
            tallies[name][(provider, domain, outcome, int(is_rejecting))] = n
    table: dict[Key, dict[str, Counts]] = {}
    for name in names:
        add_tally(table, name, tallies[name])
    return table


HOUR = 3600
#: The windows a reader sums from minute buckets; 24 h comes from the hourly running sums.
SHORTER = tuple(name for name in WINDOWS if name != "24h")


def ceil_hour(t: float) -> int:
    return -(-int(t) // HOUR) * HOUR


def bump(counts: Counts, outcome: str, rejecting: int, n: int) -> None:
    setattr(counts, outcome, getattr(counts, outcome) + n)
    if rejecting:
        counts.rejecting += n


def merge_tally(into: Tally, tally: Tally, sign: int = 1) -> None:
    for k, n in tally.items():
        into[k] = into.get(k, 0) + sign * n


def baseline_of(windows: dict[str, Counts], name: str) -> Counts:
    """The baseline that goes with window ``name``: the week before it."""
    return windows[BASELINE if name == SHORT else f"{BASELINE}_{name}"]


def with_baselines(
    windows: dict[str, Counts], excluded: dict[str, Counts] | None = None
) -> dict[str, Counts]:
    """``windows`` plus ``baseline_<w>`` for every longer window, minus incident time.

    ``excluded[w]`` holds the counts of incident time inside ``w``'s baseline (see
    ``incident_counts``), so every baseline leaves it out exactly once.
    """
    raw = windows[BASELINE]
    out = dict(windows)
    if excluded:
        out[BASELINE] = raw - excluded[SHORT]
    short = windows[SHORT]
    for name in WINDOWS:
        if name != SHORT:
            base = raw - (windows[name] - short)
            out[f"{BASELINE}_{name}"] = base - excluded[name] if excluded else base
    return out
