"""The one driver: runs any :class:`monitor.collectors.source.Source` into the pipeline.

    driver = Driver(pipeline, metrics)
    for lines, position in tailer:                      # a file, a stream, a request
        driver.run(source, lines, path)
        driver.commit(source, checkpoint=(key, position))

What the driver owns, so that no caller writes it again: feeding units to the source
(a unit it cannot read is counted by reason and the next one goes on; a source that
raises something else is counted as ``<parser error>`` and logged once), putting the
events into the pipeline, which batches them, committing a checkpoint in the same
transaction as the events read up to it with what the source remembers
(:meth:`Source.state_changes`) and the replacements it hands back at the end of an
input (:meth:`Source.finish`), and the input counts on ``/metrics``
(``mailmon_source_lines_total``, ``mailmon_events_rejected_total{reason="unparsed"}``),
added once the units they count are stored, so a batch read again after a failure is
not counted twice.  Stored, duplicate and refused events are counted by the pipeline as
their batch is written.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from monitor.collectors.source import PARSER_ERROR, Item, NotUnderstood, Source
from monitor.metrics import Metrics
from monitor.model import Event
from monitor.pipeline import Pipeline

__all__ = ["Driver"]

log = logging.getLogger(__name__)

U = TypeVar("U")


class Driver:
    """Feeds sources' units into one pipeline and commits what they read."""

    def __init__(self, pipeline: Pipeline, metrics: Metrics | None = None) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        #: per source: the units and the units not understood already on /metrics
        self._counted: weakref.WeakKeyDictionary[Source[Any], tuple[int, int]] = (
            weakref.WeakKeyDictionary()
        )

    def feed(self, source: Source[U], unit: U, ref: str | None = None) -> list[Item]:
        """Put the items of one unit into the pipeline; returns them ([] if not understood)."""
        try:
            items = source.feed(unit, ref)
        except NotUnderstood as exc:
            source.stats.unparsed[exc.reason] += 1
            return []
        except Exception:
            self._parser_error(source, ref)
            return []
        put: Callable[[Any], None] = self._put_any if source.records else self.pipeline.put
        for item in items:
            put(item)
        return list(items)

    def run(
        self,
        source: Source[U],
        units: Iterable[U],
        ref: str,
        *,
        numbered: bool = True,
        every: int = 0,
        tick: Callable[[int], object] | None = None,
    ) -> int:
        """Feed every unit of ``units``; returns how many were read.

        Each unit is referenced as ``ref:N`` (its number, from 1) or, without
        ``numbered``, as ``ref``.  ``tick(n)`` is called after every ``every`` units: a
        caller's progress bar, or a look at the clock to store a live stream's events.
        """
        feed = source.feed
        put: Callable[[Any], None] = self._put_any if source.records else self.pipeline.put
        checked: Callable[[Any], None] = put if source.records else self.pipeline.put_checked
        unparsed = source.stats.unparsed
        n = 0
        for n, unit in enumerate(units, 1):
            where = f"{ref}:{n}" if numbered else ref
            try:
                events = feed(unit, where)
            except NotUnderstood as exc:
                unparsed[exc.reason] += 1
                events = ()
            except Exception:
                self._parser_error(source, where)
                unparsed = source.stats.unparsed
                events = ()
            put_one = checked if events and source.nul_free else put
            for event in events:
                put_one(event)
            if every and n % every == 0 and tick is not None:
                tick(n)
        return n

    def _put_any(self, item: Item) -> None:
        if isinstance(item, Event):
            self.pipeline.put(item)
        else:
            self.pipeline.put_record(item)

    def commit(
        self,
        source: Source[Any],
        checkpoint: tuple[str, Mapping[str, Any]] | None = None,
        *,
        end: bool = False,
        state: Mapping[str, Any] | None = None,
    ) -> list[Event]:
        """Store what ``source`` read with its checkpoint and state, in one transaction.

        ``end``: its input was read to the end, so the source's replacements
        (:meth:`Source.finish`) go with it.  ``state`` adds checkpoint rows of the
        caller's own.  Returns the events this write stored as new.
        """
        if end:
            retracted, replacements = source.finish()
            if retracted or replacements:
                self.pipeline.replace(retracted, replacements)
        rows = source.state_changes()
        if state:
            rows = {**state, **rows}
        fresh = self.pipeline.flush(checkpoint=checkpoint, state=rows or None)
        self.count(source)
        return fresh

    def count(self, source: Source[Any]) -> tuple[int, int]:
        """Add what ``source`` read since the last count to /metrics: (units, not understood)."""
        stats = source.stats
        return self.count_upto(source, stats.lines, sum(stats.unparsed.values()))

    def count_upto(self, source: Source[Any], lines: int, unparsed: int, *,
                   publish: bool = True) -> tuple[int, int]:  # fmt: skip
        """Count what ``source`` read until it had read ``lines`` units (``unparsed`` not
        understood): on /metrics when ``publish``, else only marked as counted (a group
        commit's batch that failed; its sender retries)."""
        seen_lines, seen_unparsed = self._counted.get(source, (0, 0))
        if lines <= seen_lines and unparsed <= seen_unparsed:
            return (0, 0)  # a later commit already counted past it
        self._counted[source] = (lines, unparsed)
        new = (lines - seen_lines, unparsed - seen_unparsed)
        if self.metrics is not None and publish:
            self.metrics.count_input(source.label, *new)
        return new

    def discard(self, source: Source[Any]) -> None:
        """Drop what is pending; what ``source`` read so far is never counted (it is read
        again, from its checkpoint or by a sender that retries)."""
        self.pipeline.discard()
        stats = source.stats
        self._counted[source] = (stats.lines, sum(stats.unparsed.values()))

    def _parser_error(self, source: Source[Any], ref: str | None) -> None:
        # A bug on one unit must not stop the input: re-reading it from the checkpoint
        # would fail the same way forever.  Logged once per source, counted always.
        unparsed = source.stats.unparsed
        if not unparsed[PARSER_ERROR]:
            log.exception("%s: the %s source failed on a unit; counting it as not understood",
                          ref, source.kind)  # fmt: skip
        unparsed[PARSER_ERROR] += 1
