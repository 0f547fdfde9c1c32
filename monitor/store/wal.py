"""SQLite's WAL copied into the database on a thread of its own, not by the commits.

In WAL mode a commit appends pages to the ``-wal`` file; a checkpoint copies them into the
database (with an fsync before and after) so the log can start over.  By default the
connection that commits past 1,000 pages does it, inside its commit.  A reader holds back
the pages committed after it began, so after a long read (the rollup's) the next commit
copies everything written meanwhile: measured in ``serve`` at 500 webhook requests/s, that
commit took 146-230 ms instead of 10-20, and every request of its group waited for it.

:class:`WalCheckpointer` runs in the store's writer process: after each batch it is
nudged and copies what is new (``PASSIVE``: it never waits for, nor blocks, the writer or a
reader; at most every :data:`SPACING` seconds), and once the log is long and all copied,
rewinds it (``RESTART``, tried without waiting: it is skipped while a reader still uses
the log).  The writer's own connections
keep the automatic checkpoint only as a bound on the log's length, far above what the
thread lets it reach, so a commit copies pages only if the thread falls behind.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

__all__ = ["SAFETY_BYTES", "SPACING", "WalCheckpointer", "sqlite_file"]

log = logging.getLogger(__name__)

#: Seconds at least between two checkpoints: a page committed again and again (the last
#: page of a table, a busy domain's index page) is copied once per checkpoint, and each
#: checkpoint syncs the disk twice.  At 500 webhook requests/s, a checkpoint after every
#: batch cost the disk 25 % more writes than the automatic one (every 1,000 pages, about
#: 0.125 s there) and left p99 at 31-165 ms; 0.2 s made each checkpoint's burst of writes
#: slow the commits beside it (p99 68-91 ms); 0.1 s: p99 55-66 ms, max 74-100 ms.
SPACING = 0.1

#: The writer's automatic checkpoint, as bytes of log: only if the thread falls behind for
#: long (at 500 webhook requests/s a 1.5 s read let 220 MB pile up, copied in 0.2 s after).
SAFETY_BYTES = 512 * 1024 * 1024


def sqlite_file(engine: Engine) -> Path | None:
    """The SQLite database file ``engine`` opens; None for PostgreSQL or in-memory."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser()


class WalCheckpointer:
    """Checkpoints the SQLite database at ``path`` on its own thread (see the module)."""

    def __init__(self, path: str, *, restart_pages: int = 1000, every: float = 1.0,
                 spacing: float = SPACING) -> None:  # fmt: skip
        """``restart_pages``: rewind the log once it is this long and all copied (the
        default automatic checkpoint's length); ``every``: seconds between checkpoints when
        not nudged (other processes write too); ``spacing``: seconds at least from one
        checkpoint to the next."""
        self.path = path
        self.restart_pages = restart_pages
        self.every = every
        self.spacing = spacing
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False  # a failure is logged once, then again only after a success

    @classmethod
    def for_engine(cls, engine: Engine, **kwargs: Any) -> WalCheckpointer | None:
        """One for the SQLite file of ``engine`` (None for PostgreSQL or in-memory), its
        connections from now on checkpointing only past :data:`SAFETY_BYTES`."""
        path = sqlite_file(engine)
        if path is None:
            return None

        @event.listens_for(engine, "connect")
        def _bound_only(dbapi_conn: Any, _record: Any) -> None:
            (page,) = dbapi_conn.execute("PRAGMA page_size").fetchone()
            dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={max(1000, SAFETY_BYTES // page)}")

        engine.dispose()  # the pooled connections were opened before: new ones get it
        return cls(str(path), **kwargs)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mailmon-wal", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """Pages were committed: copy them soon."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread (after the checkpoint it is in, if any)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> WalCheckpointer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            # timeout=0: a lock that is taken means "not now", never a wait.
            db = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                 check_same_thread=False)  # fmt: skip
        except sqlite3.Error as exc:
            log.warning("WAL checkpoints stay with the writer: %s", exc)
            return
        try:
            while True:
                self._wake.wait(self.every)
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self.checkpoint(db)
                except sqlite3.Error as exc:
                    if not self._failed:
                        log.warning("WAL checkpoint failed (tried again): %s", exc)
                    self._failed = True
                else:
                    self._failed = False
                if self._stop.wait(self.spacing):
                    return
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection) -> tuple[int, int]:
        """One round: copy what is new; rewind a long log if all of it is copied.  Returns
        (pages in the log, pages copied) as the copy left them."""
        _busy, pages, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if pages >= self.restart_pages and copied == pages:
            db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        return pages, copied
