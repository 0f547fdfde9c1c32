"""Incidents in the store: open, close and list them, idempotently in event time."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from monitor.store.schema import counters, deliveries, incidents

__all__ = [
    "active",
    "active_all",
    "close",
    "list_incidents",
    "open_incident",
    "overlapping",
    "top_reasons",
    "top_replies",
]


def active(conn: Connection, kind: str, at: float) -> dict[tuple[str, str], dict[str, Any]]:
    """Incidents of ``kind`` covering ``at`` (started at or before, not ended by then)."""
    return active_all(conn, at).get(kind, {})


def active_all(conn: Connection, at: float) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """Incidents covering ``at`` by kind, then by (provider, domain)."""
    rows = conn.execute(
        select(incidents).where(
            incidents.c.started_at <= at,
            or_(incidents.c.ended_at.is_(None), incidents.c.ended_at > at),
        )
    ).mappings()
    out: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["kind"], {})[(r["provider"], r["domain"])] = dict(r)
    return out


def overlapping(conn: Connection, start: float, end: float) -> list[dict[str, Any]]:
    """Incidents of every kind that started before ``end`` and were open after ``start``."""
    rows = conn.execute(
        select(
            incidents.c.kind,
            incidents.c.provider,
            incidents.c.domain,
            incidents.c.started_at,
            incidents.c.ended_at,
        ).where(
            incidents.c.started_at < end,
            or_(incidents.c.ended_at.is_(None), incidents.c.ended_at > start),
        )
    ).mappings()
    return [dict(r) for r in rows]


def open_incident(
    conn: Connection, kind: str, provider: str, domain: str, at: float, evidence: dict[str, Any]
) -> None:
    conn.execute(
        incidents.insert().values(
            kind=kind,
            provider=provider,
            domain=domain,
            started_at=at,
            ended_at=None,
            evidence=json.dumps(evidence, sort_keys=True),
        )
    )


def close(conn: Connection, row: dict[str, Any], at: float, resolution: dict[str, Any]) -> None:
    """End an open incident at ``at``, keeping the evidence that opened it."""
    evidence = json.loads(row["evidence"])
    evidence["resolution"] = resolution
    conn.execute(
        incidents.update()
        .where(incidents.c.id == row["id"], incidents.c.ended_at.is_(None))
        .values(ended_at=at, evidence=json.dumps(evidence, sort_keys=True))
    )


def top_replies(
    conn: Connection,
    domain: str,
    since: float,
    until: float,
    reasons: frozenset[str] | None,
    limit: int,
    states: tuple[str, ...] = ("deferred", "bounced"),
) -> list[dict[str, Any]]:
    """The most frequent failing replies of ``domain`` in ``[since, until)`` from delivery rows.

    Delivery rows keep each recipient's latest reply; through the (domain, state) index
    this stays cheap, and it only runs when an incident opens.
    """
    query = select(
        deliveries.c.reply_code,
        deliveries.c.enhanced_status,
        deliveries.c.reason,
        deliveries.c.diagnostic,
    ).where(
        deliveries.c.recipient_domain == domain,
        deliveries.c.state.in_(states),
        and_(deliveries.c.last_event_at >= since, deliveries.c.last_event_at < until),
    )
    if reasons is not None:
        query = query.where(deliveries.c.reason.in_(sorted(reasons)))
    rows = conn.execute(query.limit(5000))
    tally: dict[tuple[Any, ...], int] = {}
    for code, status, reason, text in rows:
        key = (code, status, reason, (text or "")[:300])
        tally[key] = tally.get(key, 0) + 1
    ranked = sorted(tally.items(), key=lambda kv: (-kv[1], str(kv[0])))[:limit]
    return [
        {"reply_code": c, "enhanced_status": s, "reason": r, "text": t, "count": n}
        for (c, s, r, t), n in ranked
    ]


def list_incidents(
    conn: Connection,
    *,
    open_only: bool = False,
    since: float | None = None,
    kind: str | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Incidents, newest first; ``since`` keeps those still open or ended after it."""
    query = select(incidents).order_by(incidents.c.started_at.desc(), incidents.c.id.desc())
    if kind is not None:
        query = query.where(incidents.c.kind == kind)
    if open_only:
        query = query.where(incidents.c.ended_at.is_(None))
    if since is not None:
        query = query.where(or_(incidents.c.ended_at.is_(None), incidents.c.ended_at >= since))
    result = []
    for row in conn.execute(query.limit(limit)).mappings():
        item = dict(row)
        item["evidence"] = json.loads(item["evidence"])
        result.append(item)
    return result


def top_reasons(
    conn: Connection,
    provider: str,
    domain: str,
    since: float,
    until: float,
    limit: int = 5,
    outcomes: tuple[str, ...] = ("deferred", "bounced"),
) -> list[dict[str, Any]]:
    """Failed attempts by reason for one (provider, domain) in ``[since, until)``, from counters.

    Domain ``""`` means the whole provider.
    """
    total = func.sum(counters.c.count)
    subject = [counters.c.provider == provider]
    if domain:
        subject.append(counters.c.recipient_domain == domain)
    rows = conn.execute(
        select(counters.c.outcome, counters.c.reason, total)
        .where(
            counters.c.bucket >= since,
            counters.c.bucket < until,
            *subject,
            counters.c.outcome.in_(outcomes),
            counters.c.stream != "ndr",
        )
        .group_by(counters.c.outcome, counters.c.reason)
        .order_by(total.desc(), counters.c.reason)
        .limit(limit)
    )
    return [{"outcome": o, "reason": r or "undefined", "count": int(n)} for o, r, n in rows]
