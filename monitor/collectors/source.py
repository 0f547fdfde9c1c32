"""What every source of events is: one unit of input in, its events out.

A unit is what the source's input is made of: a log line, a decoded JSON record, an
email, a report.  A source turns each unit into events and counts what it did; the
driver (:class:`monitor.driver.Driver`) owns everything around that: feeding units,
batching, committing checkpoints with the events they cover, counts on ``/metrics``.
So the CLI, the file follower and the HTTP routes run every source the same way::

    class Pings(Source[str]):
        kind = "ping"

        def feed(self, unit: str, ref: str | None = None) -> list[Event]:
            self.stats.lines += 1
            if not unit.startswith("PING "):
                raise NotUnderstood("not a ping")      # counted, the next unit goes on
            return [Event(type=EventType.DELIVERED, occurred_at=now(),
                          source="ping", recipient=unit[5:], raw_ref=ref)]

    driver = Driver(pipeline, metrics)
    pings = Pings()
    driver.run(pings, ["PING a@example.com", "hello"], "stdin")
    driver.commit(pings, checkpoint=("ping:stdin", {"offset": 2}))

A source counts every unit it is given in ``stats.lines`` first thing (so a unit that
fails later is still counted as read) and either counts what it did not understand
in ``stats.unparsed`` itself (the MTA parsers, on their hot path) or raises
:class:`NotUnderstood`, which the driver counts.  Any other exception is a bug in the
source: the driver counts the unit as ``<parser error>`` and goes on, so one poisoned
line cannot stop a follower that would read it again forever.

A source of records that are not per-recipient events (a DMARC report's rows, a DNS
check) sets ``records = True`` and returns them from ``feed`` too; they are stored in the
same transaction as the events and the checkpoint.

A source that remembers something across units (the MTA parsers' per-queue-id state)
says what changed in :meth:`Source.state_changes`, stored with the next commit; one
whose units can be understood only once its whole input is read (lines of a rotated
log read newest first) hands the driver replacements in :meth:`Source.finish`.
"""

from __future__ import annotations

import collections
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from monitor.model import Event
from monitor.records import Record

__all__ = ["PARSER_ERROR", "Item", "NotUnderstood", "ParseStats", "Source"]

#: What a source makes of a unit: per-recipient events, and (sources that say so in
#: ``Source.records``) records of other kinds (DMARC rows, DNS checks, placements).
Item = Event | Record

#: The ``unparsed`` key of units on which a source raised something else than NotUnderstood.
PARSER_ERROR = "<parser error>"

U = TypeVar("U")


class NotUnderstood(Exception):
    """A unit the source cannot read; ``reason`` is a short, bounded description."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ParseStats:
    """What a source did with its units; ``unparsed`` is keyed by a short reason.

    ``lines`` counts units of every kind (lines, records, emails).  Every unit lands in
    exactly one of: a unit with events, ``ignored``, ``tracked``, ``unparsed``.
    """

    lines: int = 0
    events: int = 0
    ignored: int = 0  # understood, nothing to record (connect, TLS, anvil, not Postfix, ...)
    tracked: int = 0  # understood and remembered for correlation (client=, message-id=, ...)
    unparsed: collections.Counter[str] = field(default_factory=collections.Counter)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready counters."""
        return {
            "lines": self.lines,
            "events": self.events,
            "ignored": self.ignored,
            "tracked": self.tracked,
            "unparsed": dict(sorted(self.unparsed.items())),
        }


class Source(ABC, Generic[U]):
    """A source of events: :meth:`feed` one unit of type ``U``, get its events."""

    #: What the source reads, as ``mailmon ingest KIND`` and the ``source`` label name it.
    kind: ClassVar[str] = ""
    #: Whether :meth:`feed` returns records (:class:`monitor.records.Record`) besides
    #: events: the driver then sorts each item to its path (events alone skip the look).
    records: ClassVar[bool] = False
    stats: ParseStats

    @property
    def nul_free(self) -> bool:
        """True while no unit fed (nor state restored) held a NUL character: the events
        then hold none either, and the pipeline skips its scan of their text.  A source
        that does not watch for NULs says False."""
        return False

    @abstractmethod
    def feed(self, unit: U, ref: str | None = None) -> Sequence[Item]:
        """The events (and records) ``unit`` completes (``ref``: where it was read)."""

    def finish(self) -> tuple[list[str], list[Event]]:
        """At the end of an input: stored event ids to retract, and the events that replace them."""
        return [], []

    def state_changes(self) -> dict[str, Any]:
        """What the source remembers that changed since the last call: checkpoint rows."""
        return {}

    @property
    def label(self) -> str:
        """The ``source`` label of this source's input counts."""
        return self.kind
