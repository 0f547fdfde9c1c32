"""The store's writer in a process of its own, so parsing and writing use two cores.

A thread does not: SQLite releases the GIL only inside its C calls, while binding each
row's 28 values, folding deliveries and counting hold it, so a writer thread and the
thread that parses take turns on one core.  :class:`WriterProcess` has the contract of
:meth:`Store.write <monitor.store.Store.write>`: the batch (with its records,
checkpoint, state and retractions) is stored in one transaction, in a child process,
and ``write`` returns when it is committed.  Events go over as plain tuples
(:mod:`monitor.store.wire`); what comes back are positions, mapped here onto the
caller's own objects, so the caller sees the same events and records it gave.
``write`` is :meth:`~WriterProcess.send` then :meth:`~WriterProcess.receive`; the pipeline
sends from the thread that parses and receives on its background thread, so the child
writes one batch while the next is parsed.

The child is a new interpreter running this module (not a fork: the parent runs
threads), started at the first write or by :meth:`WriterProcess.start`; rows cross a
socket pair in slices, so neither side holds a whole batch encoded.  A slice goes as
``marshal`` data (tagged :data:`_MARSHALLED`): a batch of the benchmark's events was
encoded in 12.9 ms and read back in 14.8 against pickle's 35.2 and 20.6; a slice holding
something marshal refuses (a str subclass, say) is pickled instead, as are the batch's
checkpoint, state, retractions and records.
With SQLite the child copies the WAL into the database on a thread of its own, nudged
after each batch (:mod:`monitor.store.wal`), so its commits do not.  If it dies, the
write in flight raises :class:`~monitor.errors.StoreError` and is not acknowledged
(at-least-once: its events are idempotent if they were committed after all); the next
write starts a new child.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import marshal
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from sqlalchemy.exc import StatementError

from monitor.errors import StoreError
from monitor.model import Event
from monitor.records import Record
from monitor.store import OnRecords, OnReject, Store
from monitor.store.wal import WalCheckpointer
from monitor.store.wire import WireEvent, to_wire

__all__ = ["Sent", "WriterProcess"]

log = logging.getLogger(__name__)

_STOP_SECONDS = 30.0  # for the child to finish a batch in flight and close its database
_SLICE = 2000  # rows a message: encoded and read back one slice at a time
#: The first byte of a slice of rows sent as marshal data; pickled messages start with
#: pickle's PROTO opcode (0x80).
_MARSHALLED = b"m"


class Sent(NamedTuple):
    """A batch :meth:`WriterProcess.send` handed over, for :meth:`WriterProcess.receive`."""

    events: list[Event]  # in the order sent: the child answers with positions
    unsendable: list[Event]
    records: list[Record]


class WriterProcess:
    """Writes batches into the store at ``url`` from a child process (see the module)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # the connection, one side of it at a time
        # One batch from send to receive: taken by send, let go by receive (any thread).
        self._turn = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child now (it imports and opens the database while the caller goes on)."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._process is not None:
            return
        # A plain interpreter running this module, not multiprocessing's spawn: that would
        # also import the parent's __main__ (the whole CLI) and start a resource tracker,
        # ~27 MB beside a batch's own memory.
        ours, theirs = socket.socketpair()
        root = logging.getLogger()
        formats = [h.formatter._fmt for h in root.handlers if h.formatter is not None]
        path = os.pathsep.join(p for p in sys.path if p)  # what the parent imports from
        env = {**os.environ, "PYTHONPATH": path}
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        # The URL may hold a password: never on the command line, where ps shows it.
        conn.send((self.url, root.getEffectiveLevel(), formats[0] if formats else None))
        self._process, self._conn = process, conn

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
        """:meth:`Store.write`, done by the child process."""
        sent = self.send(batch, checkpoint=checkpoint, state=state, retract=retract,
                         records=records)  # fmt: skip
        return self.receive(sent, on_reject=on_reject, on_records=on_records)

    def send(
        self,
        batch: Iterable[Event],
        *,
        checkpoint: tuple[str, Mapping[str, Any]] | None = None,
        state: Mapping[str, Any] | None = None,
        retract: Sequence[str] = (),
        records: Iterable[Record] = (),
    ) -> Sent:
        """The first half of :meth:`write`: hand the batch to the child, which starts
        writing it; :meth:`receive` (from any thread) waits for its answer.  Until then no
        other batch can be sent: a caller that sends from one thread and receives on
        another lets the child write while it goes on (``Pipeline`` does)."""
        self._turn.acquire()
        try:
            return self._send(batch, checkpoint, state, retract, records)
        except BaseException:
            self._turn.release()
            raise

    def _send(
        self,
        batch: Iterable[Event],
        checkpoint: tuple[str, Mapping[str, Any]] | None,
        state: Mapping[str, Any] | None,
        retract: Sequence[str],
        records: Iterable[Record],
    ) -> Sent:
        sent: list[Event] = []
        unsendable: list[Event] = []  # refused once the rest is stored, as Store.write would
        extra = list(records)
        with self._lock:
            self._start()
            assert self._conn is not None
            try:
                # In slices: a whole batch pickled at once would sit in memory on both sides.
                rows: list[tuple[object, ...]] = []
                for event in batch:
                    try:
                        rows.append(to_wire(event))
                    except Exception as exc:  # no usable time, say: the store refuses it alone
                        log.warning("left out event %s from %s: it cannot be stored (%s)",
                                    event.id, event.source, exc)  # fmt: skip
                        unsendable.append(event)
                        continue
                    sent.append(event)
                    if len(rows) == _SLICE:
                        _send_rows(self._conn, rows)
                        rows = []
                if rows:
                    _send_rows(self._conn, rows)
                self._conn.send((checkpoint, dict(state) if state else None, list(retract), extra))
            except (EOFError, OSError) as exc:
                raise self._stopped(len(sent)) from exc
            except BaseException:
                # Interrupted between slices: the child would take them as the start of
                # the next batch.  A new child starts clean.
                self._stop(wait=False)
                raise
        return Sent(sent, unsendable, extra)

    def receive(
        self,
        sent: Sent,
        *,
        on_reject: OnReject | None = None,
        on_records: OnRecords | None = None,
    ) -> list[Event]:
        """The second half of :meth:`write`: wait for the child to commit what :meth:`send`
        sent; the new events are returned as the caller's own objects."""
        try:
            with self._lock:
                if self._conn is None:  # stopped since (close, or a failed send)
                    raise self._stopped(len(sent.events))
                try:
                    reply = self._conn.recv()
                except (EOFError, OSError) as exc:
                    raise self._stopped(len(sent.events)) from exc
                except BaseException:
                    self._stop(wait=False)  # its answer would be taken for the next batch's
                    raise
        finally:
            self._turn.release()
        if reply[0] == "error":
            raise reply[1]
        fresh, stored, refused = reply[1:]
        if on_reject is not None:
            for event in sent.unsendable:
                on_reject(event, "store_refused")
            for what, position, reason in refused:
                on_reject(sent.events[position] if what == "event" else sent.records[position],
                          reason)  # fmt: skip
        if on_records is not None and sent.records:
            on_records([sent.records[i] for i in stored])
        return [sent.events[i] for i in fresh]

    def _stopped(self, events: int) -> StoreError:
        code = self._stop(wait=False)
        return StoreError(
            f"the store's writer process stopped (exit code {code}) before it "
            f"acknowledged a batch of {events} events"
        )

    def close(self) -> None:
        """Stop the child once it has finished the batch in flight."""
        with self._lock:
            self._stop(wait=True)

    def _stop(self, *, wait: bool) -> int | None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None or conn is None:
            return None
        if wait:
            with contextlib.suppress(OSError):  # gone already
                conn.send(None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(_STOP_SECONDS)
        if process.poll() is None:
            process.kill()
        process.wait()
        conn.close()
        return process.returncode

    def __enter__(self) -> WriterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _send_rows(conn: Connection, rows: list[tuple[object, ...]]) -> None:
    try:
        data = marshal.dumps(rows)
    except ValueError:  # not plain values: pickle takes them
        conn.send(rows)
    else:
        conn.send_bytes(_MARSHALLED + data)


def _serve(conn: Connection) -> None:
    """The child: write each batch received, answer with positions (or the error)."""
    # Ctrl-C reaches the whole process group: the parent decides when this one stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        url, level, fmt = conn.recv()
    except EOFError:
        return
    logging.basicConfig(level=level, format=fmt or logging.BASIC_FORMAT)
    gc.set_threshold(100_000, 50, 100)  # as the pipeline does: millions of short-lived rows
    try:
        store = Store.open(url, create=False)
    except Exception as exc:
        _answer_error(conn, _read_batch(conn), exc)  # the reply to the first request
        return
    wal = WalCheckpointer.for_engine(store.engine)
    with store, wal or contextlib.nullcontext():
        while True:
            request = _read_batch(conn)
            if request is None:
                return  # asked to stop, or the parent is gone
            try:
                reply = _write(store, *request)
            except Exception as exc:
                _answer_error(conn, request, exc)
                continue
            conn.send(reply)
            if wal is not None:
                wal.nudge()


_Request = tuple[list[WireEvent], Any, Any, list[str], list[Record]]


def _read_batch(conn: Connection) -> _Request | None:
    """The next batch: slices of rows, then (checkpoint, state, retract, records)."""
    batch: list[WireEvent] = []
    make = WireEvent._make
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return None
        if data[:1] == _MARSHALLED:
            batch.extend(map(make, marshal.loads(memoryview(data)[1:])))
            continue
        message = pickle.loads(data)
        if message is None:
            return None
        if isinstance(message, list):
            batch.extend(map(make, message))
        else:
            return (batch, *message)


def _write(
    store: Store,
    batch: list[WireEvent],
    checkpoint: tuple[str, Mapping[str, Any]] | None,
    state: Mapping[str, Any] | None,
    retract: list[str],
    records: list[Record],
) -> tuple[str, list[int], list[int], list[tuple[str, int, str]]]:
    refused: list[tuple[WireEvent | Event | Record, str]] = []
    stored: list[Record] = []
    fresh = store.write(
        batch,  # type: ignore[arg-type]  # the writer reads a WireEvent as an Event
        checkpoint=checkpoint, state=state, retract=retract, records=records,
        on_reject=lambda item, reason: refused.append((item, reason)), on_records=stored.extend,
    )  # fmt: skip
    at = {id(e): i for i, e in enumerate(batch)}
    record_at = {id(r): i for i, r in enumerate(records)}
    return (
        "ok",
        [at[id(e)] for e in fresh],
        [record_at[id(r)] for r in stored],
        [
            ("record", record_at[id(item)], reason)
            if isinstance(item, Record)
            else ("event", at[id(item)], reason)
            for item, reason in refused
        ],
    )


def _answer_error(conn: Connection, request: _Request | None, exc: Exception) -> None:
    """Send ``exc`` to the parent as itself, so it is judged (transient or not) as one raised
    there; one that does not survive pickling goes as a StoreError with its text."""
    if isinstance(exc, StatementError):
        exc.params = None  # the whole batch's rows: not needed, and megabytes
    try:
        pickle.loads(pickle.dumps(exc))
        portable: Exception = exc
    except Exception:
        portable = StoreError(f"{type(exc).__name__}: {exc}")
    if request is not None:  # else the parent is gone, or asked to stop
        conn.send(("error", portable))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
