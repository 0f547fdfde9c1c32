"""Inbound events sent on to the application: signed, retried, dead letters kept.

    forwarder = Forwarder(config.forward, store)
    pipeline = Pipeline(store, on_write=forwarder.offer)   # new events of the mailboxes
    ...
    forwarder.drain()                                       # or close() in a service

Each event of a forwarded type (``[forward] types``, from a ``mailbox:`` source) is POSTed
as JSON (:meth:`monitor.model.Event.to_dict`) to ``[forward] url`` with

    X-Mailmon-Event-Id: <event id>
    X-Mailmon-Timestamp: <UNIX seconds>
    X-Mailmon-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

A 2xx answer is delivery; anything else (or no answer) is tried again after
``backoff_seconds``, doubled each time, up to ``max_attempts``; then the event is kept as a
``webhook_dead_letters`` record, which ``mailmon webhooks retry`` sends again (and deletes
once delivered).  Any stored event can be sent again by its id (a replay).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select

from monitor.config import ForwardConfig
from monitor.model import Event
from monitor.pipeline import Pipeline
from monitor.records import Record
from monitor.store import Store
from monitor.store.records import kind_of, register_record
from monitor.store.schema import events as events_table

__all__ = ["DeadLetter", "Forwarder", "sign"]

log = logging.getLogger(__name__)


@register_record
@dataclass(frozen=True, slots=True)
class DeadLetter(Record):
    """An event the webhook did not take after every attempt (``occurred_at``: given up)."""

    kind = "webhook_dead_letters"
    identity_fields = ("event_id",)
    indexes = (("event_id",),)

    event_id: str
    body: str  # the JSON sent
    attempts: int
    error: str


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256 of ``timestamp.body``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


class Forwarder:
    """Sends events to the webhook from a thread of its own, in order."""

    def __init__(self, settings: ForwardConfig, store: Store, *,
                 sleep: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        if not settings.url:
            raise ValueError("forward: no url")
        self.settings = settings
        self.secret = settings.secret()
        self.store = store
        self.sleep = sleep
        self.clock = clock
        self.types = frozenset(settings.types)
        self.delivered = 0
        self.dead = 0
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="mailmon-forward", daemon=True)
        self._thread.start()

    def offer(self, fresh: Sequence[Event]) -> None:
        """``Pipeline.on_write``: queue the new events that are forwarded."""
        for event in fresh:
            if event.type.value in self.types and event.source.startswith("mailbox:"):
                self._queue.put(event)

    def drain(self) -> None:
        """Wait until every queued event was delivered or dead-lettered."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self.deliver(event.id, _body(event))
            except Exception:  # a bug here must not stop forwarding
                log.exception("forwarding failed")
            finally:
                self._queue.task_done()

    def deliver(self, event_id: str, body: bytes, *, keep: bool = True) -> bool:
        """Send one event, retrying; a dead letter when every attempt failed (``keep``)."""
        error = ""
        for attempt in range(1, self.settings.max_attempts + 1):
            error = self._post(event_id, body)
            if not error:
                self.delivered += 1
                return True
            log.warning("forward %s: attempt %d of %d: %s", event_id, attempt,
                        self.settings.max_attempts, error)  # fmt: skip
            if attempt < self.settings.max_attempts:
                self.sleep(self.settings.backoff_seconds * 2 ** (attempt - 1))
        self.dead += 1
        if keep:
            pipeline = Pipeline(self.store)
            pipeline.put_record(DeadLetter("forward", datetime.fromtimestamp(self.clock(), UTC),
                                           event_id=event_id, body=body.decode(),
                                           attempts=self.settings.max_attempts,
                                           error=error[:500]))  # fmt: skip
            pipeline.close()
        return False

    def _post(self, event_id: str, body: bytes) -> str:
        """"" when the webhook took it, else why not."""
        stamp = int(self.clock())
        request = urllib.request.Request(self.settings.url or "", data=body, method="POST",
                                         headers={
            "Content-Type": "application/json", "X-Mailmon-Event-Id": event_id,
            "X-Mailmon-Timestamp": str(stamp),
            "X-Mailmon-Signature": sign(self.secret, stamp, body)})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_seconds) as answer:
                return "" if 200 <= answer.status < 300 else f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"

    # -- dead letters and replays ------------------------------------------------------

    def retry(self, event_ids: Sequence[str] | None = None) -> dict[str, bool]:
        """Send the dead letters again (all, or those of ``event_ids``); delete the delivered."""
        table = kind_of(DeadLetter.kind).table
        with self.store.engine.connect() as conn:
            if not conn.dialect.has_table(conn, table.name):
                return {}
            query = select(table.c.event_id, table.c.body).order_by(table.c.occurred_at)
            if event_ids:
                query = query.where(table.c.event_id.in_(list(event_ids)))
            letters = dict(conn.execute(query).all())
        done: dict[str, bool] = {}
        for event_id, body in letters.items():
            done[event_id] = self.deliver(event_id, body.encode(), keep=False)
            if done[event_id]:
                with self.store.engine.begin() as conn:
                    conn.execute(delete(table).where(table.c.event_id == event_id))
        return done

    def replay(self, event_id: str) -> bool | None:
        """Send a stored event again by its id (None: no such event)."""
        with self.store.engine.connect() as conn:
            row = conn.execute(select(events_table).where(events_table.c.id == event_id)
                               ).mappings().first()  # fmt: skip
        if row is None:
            return None
        from monitor.store.queries import _event_from_row

        return self.deliver(event_id, _body(_event_from_row(row)), keep=False)


def _body(event: Event) -> bytes:
    return json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":")).encode()
