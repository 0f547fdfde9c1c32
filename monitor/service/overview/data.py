"""What the overview page shows, read from the store, the metrics and the health checks.

    view = overview(conn, at=time.time(), registry=metrics.registry, checks=health())

Everything is bounded: the busiest providers only, the open incidents and those closed in
the last day, hourly and five-minute sums for the sparklines (one query over ``counters``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Connection, func, select

from monitor.rollup.windows import align
from monitor.service import api_data
from monitor.store.schema import BUCKET_SECONDS, checkpoints, counters

__all__ = ["FollowedFile", "Overview", "SourceHealth", "Spark", "overview"]

#: The two windows the page shows, and the steps of their sparklines.
WINDOWS = {"1h": (3600, 300), "24h": (86400, 3600)}
MAX_PROVIDERS = 12
MAX_FILES = 50
#: Outcomes that are an attempt at a receiving server (the sparkline's volume).
_ATTEMPTS = ("delivered", "deferred", "bounced")


@dataclass(frozen=True)
class Spark:
    """A sparkline: per step, attempts and failed attempts (deferred or bounced)."""

    attempts: tuple[int, ...]
    failed: tuple[int, ...]
    step_seconds: int


@dataclass(frozen=True)
class SourceHealth:
    """One source as ``/metrics`` counts it, and its followed files as ``/healthz`` sees them."""

    source: str
    ingested: int = 0
    duplicates: int = 0
    rejected: int = 0
    lines: int = 0
    bytes_behind: int = 0
    last_event_at: float | None = None


@dataclass(frozen=True)
class FollowedFile:
    """A followed log as its checkpoint has it: counts since it was first followed."""

    instance: str
    kind: str
    path: str
    lines: int
    unparsed: int
    updated_at: float


@dataclass
class Overview:
    at: float
    incidents: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    #: per provider: {"provider", "windows": {"1h": counts | rates, "24h": ...}, "sparks"}
    providers: list[dict[str, Any]] = field(default_factory=list)
    sources: list[SourceHealth] = field(default_factory=list)
    #: followed logs and other parts of /healthz: (name, status, reason)
    checks: list[tuple[str, str, str]] = field(default_factory=list)
    files: list[FollowedFile] = field(default_factory=list)
    store_error: str | None = None


def overview(conn: Connection | None, *, at: float, registry: CollectorRegistry | None,
             checks: Mapping[str, object]) -> Overview:  # fmt: skip
    """The page's content at ``at`` (UNIX seconds); ``conn`` None: the store is unreachable."""
    view = Overview(at=at, sources=sources(registry), checks=flat_checks(checks))
    if conn is None:
        view.store_error = "database unreachable"
        return view
    everything = api_data.incidents(conn, since=at - 86400, limit=200)
    view.incidents = [i for i in everything if i["ended_at"] is None]
    view.closed = [i for i in everything if i["ended_at"] is not None][:20]
    view.files = followed_files(conn)
    rolled = api_data.rollup(conn, "provider", at=at, limit=MAX_PROVIDERS)
    sparks = sparklines(conn, [p["provider"] for p in rolled["items"]], at=at)
    for item in rolled["items"]:
        view.providers.append({
            "provider": item["provider"],
            "windows": {w: item["windows"][w] for w in WINDOWS},
            "sparks": sparks.get(item["provider"], {}),
        })  # fmt: skip
    return view


def sparklines(conn: Connection, providers: list[str], *, at: float) -> dict[str, dict[str, Spark]]:
    """Per provider and window: attempts and failures per step, oldest first."""
    if not providers:
        return {}
    end = align(at) + BUCKET_SECONDS
    c = counters.c
    longest = max(seconds for seconds, _ in WINDOWS.values())
    query = (
        select(c.provider, c.bucket, c.outcome, func.sum(c.count))
        .where(c.bucket >= end - longest, c.bucket < end, c.provider.in_(providers),
               c.outcome.in_(_ATTEMPTS), c.stream != "ndr")
        .group_by(c.provider, c.bucket, c.outcome)
    )  # fmt: skip
    rows = list(conn.execute(query))
    out: dict[str, dict[str, Spark]] = {}
    for name in providers:
        out[name] = {}
        for window, (seconds, step) in WINDOWS.items():
            n = seconds // step
            attempts, failed = [0] * n, [0] * n
            for provider, bucket, outcome, total in rows:
                if provider != name or bucket < end - seconds:
                    continue
                index = min(n - 1, int((bucket - (end - seconds)) // step))
                attempts[index] += int(total or 0)
                if outcome != "delivered":
                    failed[index] += int(total or 0)
            out[name][window] = Spark(tuple(attempts), tuple(failed), step)
    return out


def followed_files(conn: Connection) -> list[FollowedFile]:
    """Every followed log's checkpoint (``instance:kind:path``), across restarts and instances."""
    query = (select(checkpoints.c.source, checkpoints.c.state, checkpoints.c.updated_at)
             .where(~checkpoints.c.source.contains("\x1f"))
             .order_by(checkpoints.c.source).limit(MAX_FILES * 4))  # fmt: skip
    found = []
    for key, state, updated_at in conn.execute(query):
        try:
            saved = json.loads(state)
        except ValueError:
            continue
        if not isinstance(saved, dict) or not isinstance(saved.get("counts"), dict):
            continue  # not a followed file's checkpoint
        parts = key.split(":", 2)
        if len(parts) != 3:
            continue
        counts = saved["counts"]
        rejected = counts.get("rejected") if isinstance(counts.get("rejected"), dict) else {}
        found.append(FollowedFile(
            instance=parts[0], kind=parts[1], path=str(saved.get("path") or parts[2]),
            lines=int(counts.get("lines") or 0), unparsed=int(rejected.get("unparsed") or 0),
            updated_at=float(updated_at),
        ))  # fmt: skip
    return found[:MAX_FILES]


def sources(registry: CollectorRegistry | None) -> list[SourceHealth]:
    """Per ``source`` label: what ``/metrics`` says this process read and stored."""
    if registry is None:
        return []
    by: dict[str, dict[str, float]] = {}
    wanted = {
        "mailmon_events_ingested_total": "ingested",
        "mailmon_events_duplicate_total": "duplicates",
        "mailmon_events_rejected_total": "rejected",
        "mailmon_source_lines_total": "lines",
        "mailmon_source_bytes_behind": "bytes_behind",
        "mailmon_source_last_event_timestamp_seconds": "last_event_at",
    }
    for family in registry.collect():
        for sample in family.samples:
            key = wanted.get(sample.name)
            source = sample.labels.get("source")
            if key is None or not source:
                continue
            row = by.setdefault(source, {})
            row[key] = row.get(key, 0.0) + sample.value
    result = []
    for source in sorted(by):
        row = by[source]
        last = row.get("last_event_at")
        result.append(SourceHealth(
            source=source, ingested=int(row.get("ingested", 0)),
            duplicates=int(row.get("duplicates", 0)), rejected=int(row.get("rejected", 0)),
            lines=int(row.get("lines", 0)), bytes_behind=int(row.get("bytes_behind", 0)),
            last_event_at=last if last else None,
        ))  # fmt: skip
    return result


def flat_checks(checks: Mapping[str, object], prefix: str = "") -> list[tuple[str, str, str]]:
    """``/healthz``'s parts as (name, status, reason), nested ones named ``logs:PATH``."""
    out = []
    for name, check in checks.items():
        if not isinstance(check, Mapping):
            continue
        if "status" in check:
            out.append((prefix + name, str(check["status"]), str(check.get("reason") or "")))
        else:
            out += flat_checks(check, f"{prefix}{name}:")
    return out

