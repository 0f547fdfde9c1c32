"""Queue age from the deliveries table: counters carry no times per message (latency, the
other input read from delivery rows, lives in ``latency.py``).

Live (at the newest counter bucket or later), queue age goes through the
``(recipient_domain, state)`` index: the deferred rows of the domains the windows saw, plus
those that reached their final outcome since (the index of rows ever deferred by final time,
schema 11).  An evaluation of
an earlier time (a replay after ``mailmon ingest`` of an old log) judges the queue *as of*
that time instead: what had its first attempt by then and no final outcome yet, from the rows
ever deferred, read once per ``QueueReader`` (again when events were stored since) and
filtered in memory at each step; only the rows of the domains asked for are kept (the
window readers' kept domains), so memory is bounded in their number.  Both give the same
answer for the same time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, func, literal, or_, select

from monitor.rollup.detectors import QueueAgeDetector, QueueStats
from monitor.rollup.incidents import rank_replies
from monitor.rollup.views import Key
from monitor.rollup.windows import align
from monitor.store.schema import deliveries, events

__all__ = [
    "QueueReader",
    "queue_stats",
    "replies_before",
    "stuck_replies",
]

_IN_CHUNK = 500


def queue_stats(
    conn: Connection,
    at: float,
    domains: Iterable[str],
    detector: QueueAgeDetector,
    *,
    final_after: bool = False,
) -> dict[Key, QueueStats]:
    """Per (provider, domain): deliveries deferred now and first tried by ``at``, and how
    many of them more than the detector's max age before ``at``.

    ``final_after``: also those that were deferred at ``at`` and reached their final outcome
    since (inside the newest bucket, live), so a live evaluation and a replay of the same
    time agree.
    """
    end = align(at)
    cut = end - detector.max_age_seconds
    names = sorted(set(domains))
    found: dict[Key, list[float]] = {}
    if final_after:
        wanted = set(names)
        for provider, domain, first in _final_after(conn, end):
            if domain in wanted:
                found.setdefault((provider, domain), []).append(first)
    for i in range(0, len(names), _IN_CHUNK):
        rows = conn.execute(
            select(
                func.coalesce(deliveries.c.provider, literal("other")),
                deliveries.c.recipient_domain,
                deliveries.c.first_attempt_at,
            ).where(
                deliveries.c.recipient_domain.in_(names[i : i + _IN_CHUNK]),
                deliveries.c.state == "deferred",
                deliveries.c.first_attempt_at <= end,
                deliveries.c.stream != "ndr",
            )
        )
        for provider, domain, first in rows:
            found.setdefault((provider, domain), []).append(float(first))
    return {key: _queue(firsts, end, cut) for key, firsts in found.items()}


def _final_after(conn: Connection, end: float) -> list[tuple[str, str, float]]:
    """(provider, domain, first attempt) of deliveries deferred at ``end`` and final since,
    through the partial index of the rows ever deferred by final time (schema 11): the
    few that became final in the newest minute, not every event of that minute."""
    d = deliveries.c
    rows = conn.execute(
        select(
            func.coalesce(d.provider, literal("other")), d.recipient_domain, d.first_attempt_at
        ).where(
            d.deferrals > 0,
            d.final_at > end,
            d.first_attempt_at <= end,
            d.stream != "ndr",
        )
    )
    return [(p, dom, float(first)) for p, dom, first in rows]


def _queue(firsts: list[float], end: float, cut: float) -> QueueStats:
    stuck = [t for t in firsts if t <= cut]
    return QueueStats(
        stuck=len(stuck), oldest_age=end - min(stuck) if stuck else None, deferred=len(firsts)
    )


class QueueReader:
    """Queue age per (provider, domain) at an evaluation time: live from the deferred rows,
    for an earlier time as of then (module docstring)."""

    def __init__(self) -> None:
        self._since: float | None = None  # the earliest time the loaded rows answer for
        # domain -> (provider, first attempt, final time or None, delivery key) of its rows
        self._rows: dict[str, list[tuple[str, float, float | None, str]]] = {}
        self._stuck: dict[Key, list[str]] = {}
        self._mark: str | None = None

    def read(
        self,
        conn: Connection,
        at: float,
        domains: Iterable[str],
        detector: QueueAgeDetector,
        newest: float | None,
    ) -> dict[Key, QueueStats]:
        """``queue_stats`` at ``at``; ``newest``: the newest counter bucket (None: none)."""
        end = align(at)
        self._stuck = {}
        names = set(domains)
        if newest is None or end >= newest:
            self._since, self._rows = None, {}
            return queue_stats(conn, end, names, detector, final_after=True)
        # Stored events change the rows: the newest event id (time-ordered) tells.
        mark = conn.execute(select(func.max(events.c.id))).scalar()
        if self._since is None or end < self._since or mark != self._mark:
            self._since, self._rows = end, {}
            self._load(conn, names, whole=True)
            self._mark = mark
        else:
            for domain in [d for d in self._rows if d not in names]:
                del self._rows[domain]
            self._load(conn, names - self._rows.keys())
        cut = end - detector.max_age_seconds
        found: dict[Key, list[float]] = {}
        for domain in names:
            for provider, first, final, key in self._rows.get(domain, ()):
                if first <= end and (final is None or final > end):
                    found.setdefault((provider, domain), []).append(first)
                    if first <= cut:
                        self._stuck.setdefault((provider, domain), []).append(key)
        return {key: _queue(firsts, end, cut) for key, firsts in found.items()}

    def stuck_keys(self, key: Key) -> list[str] | None:
        """The delivery keys stuck at the last ``read`` of an earlier time (None: it was live)."""
        return None if self._since is None else self._stuck.get(key, [])

    def _load(self, conn: Connection, names: set[str], whole: bool = False) -> None:
        """The rows of ``names`` ever deferred and not final by the load's first time:
        ``whole``, one scan of them all through the index of rows ever deferred (a few
        percent of the rows), kept for ``names`` only; else those of a few domains new to
        the reader (the choice of domains grew), by domain."""
        if not names:
            return
        for name in names:
            self._rows.setdefault(name, [])
        c = deliveries.c
        query = select(
            func.coalesce(c.provider, literal("other")),
            c.recipient_domain,
            c.first_attempt_at,
            c.final_at,
            c.key,
        ).where(
            c.deferrals > 0,
            c.first_attempt_at.is_not(None),
            c.recipient_domain.is_not(None),
            or_(c.final_at.is_(None), c.final_at > self._since),
            c.stream != "ndr",
        )
        chunks = [None] if whole else _chunks(sorted(names))
        for chunk in chunks:
            where = query if chunk is None else query.where(c.recipient_domain.in_(chunk))
            for p, d, first, final, k in conn.execute(where):
                rows = self._rows.get(d)
                if rows is not None:
                    rows.append((p, float(first), final, k))


def _chunks(names: list[str]) -> list[list[str] | None]:
    return [names[i : i + _IN_CHUNK] for i in range(0, len(names), _IN_CHUNK)]


def replies_before(
    conn: Connection, keys: list[str], end: float, limit: int
) -> list[dict[str, Any]]:
    """The last deferral reply before ``end`` of each of these deliveries, ranked: why they
    waited then (their delivery rows may hold a later outcome)."""
    latest: dict[str, tuple[float, tuple[Any, ...]]] = {}
    c = events.c
    for i in range(0, min(len(keys), 5000), _IN_CHUNK):
        rows = conn.execute(
            select(
                c.delivery_key, c.occurred_at, c.reply_code, c.enhanced_status, c.reason,
                c.diagnostic,
            ).where(
                c.delivery_key.in_(keys[i : i + _IN_CHUNK]),
                c.type == "deferred",
                c.occurred_at < end,
            )
        )  # fmt: skip
        for key, at, *reply in rows:
            if key not in latest or at > latest[key][0]:
                latest[key] = (at, tuple(reply))
    return rank_replies((reply for _at, reply in latest.values()), limit)


def stuck_replies(
    conn: Connection, key: Key, at: float, max_age: float, limit: int
) -> list[dict[str, Any]]:
    """The most frequent last replies of a domain's stuck deliveries (why they wait)."""
    end = align(at)
    rows = conn.execute(
        select(
            deliveries.c.reply_code,
            deliveries.c.enhanced_status,
            deliveries.c.reason,
            deliveries.c.diagnostic,
        )
        .where(
            deliveries.c.recipient_domain == key[1],
            deliveries.c.state == "deferred",
            deliveries.c.first_attempt_at <= end - max_age,
            deliveries.c.stream != "ndr",
        )
        .limit(5000)
    )
    return rank_replies(rows, limit)
