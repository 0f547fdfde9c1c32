"""Tables of the store (SQLAlchemy Core).

Times are stored as UNIX seconds (float) so that SQLite and PostgreSQL compare and
bucket them the same way and bulk writes need no per-row conversion.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

__all__ = [
    "BUCKET_SECONDS",
    "FAILURE_OUTCOMES",
    "SENDER_DIMENSIONS",
    "checkpoints",
    "counters",
    "deliveries",
    "events",
    "failure_counters",
    "incidents",
    "jobs",
    "meta",
    "metadata",
    "provider_cache",
    "sender_counters",
]

#: Width of one pre-aggregated counter bucket.
BUCKET_SECONDS = 60

metadata = MetaData()

meta = Table(
    "mailmon_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("occurred_at", Float, nullable=False),
    Column("source", String(255), nullable=False),
    Column("type", String(16), nullable=False),
    Column("delivery_key", String(32), nullable=False),
    Column("message_id", Text),
    Column("queue_id", String(64)),
    Column("provider_message_id", Text),
    Column("sender", Text),
    Column("recipient", Text),
    Column("orig_recipient", Text),
    Column("recipient_domain", String(255)),
    Column("provider", String(32)),
    Column("relay", Text),
    Column("sending_ip", String(64)),
    Column("client", Text),
    Column("reply_code", Integer),
    Column("enhanced_status", String(16)),
    Column("diagnostic", Text),
    Column("reason", String(32)),
    Column("hard", Boolean),
    Column("delay_seconds", Float),
    Column("size_bytes", Integer),
    Column("attempt", Integer),
    Column("tags", Text),
    Column("raw_ref", Text),
    Column("blame", String(16)),  # schema 2
    Column("rule", String(64)),  # schema 2
    # Lookups by message id, queue id or recipient go through deliveries: one index
    # here keeps bulk ingest fast.
    Index("ix_events_delivery_key", "delivery_key"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("source", String(255), nullable=False),
    Column("message_id", Text),
    Column("queue_id", String(64)),
    Column("sender", Text),
    Column("recipient", Text),
    Column("recipient_domain", String(255)),
    Column("provider", String(32)),
    Column("stream", String(64), nullable=False, default=""),
    Column("state", String(16), nullable=False),
    Column("submitted_at", Float),
    Column("first_attempt_at", Float),
    Column("last_event_at", Float, nullable=False),
    Column("final_at", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("deferrals", Integer, nullable=False, default=0),
    Column("reply_code", Integer),
    Column("enhanced_status", String(16)),
    Column("reason", String(32)),
    Column("hard", Boolean),
    Column("diagnostic", Text),
    Column("blame", String(16)),  # schema 2
    Column("rule", String(64)),  # schema 2
    # schema 7: the sending IP of the attempt that decided the state, and the stream the
    # tags name (as in sender_counters): latency per sending IP and stream reads them.
    Column("sending_ip", String(64)),
    Column("stream_tag", String(64), nullable=False, default="", server_default=""),
    Index("ix_deliveries_message_id", "message_id"),
    Index("ix_deliveries_queue_id", "queue_id"),
    Index("ix_deliveries_recipient", "recipient"),
    Index("ix_deliveries_domain_state", "recipient_domain", "state"),
    # schema 4: the rollup's latency windows read delivered rows by final_at; partial, so
    # each row enters this index once (when delivered), not on every state change.
    Index(
        "ix_deliveries_delivered_final",
        "final_at",
        sqlite_where=text("state = 'delivered'"),
        postgresql_where=text("state = 'delivered'"),
    ),
    # schema 11: the live queue-age read finds the deliveries ever deferred that reached
    # their final outcome since its time here (the rows of one minute, not its events);
    # partial, so only deferred rows are in it (a few percent).
    Index(
        "ix_deliveries_deferred_final",
        "final_at",
        sqlite_where=text("deferrals > 0"),
        postgresql_where=text("deferrals > 0"),
    ),
)

counters = Table(
    "counters",
    metadata,
    Column("bucket", Integer, primary_key=True),  # UNIX seconds, multiple of BUCKET_SECONDS
    Column("recipient_domain", String(255), primary_key=True),
    Column("provider", String(32), primary_key=True),
    Column("outcome", String(16), primary_key=True),
    Column("reason", String(32), primary_key=True),
    Column("stream", String(64), primary_key=True),
    Column("count", Integer, nullable=False),
)

# schema 6: failures per minute by hard/soft and blame.  A table of its own rather than
# two more key columns on ``counters``: only failures (a few percent of events) pay for
# it at ingest, and the migration creates it instead of rebuilding ``counters``.
failure_counters = Table(
    "failure_counters",
    metadata,
    Column("bucket", Integer, primary_key=True),  # UNIX seconds, multiple of BUCKET_SECONDS
    Column("recipient_domain", String(255), primary_key=True),
    Column("provider", String(32), primary_key=True),
    Column("outcome", String(16), primary_key=True),  # one of FAILURE_OUTCOMES
    Column("reason", String(32), primary_key=True),
    Column("hard", String(4), primary_key=True),  # "hard", "soft" or "" when unclassified
    Column("blame", String(16), primary_key=True),  # monitor.classify.BLAMES or ""
    Column("stream", String(64), primary_key=True),  # "ndr" or "", as in counters
    Column("count", Integer, nullable=False),
)

#: The outcomes ``failure_counters`` counts.
FAILURE_OUTCOMES = ("deferred", "bounced", "expired")

#: The sender-side dimensions ``sender_counters`` counts by (schema 5).
SENDER_DIMENSIONS = ("sender_domain", "sending_ip", "stream")

# schema 5: per minute x sender-side dimension x value, the recipient side summed to
# the provider.  One narrow table for the three dimensions (rather than three tables or
# one wide key) keeps each row's key small and a dimension's rows one index range; the
# provider stays because "is this IP blocked at Microsoft?" is the question asked.
sender_counters = Table(
    "sender_counters",
    metadata,
    Column("bucket", Integer, primary_key=True),  # UNIX seconds, multiple of BUCKET_SECONDS
    Column("dimension", String(16), primary_key=True),  # one of SENDER_DIMENSIONS
    Column("value", String(255), primary_key=True),  # "" when the event does not say
    Column("provider", String(32), primary_key=True),
    Column("outcome", String(16), primary_key=True),
    Column("reason", String(32), primary_key=True),
    # schema 8: failures by hard/soft and blame as in failure_counters ("" for the rest),
    # so sender-side windows split bounces as the recipient side does.
    Column("hard", String(4), primary_key=True, default="", server_default=""),
    Column("blame", String(16), primary_key=True, default="", server_default=""),
    Column("ndr", Integer, primary_key=True),  # 1: our own non-delivery notices
    Column("count", Integer, nullable=False),
    # Reads go by dimension and time (stats, rollup windows), not by minute first.
    Index("ix_sender_counters_dimension_bucket", "dimension", "bucket"),
)

provider_cache = Table(
    "provider_cache",
    metadata,
    Column("domain", String(255), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("mx_hosts", Text, nullable=False, default=""),
    Column("resolved_at", Float, nullable=False),
    # Set on negative answers (no mail, lookup failed): they carry their own lifetime.
    Column("expires_at", Float),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("source", String(512), primary_key=True),
    Column("state", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

incidents = Table(  # schema 3
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("started_at", Float, nullable=False),  # event time of the evaluation that opened it
    Column("ended_at", Float),  # NULL while open
    Column("evidence", Text, nullable=False),  # JSON: window counts, rates, baseline, top replies
    # One incident per subject and start: re-evaluating the same time never duplicates.
    Index("ux_incidents_subject_start", "kind", "provider", "domain", "started_at", unique=True),
    Index("ix_incidents_started_at", "started_at"),
)

# schema 10: the scheduler's jobs (``monitor.jobs``), one row per job name: what ``mailmon
# jobs`` shows, and the slot a job last ran for, so a restart does not run it twice.
jobs = Table(
    "jobs",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("trigger", Text, nullable=False),  # as the last serve to schedule it says it
    Column("created_at", Float, nullable=False),  # first scheduled: a job never run is due after
    Column("slot_at", Float),  # the scheduled time the last run covered
    Column("last_run_at", Float),  # when the last run started
    Column("last_finished_at", Float),
    Column("last_success_at", Float),
    Column("last_error", Text),
    Column("last_error_at", Float),
    Column("failures", Integer, nullable=False, default=0, server_default="0"),
    Column("next_run_at", Float),
    Column("ran_by", String(64)),  # [service] instance of the last run
)
