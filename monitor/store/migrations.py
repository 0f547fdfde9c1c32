"""Schema versions and the steps between them.

Each step moves the schema from ``version - 1`` to ``version`` inside one
transaction; a fresh database is created at the latest version directly.
Add a step by appending to ``STEPS``; never edit a released one.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, bindparam, inspect, select

from monitor.errors import StoreError
from monitor.model import FINAL_TYPES, EventType, domain_of
from monitor.store.schema import (
    BUCKET_SECONDS,
    FAILURE_OUTCOMES,
    deliveries,
    events,
    failure_counters,
    incidents,
    jobs,
    meta,
    metadata,
    sender_counters,
)
from monitor.store.writer import SenderTally, fold_sender, hardness, sender_rows, stream_tag

__all__ = ["LATEST", "STEPS", "current_version", "migrate"]

Step = Callable[[Connection], None]

def _add_blame_and_rule(conn: Connection) -> None:
    for table in ("events", "deliveries"):
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN blame VARCHAR(16)")
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN rule VARCHAR(64)")


def _add_incidents(conn: Connection) -> None:
    incidents.create(conn)


def _add_index(name: str) -> Step:
    """The step that creates the index ``name`` of ``deliveries`` as the schema declares it."""

    def step(conn: Connection) -> None:
        next(i for i in deliveries.indexes if i.name == name).create(conn)

    return step


def _add_sender_counters(conn: Connection) -> None:
    sender_counters.create(conn)
    _count_senders(conn)


def _count_senders(conn: Connection) -> None:
    # Counted from the stored events, as the writer would have: stats and rollups per
    # sender then cover the store's whole history, not only what arrives after the
    # upgrade. Memory grows with the distinct keys, not with the events.
    c = events.c
    query = select(
        c.occurred_at, c.sender, c.sending_ip, c.tags, c.provider, c.type, c.reason, c.hard,
        c.blame,
    )  # fmt: skip
    totals: SenderTally = {}
    domains: dict[str, str] = {}
    for ts, sender, ip, tags, provider, kind, reason, hard, blame in conn.execute(
        query.execution_options(yield_per=10_000)
    ):
        domain = domains.get(sender or "")
        if domain is None:
            domain = domains[sender or ""] = (domain_of(sender) or "")[:255]
        bucket = int(ts // BUCKET_SECONDS) * BUCKET_SECONDS
        fold_sender(
            totals, bucket, domain, ip or "", tuple(tags.split(",")) if tags else (),
            provider or "other", kind, reason or "", None if hard is None else bool(hard), blame,
        )  # fmt: skip
    rows = sender_rows(totals)
    if rows:
        columns = [col.name for col in sender_counters.columns]
        conn.execute(sender_counters.insert(), [dict(zip(columns, r, strict=True)) for r in rows])


def _add_failure_counters(conn: Connection) -> None:
    # Counted from the stored events, as the writer would have (see schema 5): events are
    # never pruned, so the new table covers the store's whole history.
    failure_counters.create(conn)
    c = events.c
    query = select(
        c.occurred_at, c.recipient_domain, c.provider, c.type, c.reason, c.hard, c.blame, c.tags
    ).where(c.type.in_(FAILURE_OUTCOMES))
    totals: dict[tuple[object, ...], int] = {}
    for ts, domain, provider, kind, reason, hard, blame, tags in conn.execute(
        query.execution_options(yield_per=10_000)
    ):
        bucket = int(ts // BUCKET_SECONDS) * BUCKET_SECONDS
        stream = "ndr" if tags and "ndr" in tags.split(",") else ""
        k = (bucket, domain or "", provider or "other", kind, reason or "",
             hardness(hard), blame or "", stream)  # fmt: skip
        totals[k] = totals.get(k, 0) + 1
    if totals:
        columns = [col.name for col in failure_counters.columns]
        conn.execute(
            failure_counters.insert(),
            [dict(zip(columns, (*k, n), strict=True)) for k, n in totals.items()],
        )


def _add_delivery_ip_and_stream(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE deliveries ADD COLUMN sending_ip VARCHAR(64)")
    conn.exec_driver_sql(
        "ALTER TABLE deliveries ADD COLUMN stream_tag VARCHAR(64) NOT NULL DEFAULT ''"
    )
    # As the writer would have set them: the IP of the newest attempt that decided the
    # state (one indexed lookup per delivery), the stream of the first tagged event.
    deciding = sorted(str(t) for t in (EventType.DEFERRED, *FINAL_TYPES))
    attempts = ", ".join(f"'{t}'" for t in deciding)
    conn.exec_driver_sql(
        "UPDATE deliveries SET sending_ip = (SELECT e.sending_ip FROM events e"
        " WHERE e.delivery_key = deliveries.key AND e.type = deliveries.state"
        f" AND e.type IN ({attempts}) ORDER BY e.occurred_at DESC LIMIT 1)"
    )
    c = events.c
    query = (
        select(c.delivery_key, c.tags)
        .where(c.tags.is_not(None), c.tags != "")
        .order_by(c.delivery_key, c.occurred_at)
    )
    found: dict[str, str] = {}
    for key, tags in conn.execute(query.execution_options(yield_per=10_000)):
        if key not in found:
            stream = stream_tag(tuple(tags.split(",")))
            if stream:
                found[key] = stream
    if found:
        conn.execute(
            deliveries.update()
            .where(deliveries.c.key == bindparam("k"))
            .values(stream_tag=bindparam("s")),
            [{"k": k, "s": s} for k, s in found.items()],
        )


def _split_sender_failures(conn: Connection) -> None:
    # The key gains hard and blame: rebuilt from the events (a store migrated from before
    # schema 5 has just been counted in the new shape by step 5).
    have = {col["name"] for col in inspect(conn).get_columns(sender_counters.name)}
    if "hard" in have:
        return
    sender_counters.drop(conn)
    _add_sender_counters(conn)


def _add_provider_expiry(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE provider_cache ADD COLUMN expires_at FLOAT")


def _add_jobs(conn: Connection) -> None:
    jobs.create(conn)


#: (version, what it does, how). Version 1 is the first released schema.
STEPS: list[tuple[int, str, Step]] = [
    (1, "events, deliveries, counters, provider cache, checkpoints", lambda conn: None),
    (2, "blame and classification rule on events and deliveries", _add_blame_and_rule),
    (3, "incidents from the rollup engine's detectors", _add_incidents),
    (4, "index of delivered rows by final time (rollup latency)",
     _add_index("ix_deliveries_delivered_final")),
    (5, "counters per sending domain, sending IP and stream", _add_sender_counters),
    (6, "failure counters by hard/soft and blame", _add_failure_counters),
    (7, "sending IP and tag stream on deliveries", _add_delivery_ip_and_stream),
    (8, "sender counters by hard/soft and blame", _split_sender_failures),
    (9, "expiry of negative answers in the provider cache", _add_provider_expiry),
    (10, "state of the scheduler's jobs", _add_jobs),
    (11, "index of deferred rows by final time (rollup queue age)",
     _add_index("ix_deliveries_deferred_final")),
]

LATEST = STEPS[-1][0]


def current_version(conn: Connection) -> int | None:
    """The schema version recorded in the database, None when it has no Mailmon tables."""
    if not conn.dialect.has_table(conn, meta.name):
        return None
    row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
    return int(row[0]) if row else None


def migrate(conn: Connection) -> int:
    """Bring the schema to ``LATEST``; returns the version found before."""
    found = current_version(conn)
    if found is None:
        metadata.create_all(conn)
        conn.execute(meta.insert().values(key="schema_version", value=str(LATEST)))
        return 0
    if found > LATEST:
        raise StoreError(
            f"database schema version {found} is newer than this mailmon knows ({LATEST});"
            " upgrade mailmon"
        )
    for version, _what, step in STEPS:
        if version > found:
            step(conn)
    if found != LATEST:
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(LATEST)))
    return found
