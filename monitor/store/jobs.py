"""The scheduler's job state (schema 10): what ran when, and which slot it covered.

``monitor.jobs.Scheduler`` writes it; ``mailmon jobs`` reads it, from any process. A job
that runs once per slot (a weekly report) *claims* its slot here before it runs, so
neither a restart nor a second ``serve`` on the same database runs it twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from monitor.store.schema import jobs

__all__ = ["JobState", "claim", "finish", "read_jobs", "register", "set_next"]

#: A stored error message is cut to this many characters (the log has the traceback).
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class JobState:
    """One row of the ``jobs`` table (times are UNIX seconds)."""

    name: str
    trigger: str
    created_at: float
    slot_at: float | None = None
    last_run_at: float | None = None
    last_finished_at: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0
    next_run_at: float | None = None
    ran_by: str | None = None


def read_jobs(engine: Engine) -> dict[str, JobState]:
    """Every stored job's state by name."""
    with engine.connect() as conn:
        rows = conn.execute(select(jobs).order_by(jobs.c.name)).mappings().all()
    return {r["name"]: JobState(**r) for r in rows}


def register(engine: Engine, triggers: Mapping[str, str], now: float) -> dict[str, JobState]:
    """Record the jobs about to be scheduled and their triggers; their states after that."""
    insert = (sqlite_insert if engine.dialect.name == "sqlite" else postgresql_insert)(jobs)
    with engine.begin() as conn:
        for name, trigger in triggers.items():
            # Several processes may start at once: the first one to insert sets created_at.
            conn.execute(
                insert.values(name=name, trigger=trigger, created_at=now).on_conflict_do_update(
                    index_elements=[jobs.c.name], set_={"trigger": trigger}
                )
            )
    return read_jobs(engine)


def claim(
    engine: Engine,
    name: str,
    now: float,
    *,
    ran_by: str,
    due_after: Callable[[float], float] | None,
    slot: Callable[[float, float | None], float],
) -> bool:
    """Mark a run of ``name`` as started now; False (and nothing written) if it is not due.

    ``due_after(t)``: the first slot after ``t`` (None: always due, for a job every process
    runs for itself); ``slot(now, since)``: the latest slot at or before now and after
    ``since`` (None: unknown), the one this run covers. The update only succeeds if no
    other process moved the slot since it was read, so two claimants of one slot get one run.
    """
    started: dict[str, object] = {"last_run_at": now, "ran_by": ran_by}
    if due_after is None:  # a job every process runs for itself: nothing to claim
        with engine.begin() as conn:
            conn.execute(
                jobs.update().where(jobs.c.name == name).values(slot_at=slot(now, None), **started)
            )
        return True
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # The write lock before the read: a second claimant waits, then reads the slot
            # the first one wrote (a WAL reader that writes later would fail instead).
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        row = conn.execute(
            select(jobs.c.slot_at, jobs.c.created_at).where(jobs.c.name == name)
        ).first()
        if row is None:
            return False
        covered, created = row
        since = created if covered is None else covered
        if due_after(since) > now:
            conn.rollback()
            return False
        same = jobs.c.slot_at.is_(None) if covered is None else jobs.c.slot_at == covered
        started["slot_at"] = slot(now, since)
        done = conn.execute(jobs.update().where(jobs.c.name == name, same).values(**started))
        conn.commit()
        return done.rowcount == 1


def finish(
    engine: Engine, name: str, at: float, *, error: str | None, next_run_at: float | None
) -> None:
    """Record the end of a run: a success, or its error (the run still counts as done)."""
    values: dict[str, object] = {"last_finished_at": at, "next_run_at": next_run_at}
    if error is None:
        values["last_success_at"] = at
    else:
        values.update(last_error=error[:MAX_ERROR_CHARS], last_error_at=at,
                      failures=jobs.c.failures + 1)  # fmt: skip
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.name == name).values(**values))


def set_next(engine: Engine, name: str, next_run_at: float | None) -> None:
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.name == name).values(next_run_at=next_run_at))
