"""Read queries: per-group stats from the counters, timelines from events and deliveries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, case, func, or_, select

from monitor.model import Event, EventType
from monitor.store.schema import (
    SENDER_DIMENSIONS,
    counters,
    deliveries,
    events,
    failure_counters,
    sender_counters,
)

__all__ = [
    "STATS_BY",
    "STAT_FIELDS",
    "TRACE_BY",
    "count",
    "event_ids",
    "rates",
    "stats",
    "top_domains",
    "trace",
]

#: Counted outcomes reported per group; ``deferred`` counts attempts, the rest recipients.
STAT_FIELDS = ("submitted", "delivered", "deferred", "bounced", "expired", "rejected", "complained")


#: Within one second: submission, then attempts in order, then the outcome.
_TYPE_ORDER = case(
    (events.c.type == EventType.SUBMITTED.value, 0),
    (events.c.type == EventType.DEFERRED.value, 1),
    else_=2,
)


def rates(row: dict[str, Any]) -> dict[str, float | None]:
    """The rates of one stats row (None where the denominator is zero).

    delivery/bounce rate: share of recipients with a final outcome that were
    delivered/bounced; deferral rate: deferrals per attempt; complaint rate:
    complaints per delivered message (the Gmail / Yahoo sender-rule definition).
    """
    finals = row["delivered"] + row["bounced"] + row["expired"]
    attempts = row["delivered"] + row["bounced"] + row["deferred"]

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 6) if b else None

    return {
        "delivery_rate": ratio(row["delivered"], finals),
        "bounce_rate": ratio(row["bounced"], finals),
        "deferral_rate": ratio(row["deferred"], attempts),
        "complaint_rate": ratio(row["complained"], row["delivered"]),
    }


_RECIPIENT_SIDE = {
    "domain": counters.c.recipient_domain,
    "provider": counters.c.provider,
    "reason": counters.c.reason,  # the failure class; successes have none ("")
}
#: What ``stats`` groups by: the recipient side from ``counters``, the sender side
#: (sending domain, sending IP, stream tag) from ``sender_counters``.
STATS_BY = (*_RECIPIENT_SIDE, "blame", *SENDER_DIMENSIONS)


def stats(
    conn: Connection,
    by: str,
    *,
    since: float | None = None,
    until: float | None = None,
    include_ndr: bool = False,
) -> list[dict[str, Any]]:
    if by not in STATS_BY:
        raise ValueError(f"stats by {by!r}: expected one of {', '.join(STATS_BY)}")
    if by in _RECIPIENT_SIDE:
        table, group = counters, _RECIPIENT_SIDE[by]
        where = [] if include_ndr else [counters.c.stream != "ndr"]
    elif by == "blame":
        # Only failures carry a blame: failure_counters holds them and nothing else.
        table, group = failure_counters, failure_counters.c.blame
        where = [] if include_ndr else [failure_counters.c.stream != "ndr"]
    else:
        table, group = sender_counters, sender_counters.c.value
        where = [sender_counters.c.dimension == by]
        if not include_ndr:
            where.append(sender_counters.c.ndr == 0)
    c = table.c
    query = (
        select(group, c.outcome, func.sum(c.count))
        .where(c.outcome.in_(STAT_FIELDS), *where)
        .group_by(group, c.outcome)
    )
    if since is not None:
        query = query.where(c.bucket >= since)
    if until is not None:
        query = query.where(c.bucket < until)
    groups: dict[str, dict[str, Any]] = {}
    for name, outcome, total in conn.execute(query):
        row = groups.setdefault(name or "", {by: name or ""} | dict.fromkeys(STAT_FIELDS, 0))
        row[outcome] = int(total)
    result = [row | rates(row) for row in groups.values()]
    result.sort(key=lambda r: (-(r["submitted"] + r["delivered"] + r["deferred"]), r[by]))
    return result


def _event_from_row(row: Any) -> Event:
    return Event(
        type=EventType(row["type"]),
        occurred_at=datetime.fromtimestamp(row["occurred_at"], UTC),
        source=row["source"],
        message_id=row["message_id"],
        queue_id=row["queue_id"],
        provider_message_id=row["provider_message_id"],
        sender=row["sender"],
        recipient=row["recipient"],
        orig_recipient=row["orig_recipient"],
        recipient_domain=row["recipient_domain"],
        provider=row["provider"],
        relay=row["relay"],
        sending_ip=row["sending_ip"],
        client=row["client"],
        reply_code=row["reply_code"],
        enhanced_status=row["enhanced_status"],
        diagnostic=row["diagnostic"],
        reason=row["reason"],
        hard=row["hard"],
        blame=row["blame"],
        rule=row["rule"],
        delay_seconds=row["delay_seconds"],
        size_bytes=row["size_bytes"],
        attempt=row["attempt"],
        tags=tuple(row["tags"].split(",")) if row["tags"] else (),
        raw_ref=row["raw_ref"],
        id=row["id"],
    )


#: What ``trace`` matches a query against.
TRACE_BY = ("any", "message", "recipient")


def trace(
    conn: Connection, query: str, *, limit: int = 200, by: str = "any"
) -> list[dict[str, Any]]:
    """Every delivery matching a Message-ID, queue id or recipient, with its ordered events;
    ``by="message"`` matches only the first two, ``by="recipient"`` only the last."""
    if by not in TRACE_BY:
        raise ValueError(f"trace by {by!r}: expected one of {', '.join(TRACE_BY)}")
    text = query.strip()
    bare = text[1:-1] if text.startswith("<") and text.endswith(">") else text
    conditions = []
    if by != "recipient":
        conditions += [deliveries.c.message_id == bare, deliveries.c.queue_id == bare]
    if "@" in bare and by != "message":
        local, _, domain = bare.rpartition("@")
        conditions.append(deliveries.c.recipient.in_({bare, f"{local}@{domain.lower()}"}))
    if not conditions:
        return []  # a recipient without an "@" names no one
    matches = or_(*conditions)
    found = conn.execute(
        select(deliveries).where(matches).order_by(deliveries.c.last_event_at).limit(limit)
    ).mappings()
    result = []
    for row in found:
        evs = conn.execute(
            select(events)
            .where(events.c.delivery_key == row["key"])
            .order_by(events.c.occurred_at, _TYPE_ORDER, events.c.attempt, events.c.id)
        ).mappings()
        result.append({"delivery": dict(row), "events": [_event_from_row(e) for e in evs]})
    return result


def top_domains(conn: Connection, n: int, *, since: float | None = None) -> list[str]:
    if n <= 0:
        return []
    query = (
        select(counters.c.recipient_domain, func.sum(counters.c.count).label("n"))
        .where(counters.c.recipient_domain != "")
        .group_by(counters.c.recipient_domain)
        .order_by(func.sum(counters.c.count).desc(), counters.c.recipient_domain)
        .limit(n)
    )
    if since is not None:
        query = query.where(counters.c.bucket >= since)
    return [r[0] for r in conn.execute(query)]


def count(conn: Connection, table: str) -> int:
    tables = {
        "events": events,
        "deliveries": deliveries,
        "counters": counters,
        "sender_counters": sender_counters,
    }
    return int(conn.execute(select(func.count()).select_from(tables[table])).scalar_one())


def event_ids(conn: Connection) -> list[str]:
    return [r[0] for r in conn.execute(select(events.c.id).order_by(events.c.id))]
