"""What the read API answers, read from the store: rollups per window, timelines, incidents.

Every read is bounded: rollups are the top ``limit`` subjects of the longest window, summed
in SQL over the minute buckets of ``counters``; a recipient's deliveries stop at ``limit``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, case, func, select

from monitor.rollup.incidents import list_incidents
from monitor.rollup.windows import WINDOWS, align
from monitor.store.queries import STAT_FIELDS, rates, trace
from monitor.store.schema import BUCKET_SECONDS, counters

__all__ = ["ROLLUP_BY", "deliveries_of", "incidents", "iso", "rollup"]

#: ``/api/domains`` and ``/api/providers``: the ``counters`` column each groups by.
ROLLUP_BY = {"domain": counters.c.recipient_domain, "provider": counters.c.provider}
_LONGEST = max(WINDOWS.values())


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def rollup(conn: Connection, by: str, *, at: float, limit: int) -> dict[str, Any]:
    """The ``limit`` busiest subjects of the last 24 hours up to ``at``, each with its counts
    and rates per window and its open incidents.  A window of length ``w`` holds the minute
    buckets in ``[end - w, end)``, ``end`` being the end of the bucket ``at`` falls in."""
    group = ROLLUP_BY[by]
    end = align(at) + BUCKET_SECONDS
    c = counters.c
    scope = and_(c.bucket >= end - _LONGEST, c.bucket < end, c.outcome.in_(STAT_FIELDS),
                 c.stream != "ndr", group != "")  # fmt: skip
    top = [row[0] for row in conn.execute(
        select(group).where(scope).group_by(group)
        .order_by(func.sum(c.count).desc(), group).limit(limit)
    )]  # fmt: skip
    sums = [func.sum(case((c.bucket >= end - seconds, c.count), else_=0))
            for seconds in WINDOWS.values()]  # fmt: skip
    table: dict[str, dict[str, dict[str, Any]]] = {
        name: {w: dict.fromkeys(STAT_FIELDS, 0) for w in WINDOWS} for name in top
    }
    if top:
        query = (select(group, c.outcome, *sums).where(scope, group.in_(top))
                 .group_by(group, c.outcome))  # fmt: skip
        for name, outcome, *totals in conn.execute(query):
            for window, total in zip(WINDOWS, totals, strict=True):
                table[name][window][outcome] = int(total or 0)
    open_now = [i for i in incidents(conn, open_only=True) if i["provider" if by == "provider"
                                                               else "domain"] in table]
    items = []
    for name in top:
        windows = {w: counts | rates(counts) for w, counts in table[name].items()}
        key = "provider" if by == "provider" else "domain"
        items.append({by: name, "windows": windows,
                      "open_incidents": [i for i in open_now if i[key] == name]})  # fmt: skip
    return {"at": iso(at), "windows": {w: s for w, s in WINDOWS.items()}, "items": items}


def incidents(conn: Connection, *, open_only: bool = False, since: float | None = None,
              kind: str | None = None, limit: int = 500) -> list[dict[str, Any]]:  # fmt: skip
    rows = list_incidents(conn, open_only=open_only, since=since, kind=kind, limit=limit)
    return [r | {"started_at": iso(r["started_at"]), "ended_at": iso(r["ended_at"])}
            for r in rows]


_DELIVERY_TIMES = ("submitted_at", "first_attempt_at", "last_event_at", "final_at")


def deliveries_of(conn: Connection, query: str, *, by: str, limit: int) -> list[dict[str, Any]]:
    """The deliveries ``trace`` finds, each with its timeline (its events, in order)."""
    found = []
    for item in trace(conn, query, by=by, limit=limit):
        delivery = dict(item["delivery"])
        for name in _DELIVERY_TIMES:
            delivery[name] = iso(delivery[name])
        delivery["hard"] = None if delivery["hard"] is None else bool(delivery["hard"])
        delivery["timeline"] = [e.to_dict() for e in item["events"]]
        found.append(delivery)
    return found
