"""Records: what sources report that is not an event for one message and recipient.

DMARC aggregate rows, TLS-RPT results, DNS checks, DNSBL listings, seed placements.
Each kind is a frozen dataclass with a table of its own in the store
(:mod:`monitor.store.records`); like an :class:`~monitor.model.Event`, a record's
``id`` is a hash of where it came from, when, and the fields that identify it, so the
same report read twice is stored once::

    @register_record
    @dataclass(frozen=True, slots=True)
    class DnsblListing(Record):
        kind = "dnsbl_listings"  # its table
        identity_fields = ("ip", "zone")
        indexes = (("ip",),)
        ip: str
        zone: str
        listed: bool
        code: str | None = None

    pipeline.put_record(DnsblListing("dnsbl", checked_at, "203.0.113.7", "zen.example", True))
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import ClassVar

from monitor.model import event_id, second_prefix, utc

__all__ = ["Record"]


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a kind; subclasses name ``kind`` and their ``identity_fields``."""

    #: The kind's name, which is also its table's (lower case, ``[a-z0-9_]``).
    kind: ClassVar[str] = ""
    #: The fields that, with ``source``, ``kind`` and ``occurred_at``, make the id.
    identity_fields: ClassVar[tuple[str, ...]] = ()
    #: Columns (tuples of field names) its table is indexed by, besides id and time.
    indexes: ClassVar[tuple[tuple[str, ...], ...]] = ()

    source: str
    occurred_at: datetime
    id: str = field(default="", compare=False, kw_only=True)

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset():
            object.__setattr__(self, "occurred_at", utc(self.occurred_at))
        if not self.id:
            object.__setattr__(self, "id", self.identity())

    def identity(self) -> str:
        """The deterministic id, made as event ids are: the UNIX second in 8 hex digits
        (ids sort by time, so a growing table appends to its index), then a digest of the
        kind, source, time and identifying fields (joined by ``\\x1f``, None as "").
        """
        seconds = f"{self.occurred_at.timestamp():.6f}"
        values = [_text(getattr(self, name)) for name in self.identity_fields]
        return second_prefix(seconds) + event_id(self.source, self.kind, seconds, *values)[:24]

    def row(self) -> dict[str, object]:
        """The table row: times as UNIX seconds, enums by value, tuples joined by commas."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = utc(value).timestamp()
            elif isinstance(value, Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = ",".join(map(str, value))
            if isinstance(value, str) and "\x00" in value:
                value = value.replace("\x00", "\ufffd")  # PostgreSQL refuses NUL in text
            out[f.name] = value
        return out


def _text(value: object) -> object:
    """An identifying value as hashed (None stays None: ``event_id`` hashes it as "")."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return f"{utc(value).timestamp():.6f}"
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)
