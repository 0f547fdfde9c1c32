"""What the MTA log parsers share: line counters, result codes and the correlating skeleton.

A parser's ``feed(line, ref)`` returns the line's events and counts every line in
:class:`ParseStats`.  Its handlers return either the events or one of the codes below.
:class:`QueueParser` holds what the correlating parsers (Postfix, Exim) keep alike: the
bounded table of queued messages, the source names per host and the ``submitted`` event
made the first time a recipient's delivery shows.  Each parser keeps its own ``feed``:
that loop is the ingest's hot path, where a shared method would cost a call per line.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from monitor.collectors.mta.postfix_events import EventMaker
from monitor.collectors.mta.postfix_state import Queued, QueueTable, Recipient
from monitor.collectors.source import ParseStats, Source
from monitor.model import Event

__all__ = [
    "IGNORED",
    "MAX_LINE_CHARS",
    "NDR",
    "TRACKED",
    "UNPARSED",
    "ParseStats",
    "QueueParser",
    "events_of",
]

#: Longer lines are counted as unparsed without running a single pattern over them.
MAX_LINE_CHARS = 64 * 1024

# What a handler returns when it made no Event (it returns the Events otherwise).
IGNORED = 0  # understood, nothing to record
TRACKED = 1  # understood and remembered for the message's later lines
UNPARSED = 2  # not understood

#: The tags of mail the MTA itself sends (bounces, delay notices): kept apart from users'.
NDR = ("ndr",)


class QueueParser(Source[str]):
    """The state of a parser that correlates a message's lines by its queue id.

    A subclass frames lines, dispatches them in its own ``feed`` and calls
    :meth:`_first_seen` when a delivery line names a recipient it has not seen yet.
    """

    def __init__(
        self,
        source_prefix: str,
        max_queue_ids: int,
        max_age_seconds: float,
        queues: QueueTable | None = None,
        state_prefix: str | None = None,
    ) -> None:
        self.stats = ParseStats()
        self._state_prefix = state_prefix
        self._make = EventMaker()
        self._prefix = source_prefix
        # ``queues``: the state of the log's writer, shared by the parsers of its files.
        self._queues = queues if queues is not None else QueueTable(max_queue_ids, max_age_seconds)
        self._sources: dict[str, str] = {}
        self.rejoined = 0  # messages whose later lines were read first, joined since

    @property
    def queues(self) -> QueueTable:
        return self._queues

    @abstractmethod
    def feed(self, line: str, ref: str | None = None) -> list[Event]:
        """The events ``line`` completes (``ref`` names where it was read)."""

    def finish(self) -> tuple[list[str], list[Event]]:
        """Messages whose later lines were read first, joined now that a file is read whole."""
        events, retracted = self.rejoin()
        return retracted, events

    def state_changes(self) -> dict[str, Any]:
        """The queue-id state that changed, under ``state_prefix`` (none without one).

        The table may be the writer's, shared with the parsers of its other files: the
        changes of all of them go with whichever commits first, which is what a caller
        that stores every file's lines before reading the next wants.
        """
        if self._state_prefix is None:
            return {}
        prefix = self._state_prefix
        return {prefix + k: v for k, v in self._queues.changes().items()}

    def rejoin(self) -> tuple[list[Event], list[str]]:
        """Messages whose later lines were read before their earlier ones, now joined.

        Returns the events their later lines make after the earlier ones, and the ids of
        the events they made alone (the store replaces those with these).  Call it when
        a file is read to its end: the earlier lines are then all in.
        """
        ready = self._queues.joinable()
        if not ready:
            return [], []
        events: list[Event] = []
        retracted: list[str] = []
        self.rejoined += len(ready)
        counted, self.stats = self.stats, ParseStats()  # these lines were counted once
        try:
            for orphan in ready:
                retracted.extend(orphan.emitted or ())
                for line, ref in orphan.lines or ():
                    events.extend(self.feed(line or "", ref))
        finally:
            self.stats = counted
        return events, retracted

    def state_size(self) -> int:
        """How many queue ids the parser currently remembers."""
        return len(self._queues)

    def _source(self, host: str) -> str:
        source = self._sources.get(host)
        if source is None:
            source = f"{self._prefix}:{host}"
            if len(self._sources) < 4096:  # junk hosts must not grow the cache without bound
                self._sources[host] = source
        return source

    def _first_seen(
        self,
        state: Queued,
        source: str,
        qid: str,
        recipient: str | None,
        orig: str | None,
        ref: str | None,
        events: list[Event],
    ) -> Recipient:
        """A new recipient's state; its ``submitted`` (at the arrival) joins ``events``."""
        rcpt = state.rcpts[recipient] = Recipient()
        if state.arrival is not None:
            events.append(
                self._make.submitted(state, state.arrival, source, qid, recipient, orig, ref)
            )
        return rcpt


def events_of(feed: Callable[[str], list[Event]], lines: Iterable[str]) -> Iterator[Event]:
    """The Events ``feed`` makes of ``lines``, in log order."""
    for line in lines:
        yield from feed(line)
