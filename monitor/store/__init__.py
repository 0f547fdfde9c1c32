"""The store: events, delivery states, pre-aggregated counters, caches and checkpoints.

SQLite (WAL) by default, PostgreSQL by URL; both behind SQLAlchemy Core::

    store = Store.open("sqlite:///mailmon.db")
    new = store.write(events)              # only the events not stored before
    store.write(events, records=records, on_records=print)  # and the new records
    rows = store.stats(by="domain")
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from monitor.errors import StoreError
from monitor.model import Event
from monitor.records import Record
from monitor.store import bulk, queries
from monitor.store.migrations import LATEST, current_version, migrate
from monitor.store.records import ensure_tables, kind_of, read_records, write_records
from monitor.store.retract import refold_deliveries, retract_events
from monitor.store.schema import checkpoints, provider_cache
from monitor.store.writer import upsert, write_events

if TYPE_CHECKING:  # not imported at run time: the writer process has no use for the resolver
    from monitor.providers import CachedProvider

__all__ = ["Store"]

log = logging.getLogger(__name__)

#: Called with an event (or record) the store refused on its own, and why (a bounded label).
OnReject = Callable[[Event | Record, str], None]
#: Called with the records a write stored that were not stored before.
OnRecords = Callable[[list[Record]], None]


def _engine(url: str, *, create: bool) -> Engine:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise StoreError(f"invalid database URL: {_redacted(url)}") from exc
    try:
        return _create(parsed, create=create)
    except ArgumentError as exc:  # e.g. a driver that is not installed
        raise StoreError(f"invalid database URL {_redacted(url)}: {exc}") from exc


#: How long a connection retries turning a database to WAL mode while others hold it.
_WAL_WAIT_SECONDS = 30.0


def _wal_mode(cur: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the database is locked: SQLite does not
    call its busy handler for the lock this takes, so processes opening a new store
    together saw "database is locked" (1 run in 5-8 of ten at once, measured)."""
    deadline = time.monotonic() + _WAL_WAIT_SECONDS
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _create(parsed: URL, *, create: bool) -> Engine:
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            path = Path(db).expanduser()
            if not create and not path.is_file():
                raise StoreError(f"no database at {path}: nothing stored yet ({_NO_STORE_HINT})")
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # Applies to a new database only (an existing one keeps its size).  Bulk
            # inserts split and write fewer, larger pages: at 1M lines 8 % less wall
            # time and a third less system time than 4 KiB.
            cur.execute("PRAGMA page_size=16384")
            _wal_mode(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            # 32 MiB: pages it evicts stay in the OS page cache; at 1M lines 64 MiB saved
            # no CPU time and cost 20 MB of RSS (the budget is 250 MB).
            cur.execute("PRAGMA cache_size=-32768")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise StoreError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


class Store:
    """Mailmon's database; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._providers: dict[str, tuple[str, float, float | None]] | None = None
        self._kinds: set[str] = set()  # record kinds whose table is known to exist

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Store:
        """Connect and bring the schema to the latest version.

        ``create=False`` (the read commands): a database without Mailmon's tables, or a
        SQLite file that does not exist, is a :class:`StoreError`, and nothing is created.
        """
        engine = _engine(url, create=create)
        try:
            _prepare(engine, create=create)
        except OperationalError as exc:
            engine.dispose()
            raise StoreError(f"cannot open database {_redacted(url)}: {exc.orig}") from exc
        except StoreError as exc:
            engine.dispose()
            raise StoreError(f"database {_redacted(url)}: {exc}") from exc
        return cls(engine)

    @property
    def schema_version(self) -> int:
        return LATEST

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------

    def write(
        self,
        batch: Iterable[Event],
        *,
        checkpoint: tuple[str, Mapping[str, Any]] | None = None,
        state: Mapping[str, Any] | None = None,
        on_reject: OnReject | None = None,
        retract: Sequence[str] = (),
        records: Iterable[Record] = (),
        on_records: OnRecords | None = None,
    ) -> list[Event]:
        """Store a batch and, atomically with it, records, a source checkpoint and state entries.

        ``state`` maps checkpoint keys to their new value, or None to delete the key:
        a collector's per-message memory, kept beside its position.  ``retract``: ids of
        stored events that the batch replaces (``monitor.store.retract``).  ``records``
        (``monitor.store.records``) are stored in the same transaction; the ones not
        stored before are handed to ``on_records`` once it is committed.

        A batch the database refuses for what is in it (a value out of range, say) is
        written again in halves, down to single events or records: each one it still
        refuses is handed to ``on_reject`` and left out, its neighbours are stored, and
        then the checkpoint.  Refused for any other reason (database down, locked, disk
        full), the error is raised and nothing is stored.
        """
        events = list(batch)
        extra = list(records)
        if extra:
            self._ensure_tables(extra)
        try:
            fresh, stored = self._write(events, checkpoint, state, retract, extra)
        except Exception as exc:
            if not (events or extra) or _transient(exc):
                raise
            log.warning("the database refused a batch of %d events and %d records (%s); storing"
                        " them one by one to leave out the bad ones", len(events), len(extra),
                        _reason(exc))  # fmt: skip
            fresh, stored = self._write_apart([*events, *extra], on_reject)
            self._write([], checkpoint, state, retract)
        if on_records is not None and extra:
            on_records(stored)
        return fresh

    def _ensure_tables(self, records: list[Record]) -> None:
        """Create the tables of record kinds this store has not written yet, if missing."""
        missing = {r.kind for r in records} - self._kinds
        if not missing:
            return
        for kind in missing:
            kind_of(kind)  # an unregistered kind is a mistake, raised before anything is written
        with self.engine.connect() as conn:  # usually there: no need to take the lock
            absent = {k for k in missing if not conn.dialect.has_table(conn, k)}
        if absent:
            with _locked(self.engine) as conn:
                ensure_tables(conn, absent)
                conn.commit()
        self._kinds |= missing

    def _write_apart(
        self, items: list[Event | Record], on_reject: OnReject | None
    ) -> tuple[list[Event], list[Record]]:
        """:meth:`write` by halves, leaving out the events and records refused on their own."""
        try:
            # Not isinstance(i, Event): the writer process hands in WireEvents.
            events = [i for i in items if not isinstance(i, Record)]
            return self._write(events, None, None, (), [i for i in items if isinstance(i, Record)])
        except Exception as exc:
            if _transient(exc):
                raise
            if len(items) > 1:
                half = len(items) // 2
                first, second = (self._write_apart(items[:half], on_reject),
                                 self._write_apart(items[half:], on_reject))  # fmt: skip
                return first[0] + second[0], first[1] + second[1]
            reason = _reason(exc)
            log.warning("left out %s %s from %s: the database refused it (%s: %s)",
                        items[0].kind if isinstance(items[0], Record) else "event",
                        items[0].id, items[0].source, reason,
                        str(exc).splitlines()[0][:200])  # fmt: skip
            if on_reject is not None:
                on_reject(items[0], reason)
            return [], []

    def _write(
        self,
        events: list[Event],
        checkpoint: tuple[str, Mapping[str, Any]] | None,
        state: Mapping[str, Any] | None,
        retract: Sequence[str] = (),
        records: Sequence[Record] = (),
    ) -> tuple[list[Event], list[Record]]:
        with self.engine.begin() as conn:
            refold = retract_events(conn, retract) if retract else set()
            fresh = write_events(conn, events)
            if refold:
                refold_deliveries(conn, refold)
            stored = write_records(conn, records) if records else []
            now = time.time()
            rows = {}
            if checkpoint is not None:
                rows[checkpoint[0]] = checkpoint[1]
            gone = []
            for key, value in (state or {}).items():
                if value is None:
                    gone.append(key)
                else:
                    rows[key] = value
            upsert(
                conn,
                checkpoints,
                [{"source": k, "state": json.dumps(v), "updated_at": now} for k, v in rows.items()],
                ["source"],
            )
            for start in range(0, len(gone), 500):
                conn.execute(checkpoints.delete().where(
                    checkpoints.c.source.in_(gone[start : start + 500])))
        return fresh, stored

    # -- checkpoints -----------------------------------------------------------

    def checkpoint(self, source: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(checkpoints.c.state).where(checkpoints.c.source == source)
            ).first()
        return json.loads(row[0]) if row else None

    def checkpoints_under(self, prefix: str) -> dict[str, Any]:
        """Every checkpoint entry whose key starts with ``prefix``, without the prefix."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(checkpoints.c.source, checkpoints.c.state).where(
                    checkpoints.c.source.startswith(prefix, autoescape=True)
                )
            )
            return {key[len(prefix):]: json.loads(value) for key, value in rows}

    # -- provider cache (monitor.providers.ProviderCache) ----------------------

    def get_provider(self, domain: str) -> tuple[str, float, float | None] | None:
        """``(provider, resolved_at, expires_at)``; ``expires_at`` is set on negative answers."""
        if self._providers is None:
            # One read of the whole (small) table beats a query per new domain in bulk ingest.
            c = provider_cache.c
            with self.engine.connect() as conn:
                rows = conn.execute(select(c.domain, c.provider, c.resolved_at, c.expires_at))
                self._providers = {d: (p, at, until) for d, p, at, until in rows}
        return self._providers.get(domain)

    def put_provider(
        self,
        domain: str,
        provider: str,
        mx_hosts: list[str],
        resolved_at: float,
        expires_at: float | None = None,
    ) -> None:
        from monitor.providers import CachedProvider

        self.put_providers({domain: CachedProvider(provider, mx_hosts, resolved_at, expires_at)})

    def put_providers(self, entries: Mapping[str, CachedProvider]) -> None:
        """Upsert many provider cache entries in one transaction."""
        rows = [
            {
                "domain": domain,
                "provider": e.provider,
                "mx_hosts": " ".join(e.mx_hosts),
                "resolved_at": e.resolved_at,
                "expires_at": e.expires_at,
            }
            for domain, e in entries.items()
        ]
        with self.engine.begin() as conn:
            upsert(conn, provider_cache, rows, ["domain"])
        if self._providers is not None:
            for domain, e in entries.items():
                self._providers[domain] = (e.provider, e.resolved_at, e.expires_at)

    # -- reading ---------------------------------------------------------------

    def stats(
        self,
        by: str = "domain",
        *,
        since: float | None = None,
        until: float | None = None,
        include_ndr: bool = False,
    ) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return queries.stats(conn, by, since=since, until=until, include_ndr=include_ndr)

    def trace(self, query: str, *, limit: int = 200, by: str = "any") -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return queries.trace(conn, query, limit=limit, by=by)

    def top_domains(self, n: int, *, since: float | None = None) -> list[str]:
        with self.engine.connect() as conn:
            return queries.top_domains(conn, n, since=since)

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return queries.count(conn, table)

    def records(
        self, kind: str, *, since: float | None = None, until: float | None = None
    ) -> list[Record]:
        """The stored records of ``kind`` (``monitor.store.records``), oldest first."""
        with self.engine.connect() as conn:
            return read_records(conn, kind, since=since, until=until)

    def event_ids(self) -> Sequence[str]:
        with self.engine.connect() as conn:
            return queries.event_ids(conn)


def _prepare(engine: Engine, *, create: bool) -> None:
    """Create or migrate the schema, once, however many processes open a fresh store at once.

    The common case (schema current) only reads.  Otherwise the first process to take the
    database's write lock (SQLite ``BEGIN IMMEDIATE``, waiting up to the busy timeout) or
    the advisory lock (PostgreSQL) creates or migrates; the others wait, then find it done.
    """
    with engine.connect() as conn:
        found = current_version(conn)
        left_dropped = found is not None and bulk.left_dropped(conn)
    if left_dropped:
        bulk.recover(engine)  # a bulk load died before it built its indexes again
    if found is None and not create:
        raise StoreError(f"it has no Mailmon tables: nothing stored yet ({_NO_STORE_HINT})")
    if found == LATEST:
        return
    with _locked(engine) as conn:
        migrate(conn)
        conn.commit()


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection holding the lock under which the schema is created or changed.

    SQLite: the database's write lock (``BEGIN IMMEDIATE``, waiting up to the busy
    timeout); PostgreSQL: an advisory lock for the transaction.  The caller commits.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite would begin lazily (and never for DDL): take the write lock first.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        yield conn


#: PostgreSQL advisory lock key held while the schema is created or migrated ("mailmon").
_MIGRATION_LOCK = 0x6D61696C6D6F6E
_NO_STORE_HINT = "`mailmon ingest` or `mailmon serve` creates it"

#: From the first ':' to the last '@': what may be a password in a URL SQLAlchemy cannot
#: parse (more is hidden than needed rather than less).
_PASSWORD = re.compile(r":.*@", re.DOTALL)


def _transient(exc: BaseException) -> bool:
    """Whether ``exc`` is about the database rather than the data (worth retrying whole).

    Checked by class name through the MRO: the events' rows go through the driver's own
    cursor, so its exceptions come unwrapped (sqlite3's, psycopg's) as well as wrapped
    by SQLAlchemy, and both drivers name these classes after PEP 249.
    """
    if isinstance(exc, MemoryError | OSError):
        return True
    names = _class_names(exc)
    return bool(names & {"OperationalError", "InterfaceError", "DisconnectionError"})


def _reason(exc: BaseException) -> str:
    """The bounded ``reason`` label of a refused event."""
    names = _class_names(exc)
    if "IntegrityError" in names:
        return "store_conflict"
    if names & {"DataError", "OverflowError", "ValueError"}:
        return "invalid_value"
    return "store_refused"


def _class_names(exc: BaseException) -> set[str]:
    """The class names of ``exc`` and of the driver's exception SQLAlchemy wrapped in it."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        names.update(cls.__name__ for cls in type(orig).__mro__)
    return names


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, SQLAlchemyError, ValueError):
        # Not a URL SQLAlchemy reads (``postgresql//u:pw@h/db``): hide between ':' and '@'.
        return repr(_PASSWORD.sub(":***@", url))
