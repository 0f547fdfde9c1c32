"""Incidents in the store: open, close and list them, idempotently in event time."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from monitor.model import domain_of
from monitor.rollup.views import FAILURES, RECIPIENT_DOMAINS, View
from monitor.store.schema import deliveries, events, incidents
from monitor.store.writer import stream_tag

__all__ = [
    "active",
    "active_all",
    "close",
    "failure_breakdown",
    "list_incidents",
    "open_incident",
    "overlapping",
    "rank_replies",
    "top_reasons",
    "top_replies",
    "top_sender_replies",
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
    domain: str | Collection[str],
    since: float,
    until: float,
    reasons: frozenset[str] | None,
    limit: int,
    states: tuple[str, ...] = ("deferred", "bounced"),
) -> list[dict[str, Any]]:
    """The most frequent failing replies of ``domain`` (or of several: a provider's) in
    ``[since, until)`` from delivery rows.

    Delivery rows keep each recipient's latest reply; through the (domain, state) index
    this stays cheap, and it only runs when an incident opens.
    """
    query = select(
        deliveries.c.reply_code,
        deliveries.c.enhanced_status,
        deliveries.c.reason,
        deliveries.c.diagnostic,
    ).where(
        deliveries.c.recipient_domain == domain
        if isinstance(domain, str)
        else deliveries.c.recipient_domain.in_(sorted(domain)),
        deliveries.c.state.in_(states),
        and_(deliveries.c.last_event_at >= since, deliveries.c.last_event_at < until),
    )
    if reasons is not None:
        query = query.where(deliveries.c.reason.in_(sorted(reasons)))
    return rank_replies(conn.execute(query.limit(5000)), limit)


def top_sender_replies(
    conn: Connection,
    level: str,
    key: tuple[str, str],
    since: float,
    until: float,
    reasons: frozenset[str] | None,
    limit: int,
    states: tuple[str, ...] = ("deferred", "bounced"),
) -> list[dict[str, Any]]:
    """The most frequent failing replies to one (provider, sending IP / sending domain /
    stream) in ``[since, until)``.

    Delivery rows keep none of these, so this reads events: their ids start with the
    event's UNIX second in hex (``monitor.model.identity``), so the id range is the time
    range and the primary key index serves it.  A stream is found in the tags as the
    writer finds it (``stream_tag``), after the SQL filter.
    """
    c = events.c
    query = select(c.reply_code, c.enhanced_status, c.reason, c.diagnostic, c.sender, c.tags).where(
        c.id >= f"{int(since) & 0xFFFFFFFF:08x}",
        c.id < f"{int(until) & 0xFFFFFFFF:08x}",
        c.occurred_at >= since,
        c.occurred_at < until,
        c.provider == key[0],
        c.type.in_(states),
    )
    if level == "sending_ip":
        query = query.where(c.sending_ip == key[1])
    elif level == "sender_domain":  # LIKE narrows, domain_of decides (as the writer did)
        query = query.where(func.lower(c.sender).like(f"%@{key[1]}"))
    elif level == "stream":
        query = query.where(c.tags.like(f"%{key[1]}%"))
    if reasons is not None:
        query = query.where(c.reason.in_(sorted(reasons)))
    rows = list(conn.execute(query.limit(20000)))
    if level == "sender_domain":
        rows = [r for r in rows if domain_of(r[4]) == key[1]]
    elif level == "stream":
        rows = [r for r in rows if stream_tag((r[5] or "").split(",")) == key[1]]
    return rank_replies((r[:4] for r in rows), limit)


def rank_replies(rows: Iterable[Any], limit: int) -> list[dict[str, Any]]:
    """(reply code, enhanced status, reason, text) rows, most frequent first, as evidence."""
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
    view: View | None = None,
) -> list[dict[str, Any]]:
    """Failed attempts by reason for one (provider, subject) in ``[since, until)``, from
    the counters ``view`` reads (by default: recipient domains, ``""`` the whole provider).
    """
    view = view or RECIPIENT_DOMAINS
    c = view.c
    total = func.sum(c.count)
    subject = [c.provider == provider]
    if domain:
        subject.append(view.column == domain)
    rows = conn.execute(
        select(c.outcome, c.reason, total)
        .where(c.bucket >= since, c.bucket < until, *subject, c.outcome.in_(outcomes), *view.where)
        .group_by(c.outcome, c.reason)
        .order_by(total.desc(), c.reason)
        .limit(limit)
    )
    return [{"outcome": o, "reason": r or "undefined", "count": int(n)} for o, r, n in rows]


def failure_breakdown(
    conn: Connection,
    provider: str,
    domain: str,
    since: float,
    until: float,
    outcomes: tuple[str, ...] = ("deferred", "bounced", "expired"),
    limit: int = 10,
    view: View = FAILURES,
) -> dict[str, Any]:
    """Failures of one (provider, subject; ``""`` the whole provider) in ``[since, until)``
    by hard/soft, by blame and by reason: by default of a recipient domain, from
    ``failure_counters``; with a sender-side ``view``, from ``sender_counters`` (schema 8).

    ``hard`` and ``blame`` count every failure (``unclassified`` where the classifier said
    nothing); ``reasons`` are the ``limit`` largest (outcome, reason, hard, blame) groups.
    """
    c = view.c
    total = func.sum(c.count)
    subject = [c.provider == provider]
    if domain:
        subject.append(view.column == domain)
    rows = conn.execute(
        select(c.outcome, c.reason, c.hard, c.blame, total)
        .where(c.bucket >= since, c.bucket < until, *subject, c.outcome.in_(outcomes), *view.where)
        .group_by(c.outcome, c.reason, c.hard, c.blame)
    )
    hard: dict[str, int] = {}
    blame: dict[str, int] = {}
    groups = []
    for outcome, reason, is_hard, who, n in rows:
        n = int(n or 0)
        hard[is_hard or "unclassified"] = hard.get(is_hard or "unclassified", 0) + n
        blame[who or "unclassified"] = blame.get(who or "unclassified", 0) + n
        groups.append((outcome, reason or "undefined", is_hard or "unclassified",
                       who or "unclassified", n))  # fmt: skip
    groups.sort(key=lambda g: (-g[4], g[:4]))
    return {
        "hard": dict(sorted(hard.items())),
        "blame": dict(sorted(blame.items(), key=lambda kv: (-kv[1], kv[0]))),
        "reasons": [
            {"outcome": o, "reason": r, "hard": h, "blame": b, "count": n}
            for o, r, h, b, n in groups[:limit]
        ],
    }
