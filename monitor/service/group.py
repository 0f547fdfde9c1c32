"""Group commit: the HTTP requests that arrive while one transaction is written share the next.

One :class:`GroupCommit` per :class:`~monitor.pipeline.Pipeline` (:func:`group_of`).  A
request's units are fed into the pipeline's pending batch under one lock, so concurrent
requests fill the same batch.  Then the request waits for a commit that holds its events:
the first waiter to get the commit lock (the leader) detaches the pending batch under the
feed lock and writes and commits it outside it, while new requests accumulate for the next
commit; the waiters whose batch it was find it done and return.  One commit serves every
request that arrived during the one before, instead of one commit each.

The durability contract is unchanged: :meth:`GroupCommit.run` returns only after the
transaction holding the request's events has committed, and raises if it failed (the
sender is told to retry; nothing of that batch is stored or counted).  A request whose
feeding raised spoils the batch it joined: that batch is dropped whole, and every request
in it told to retry, since its events can no longer be told from the others'.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from monitor.collectors.source import Source
from monitor.driver import Driver
from monitor.pipeline import Pipeline

__all__ = ["GroupCommit", "group_of"]

T = TypeVar("T")


class _Batch:
    """The requests fed into one pending batch, and how its commit went."""

    __slots__ = ("done", "error", "rejected", "sources")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None
        #: ids of the events the store refused on their own (each request finds its own)
        self.rejected: frozenset[str] = frozenset()
        self.sources: dict[Source[Any], Driver] = {}


class GroupCommit:
    """Feeds requests into ``pipeline`` and commits them in groups (see the module)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        pipeline.group_commit = True  # full batches wait for the group's commit
        self._feed = threading.Lock()
        self._commit = threading.Lock()
        self._open = _Batch()
        #: commits made and requests they answered (a commit serves requests/commits of them)
        self.commits = 0
        self.requests = 0

    def run(self, driver: Driver, source: Source[Any],
            feed: Callable[[], T]) -> tuple[T, frozenset[str]]:  # fmt: skip
        """``feed()`` (which puts a request's units into the pipeline) under the feed lock,
        then wait until they are committed: (what ``feed`` returned, the ids of the batch's
        events the store refused).  Raises what feeding or writing raised."""
        with self._feed:
            batch = self._open
            batch.sources.setdefault(source, driver)
            self.requests += 1
            try:
                result = feed()
            except BaseException as exc:
                if batch.error is None:
                    batch.error = exc
                broke: BaseException | None = exc
            else:
                broke = None
        self._wait(batch)  # a spoiled batch too: its leader drops it, the next one is clean
        if broke is not None:
            raise broke
        if batch.error is not None:
            raise RuntimeError("the batch of this request could not be stored") from batch.error
        return result, batch.rejected

    def _wait(self, batch: _Batch) -> None:
        with self._commit:
            if batch.done:  # a leader committed it while this request waited
                return
            # Not done and nobody else writing: ``batch`` is the open one.  Detach it.
            with self._feed:
                taken = self.pipeline.detach()
                self._open = _Batch()
                read = {source: (source.stats.lines, sum(source.stats.unparsed.values()))
                        for source in batch.sources}  # fmt: skip
            if batch.error is None:
                try:
                    batch.rejected = frozenset(self.pipeline.commit_detached(taken))
                except BaseException as exc:
                    batch.error = exc
            for source, driver in batch.sources.items():
                # What was read up to the detach is on /metrics once stored, never if not.
                driver.count_upto(source, *read[source], publish=batch.error is None)
            self.commits += 1
            batch.done = True


_GROUPS: weakref.WeakKeyDictionary[Pipeline, GroupCommit] = weakref.WeakKeyDictionary()
_GROUPS_GUARD = threading.Lock()


def group_of(pipeline: Pipeline) -> GroupCommit:
    """The one group commit of ``pipeline``, shared by every endpoint that stores into it."""
    with _GROUPS_GUARD:
        group = _GROUPS.get(pipeline)
        if group is None:
            group = _GROUPS[pipeline] = GroupCommit(pipeline)
        return group
