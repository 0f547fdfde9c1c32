"""What the store knows of outbound messages, as the router asks it.

    linker = StoreLinker(store)
    linker.known(["a@app.example", "b@app.example"])   # the first we sent (or saw answered)

A :class:`Linker` is the router's only way to the store, so routing stays a function of
the message and these answers (tests give a dict-backed one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection, select

from monitor.collectors.mailbox.records import InboundMessage, TrackedMessage
from monitor.store import Store
from monitor.store.records import kind_of
from monitor.store.schema import deliveries

__all__ = ["Linker", "StoreLinker"]

_CHUNK = 200


class Linker(Protocol):
    def known(self, message_ids: Sequence[str]) -> str | None:
        """The first of ``message_ids`` that is an outbound message we know, or the
        original an inbound message we read answered."""

    def recipients(self, message_id: str) -> list[str]:
        """The recipients ``message_id`` was sent to."""

    def by_token(self, token: str) -> tuple[str, str | None] | None:
        """(Message-ID, recipient) of a tracking token."""

    def latest_to(self, recipient: str, before: float) -> str | None:
        """The Message-ID of the newest message to ``recipient`` submitted before ``before``."""


class StoreLinker:
    """A :class:`Linker` over the deliveries and the mailbox record tables."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tables: set[str] = set()  # found already: a table once made stays

    def _has(self, conn: Connection, name: str) -> bool:
        if name not in self._tables and conn.dialect.has_table(conn, name):
            self._tables.add(name)
        return name in self._tables

    def known(self, message_ids: Sequence[str]) -> str | None:
        ids = [m for m in dict.fromkeys(message_ids) if m][:_CHUNK]
        if not ids:
            return None
        # Plain SQL: this runs once per inbound message, and Core's compile cost dominates.
        inbound = kind_of(InboundMessage.kind).table.name
        with self.store.engine.connect() as conn:
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            marks = ", ".join([mark] * len(ids))
            found = {r[0] for r in conn.exec_driver_sql(
                f"SELECT DISTINCT message_id FROM deliveries WHERE message_id IN ({marks})",
                tuple(ids))}  # fmt: skip
            answered: dict[str, str] = {}
            if self._has(conn, inbound):
                for mid, linked in conn.exec_driver_sql(
                        f"SELECT message_id, linked_message_id FROM {inbound} WHERE "
                        f"message_id IN ({marks}) AND linked_message_id IS NOT NULL",
                        tuple(ids)):  # fmt: skip
                    answered.setdefault(mid, linked)
        for mid in ids:
            if mid in found:
                return mid
            if mid in answered:
                return answered[mid]
        return None

    def recipients(self, message_id: str) -> list[str]:
        c = deliveries.c
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(c.recipient).where(
                c.message_id == message_id, c.recipient.is_not(None),
                c.state.not_in(("replied", "auto_replied", "complained"))))
            return sorted({r[0] for r in rows})

    def by_token(self, token: str) -> tuple[str, str | None] | None:
        table = kind_of(TrackedMessage.kind).table
        with self.store.engine.connect() as conn:
            if not self._has(conn, table.name):
                return None
            row = conn.execute(select(table.c.message_id, table.c.recipient)
                               .where(table.c.token == token).limit(1)).first()
        return (row[0], row[1]) if row else None

    def latest_to(self, recipient: str, before: float) -> str | None:
        c = deliveries.c
        when = c.submitted_at
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(c.message_id).where(
                    c.recipient.in_({recipient, recipient.lower()}), c.message_id.is_not(None),
                    (when.is_(None)) | (when <= before))
                .order_by(c.last_event_at.desc()).limit(1)).first()
        return row[0] if row else None
