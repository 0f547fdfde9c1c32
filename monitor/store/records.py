"""Record kinds and their tables: one table per kind, on the store's metadata.

The module that defines a kind registers it once, at import::

    @register_record
    @dataclass(frozen=True, slots=True)
    class DnsblListing(Record):
        kind = "dnsbl_listings"
        identity_fields = ("ip", "zone")
        indexes = (("ip",),)
        ip: str
        zone: str
        listed: bool

Its table is named after ``kind``: ``id`` (primary key), ``source``, ``occurred_at``
(UNIX seconds, indexed, as everywhere in the store) and one column per further field,
typed from its annotation: ``str`` and str enums TEXT, ``int``, ``float``, ``bool``,
``datetime`` UNIX seconds, tuples comma-joined TEXT; nullable when the annotation
admits None.

A fresh store creates every registered kind's table with the rest of the schema.  A
store without one (made before the kind existed, or by a process that never imported
it) gets it the first time a record of that kind is written, in a transaction of its
own under the migration lock (:func:`ensure_tables`, called by the store).  So a new
kind needs no schema version, and older Mailmon versions still open the store; changing
a released kind's columns is a step in ``migrations.STEPS`` like any other.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.types import TypeEngine

from monitor.records import Record
from monitor.store.schema import metadata
from monitor.store.writer import _existing, _insert_sql

__all__ = [
    "RecordKind",
    "ensure_tables",
    "kind_of",
    "kinds",
    "read_records",
    "register_record",
    "unregister_record",
    "write_records",
]

R = TypeVar("R", bound=type[Record])

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclasses.dataclass(frozen=True)
class RecordKind:
    """A registered kind: its class, its table and the table's columns in row order."""

    cls: type[Record]
    table: Table
    columns: tuple[str, ...]
    #: field -> how a column value read back becomes the field's value (None stays None)
    decoders: dict[str, Callable[[Any], Any]]


_KINDS: dict[str, RecordKind] = {}


def register_record(cls: R) -> R:
    """Give the record class ``cls`` its table on the store's metadata (a class decorator)."""
    kind = cls.kind
    known = _KINDS.get(kind)
    if known is not None:
        if known.cls is cls:
            return cls
        raise ValueError(f"record kind {kind!r} is registered already by {known.cls.__name__}")
    if not _NAME.fullmatch(kind or ""):
        raise ValueError(f"record kind {kind!r}: a table name in [a-z0-9_] is needed")
    if kind in metadata.tables:
        raise ValueError(f"record kind {kind!r} would take the store's table of that name")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [n for n in (*cls.identity_fields, *sum(cls.indexes, ())) if n not in names]
    if unknown:
        raise ValueError(f"record kind {kind!r} names fields it does not have: {unknown}")
    hints = typing.get_type_hints(cls)
    columns = [
        Column("id", String(32), primary_key=True),
        Column("source", String(255), nullable=False),
        Column("occurred_at", Float, nullable=False),
    ]
    decoders: dict[str, Callable[[Any], Any]] = {"occurred_at": _moment}
    for name in names:
        if name not in ("id", "source", "occurred_at"):
            sql_type, nullable, decode = _column_type(kind, name, hints[name])
            columns.append(Column(name, sql_type, nullable=nullable))
            if decode is not None:
                decoders[name] = decode
    table = Table(
        kind, metadata, *columns,
        Index(f"ix_{kind}_occurred_at", "occurred_at"),
        *(Index(f"ix_{kind}_{'_'.join(cols)}", *cols) for cols in cls.indexes),
    )  # fmt: skip
    _KINDS[kind] = RecordKind(cls, table, tuple(c.name for c in table.columns), decoders)
    return cls


def unregister_record(kind: str) -> None:
    """Forget ``kind`` and take its table off the metadata (tests that define kinds)."""
    spec = _KINDS.pop(kind, None)
    if spec is not None:
        metadata.remove(spec.table)


def kinds() -> dict[str, RecordKind]:
    """The registered kinds by name."""
    return dict(_KINDS)


def kind_of(kind: str) -> RecordKind:
    try:
        return _KINDS[kind]
    except KeyError:
        raise KeyError(f"record kind {kind!r} is not registered (register_record)") from None


def _column_type(
    kind: str, name: str, hint: Any
) -> tuple[TypeEngine[Any], bool, Callable[[Any], Any] | None]:
    """The column type of a field annotated ``hint``, whether it admits None, and how a
    value read back becomes the field's (None: as it is)."""
    args = typing.get_args(hint)
    nullable = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        nullable = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"record kind {kind!r}: field {name!r} has more than one type")
        hint = rest[0]
    if typing.get_origin(hint) is tuple:
        return Text(), nullable, _split
    if isinstance(hint, type):
        if issubclass(hint, bool):
            return Boolean(), nullable, bool  # SQLite reads back 0 and 1
        if issubclass(hint, Enum):
            return Text(), nullable, hint
        if issubclass(hint, datetime):
            return Float(), nullable, _moment
        for python, sql in ((str, Text), (int, Integer), (float, Float)):
            if issubclass(hint, python):
                return sql(), nullable, None
    raise TypeError(f"record kind {kind!r}: no column type for field {name!r} ({hint!r})")


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def ensure_tables(conn: Connection, names: Collection[str]) -> None:
    """Create the tables of the kinds ``names`` that the database does not have yet."""
    for name in names:
        kind_of(name).table.create(conn, checkfirst=True)


def write_records(conn: Connection, records: Iterable[Record]) -> list[Record]:
    """Store the records not stored before; returns exactly those, in input order."""
    unique: dict[tuple[str, str], Record] = {}
    for record in records:
        unique.setdefault((record.kind, record.id), record)
    by_kind: dict[str, list[str]] = {}
    for kind, rid in unique:
        by_kind.setdefault(kind, []).append(rid)
    seen: set[tuple[str, str]] = set()
    for kind, ids in by_kind.items():
        spec = kind_of(kind)
        seen.update((kind, rid) for rid in _existing(conn, spec.table, "id", ids))
        rows = []
        for rid in ids:
            if (kind, rid) not in seen:
                row = unique[kind, rid].row()
                rows.append(tuple(row[c] for c in spec.columns))
        if rows:
            # ON CONFLICT: another process may store the same record between the read above
            # and this insert; the record is then its, not an error (same spelling on both).
            tail = " ON CONFLICT (id) DO NOTHING"
            conn.exec_driver_sql(_insert_sql(conn, spec.table, spec.columns, tail), rows)
    return [r for key, r in unique.items() if key not in seen]


def read_records(
    conn: Connection, kind: str, *, since: float | None = None, until: float | None = None
) -> list[Record]:
    """The stored records of ``kind`` with ``since <= occurred_at < until``, oldest first.

    A store that has no table for the kind yet has none of its records.
    """
    spec = kind_of(kind)
    if not conn.dialect.has_table(conn, spec.table.name):
        return []
    c = spec.table.c
    query = select(spec.table).order_by(c.occurred_at, c.id)
    if since is not None:
        query = query.where(c.occurred_at >= since)
    if until is not None:
        query = query.where(c.occurred_at < until)
    out = []
    for row in conn.execute(query).mappings():
        values = dict(row)
        for name, decode in spec.decoders.items():
            if values[name] is not None:
                values[name] = decode(values[name])
        out.append(spec.cls(**values))
    return out
