"""What the weekly report reads from the store, as pandas frames (one read per table).

Counters (minute buckets, summed in SQL) give the volumes and rates, as ``mailmon stats``
reads them; failure counters the bounce reasons and blame; delivered rows of
``deliveries`` the latency; events of the week (an id range: ids start with the event's
second, so the primary key serves it) the sources seen and the recipients to suppress;
``incidents`` and the record kinds (seeds, DMARC, DNS) the rest.  Our own non-delivery
notices (stream ``ndr``) are left out, as ``stats`` leaves them out by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Select, case, func, select

from monitor.collectors.reports.records import DmarcRow, TlsrptPolicy
from monitor.collectors.seeds.records import SeedPlacement
from monitor.dnscheck.records import DnsblListing, DnsCheck
from monitor.records import Record
from monitor.rollup.incidents import list_incidents
from monitor.store import Store
from monitor.store.queries import STAT_FIELDS
from monitor.store.records import read_records
from monitor.store.schema import counters, deliveries, events, failure_counters

__all__ = ["WeekData", "load"]

#: How far back a DNS check may lie and still be the "before" of a change in the week.
DNS_HISTORY_SECONDS = 90 * 86400


@dataclass(frozen=True)
class WeekData:
    """The store's rows for one report: the week ``[start, end)`` and the one before."""

    start: float
    end: float
    previous_start: float
    counters: pd.DataFrame  # week ("this", "previous"), domain, provider, outcome, count
    daily: pd.DataFrame  # bucket (quarter hour), outcome (delivered, complained), count
    failures: pd.DataFrame  # provider, outcome (bounced), reason, hard, blame, count
    latency: pd.DataFrame  # final_at, provider, seconds
    event_sources: pd.DataFrame  # source, type, count (this week)
    suppress: pd.DataFrame  # recipient, type, reason, hard, occurred_at (this week)
    incidents: list[dict[str, Any]]
    seeds: list[SeedPlacement]
    dmarc: list[DmarcRow]
    tls: list[TlsrptPolicy]
    dns_checks: list[DnsCheck]
    dnsbl: list[DnsblListing]


def _frame(conn: Connection, query: Select[Any], columns: Sequence[str]) -> pd.DataFrame:
    """The rows of ``query`` as a frame with ``columns`` (also when there are none)."""
    return pd.DataFrame.from_records(conn.execute(query).all(), columns=list(columns))


def _records(conn: Connection, kind: str, since: float, until: float) -> list[Any]:
    return read_records(conn, kind, since=since, until=until)


def _id_range(since: float, until: float) -> list[Any]:
    c = events.c
    return [c.id >= f"{int(since) & 0xFFFFFFFF:08x}", c.id < f"{int(until) + 1 & 0xFFFFFFFF:08x}",
            c.occurred_at >= since, c.occurred_at < until]  # fmt: skip


def load(store: Store, start: float, end: float, previous_start: float) -> WeekData:
    """Read the week ``[start, end)`` and, for the comparisons, ``[previous_start, start)``."""
    with store.engine.connect() as conn:
        c = counters.c
        # Summed in SQL per week, not read per minute: a week of a busy store has a row per
        # minute, domain and outcome.  The days of the complaint chart come from quarter
        # hours (every time zone's offset is a whole number of them), without the domain.
        week = case((c.bucket >= start, "this"), else_="previous")
        counted = _frame(conn, select(week, c.recipient_domain, c.provider, c.outcome,
                                      func.sum(c.count)).where(
            c.bucket >= previous_start, c.bucket < end, c.stream != "ndr",
            c.outcome.in_(STAT_FIELDS)).group_by(week, c.recipient_domain, c.provider, c.outcome),
            ("week", "domain", "provider", "outcome", "count"))  # fmt: skip
        quarter = c.bucket - c.bucket % 900
        daily = _frame(conn, select(quarter, c.outcome, func.sum(c.count)).where(
            c.bucket >= start, c.bucket < end, c.stream != "ndr",
            c.outcome.in_(("delivered", "complained"))).group_by(quarter, c.outcome),
            ("bucket", "outcome", "count"))  # fmt: skip
        f = failure_counters.c
        failures = _frame(conn, select(f.provider, f.outcome, f.reason, f.hard, f.blame,
                                       func.sum(f.count)).where(
            f.bucket >= start, f.bucket < end, f.stream != "ndr", f.outcome == "bounced")
            .group_by(f.provider, f.outcome, f.reason, f.hard, f.blame),
            ("provider", "outcome", "reason", "hard", "blame", "count"))  # fmt: skip
        d = deliveries.c
        latency = _frame(conn, select(d.final_at, d.provider, d.final_at - d.submitted_at).where(
            d.state == "delivered", d.final_at >= previous_start, d.final_at < end,
            d.submitted_at.is_not(None), d.stream != "ndr"),
            ("final_at", "provider", "seconds"))  # fmt: skip
        e = events.c
        sources = _frame(conn, select(e.source, e.type, func.count()).where(
            *_id_range(start, end)).group_by(e.source, e.type),
            ("source", "type", "count"))  # fmt: skip
        suppress = _frame(conn, select(e.recipient, e.type, e.reason, e.hard, e.occurred_at).where(
            *_id_range(start, end), e.type.in_(("bounced", "complained")),
            e.recipient.is_not(None)),
            ("recipient", "type", "reason", "hard", "occurred_at"))  # fmt: skip
        found = [i for i in list_incidents(conn, since=start, limit=10_000)
                 if i["started_at"] < end]  # fmt: skip
        return WeekData(
            start=start, end=end, previous_start=previous_start,
            counters=counted, daily=daily, failures=failures, latency=latency,
            event_sources=sources,
            suppress=suppress, incidents=sorted(found, key=lambda i: (i["started_at"], i["id"])),
            seeds=_records(conn, SeedPlacement.kind, start, end),
            dmarc=_records(conn, DmarcRow.kind, start, end),
            tls=_records(conn, TlsrptPolicy.kind, start, end),
            dns_checks=_records(conn, DnsCheck.kind, start - DNS_HISTORY_SECONDS, end),
            dnsbl=_records(conn, DnsblListing.kind, start, end),
        )  # fmt: skip


def record_counts(data: WeekData) -> dict[str, int]:
    """How many records of each kind the week has (DNS checks: those in the week)."""
    in_week = [r for r in data.dns_checks if r.occurred_at.timestamp() >= data.start]
    kinds: list[tuple[str, Sequence[Record]]] = [
        (SeedPlacement.kind, data.seeds), (DmarcRow.kind, data.dmarc),
        (TlsrptPolicy.kind, data.tls), (DnsCheck.kind, in_week), (DnsblListing.kind, data.dnsbl),
    ]  # fmt: skip
    return {kind: len(rows) for kind, rows in kinds}
