"""Group commit: the HTTP requests that arrive while one transaction is written share the next.

One :class:`GroupCommit` per :class:`~monitor.pipeline.Pipeline` (:func:`group_of`).  A
request's units are fed into the pipeline's pending batch under one lock, so concurrent
requests fill the same batch.  A leader (a thread of the group's own, alive while there is
work) detaches the pending batch under that lock and writes and commits it outside it,
while new requests accumulate for the next commit; then it answers every request of the
batch at once and takes the next one.  One commit serves every request that arrived
during the one before, instead of one commit each, and a request waiting for its commit
holds no thread (an asyncio future, or a :class:`threading.Event` for a caller on a thread).

Under load the leader also lets a batch gather: once a commit served
:attr:`GroupCommit.gather_from` requests or more, the next one starts no sooner than
:attr:`GroupCommit.gather_seconds` after that one was taken.  A commit has a cost of its own
(a transaction, its statements, the pages it writes), about two milliseconds of CPU with
SQLite: at 500 requests/s, committing whatever had arrived meant 100 to 250 commits a
second; gathering for 20 ms makes it 50 at most, each request waiting at most that much
longer.  A lone sender (or two or three posting one request at a time) is never held back:
its batches stay small, and small batches are committed at once.

The durability contract is unchanged: a request is answered only after the transaction
holding its events has committed, and told to retry if it failed (nothing of that batch
is stored or counted).  A request whose feeding raised spoils the batch it joined: that
batch is dropped whole at once, and every request in it told to retry, since its events
can no longer be told from the others'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from monitor.collectors.source import Source
from monitor.driver import Driver
from monitor.pipeline import Pipeline

__all__ = ["Batch", "GroupCommit", "group_of"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Batch:
    """The requests fed into one pending batch, and how its commit went."""

    __slots__ = ("done", "error", "futures", "rejected", "requests", "sources")

    def __init__(self) -> None:
        #: set once the batch is committed (or failed)
        self.done = threading.Event()
        self.error: BaseException | None = None
        #: ids of the events the store refused on their own (each request finds its own)
        self.rejected: frozenset[str] = frozenset()
        self.requests = 0
        self.sources: dict[Source[Any], Driver] = {}
        self.futures: list[asyncio.Future[None]] = []

    def check(self) -> frozenset[str]:
        """The refused ids, once committed; raises if the batch could not be stored."""
        if self.error is not None:
            raise RuntimeError("the batch of this request could not be stored") from self.error
        return self.rejected

    def _finish(self) -> None:
        self.done.set()
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for future in self.futures:
            by_loop.setdefault(future.get_loop(), []).append(future)
        for loop, futures in by_loop.items():  # one wake-up per loop, not one per request
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class GroupCommit:
    """Feeds requests into ``pipeline`` and commits them in groups (see the module)."""

    #: a commit of this many requests or more says requests arrive together: the next one
    #: waits until ``gather_seconds`` after it was taken, so that more join it
    gather_from = 4
    gather_seconds = 0.020

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        pipeline.group_commit = True  # full batches wait for the group's commit
        self._feed = threading.Lock()
        self._open = Batch()
        self._leading = False
        self._gather_until = 0.0  # (monotonic) the next batch is not taken before
        #: commits made and requests they answered (a commit serves requests/commits of them)
        self.commits = 0
        self.requests = 0

    def join(self, driver: Driver, source: Source[Any], feed: Callable[[], T],
             future: asyncio.Future[None] | None = None) -> tuple[T, Batch]:  # fmt: skip
        """``feed()`` (which puts a request's units into the pipeline) under the feed lock;
        returns what it returned and the batch it joined, whose ``done`` is set (and
        ``future``, if given, resolved on its loop) once that batch is committed.  Raises
        what ``feed`` raised (its batch is then dropped)."""
        with self._feed:
            batch = self._open
            batch.sources.setdefault(source, driver)
            batch.requests += 1
            self.requests += 1
            if future is not None:
                batch.futures.append(future)
            try:
                result = feed()
            except BaseException as exc:
                self._spoil(batch, exc)
                raise
            if not self._leading:
                leader = threading.Thread(target=self._lead, name="mailmon-commit", daemon=True)
                try:
                    leader.start()
                except RuntimeError as exc:  # no thread to be had: this batch is retried
                    self._spoil(batch, exc)
                    raise
                self._leading = True
        return result, batch

    def _spoil(self, batch: Batch, exc: BaseException) -> None:
        """Drop the open batch (under the feed lock) and fail its requests: they retry."""
        batch.error = exc
        self._open = Batch()
        self.pipeline.detach()  # its events, dropped
        for source, driver in batch.sources.items():  # and what was read of them, not counted
            driver.count_upto(source, source.stats.lines, sum(source.stats.unparsed.values()),
                              publish=False)  # fmt: skip
        batch._finish()

    def run(self, driver: Driver, source: Source[Any],
            feed: Callable[[], T]) -> tuple[T, frozenset[str]]:  # fmt: skip
        """:meth:`join`, then wait on this thread for the commit: (what ``feed`` returned,
        the ids of the batch's events the store refused).  Raises if it was not stored."""
        result, batch = self.join(driver, source, feed)
        batch.done.wait()
        return result, batch.check()

    def _lead(self) -> None:
        """Commit the open batch while it has requests; then stop leading."""
        while True:
            wait = self._gather_until - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # holding no lock: requests join the open batch meanwhile
            with self._feed:
                batch = self._open
                if not batch.requests:
                    self._leading = False
                    return
                self._open = Batch()
                if batch.requests >= self.gather_from:
                    self._gather_until = time.monotonic() + self.gather_seconds
                taken: Any = None
                read: dict[Source[Any], tuple[int, int]] = {}
                try:
                    taken = self.pipeline.detach()
                    read = {source: (source.stats.lines, sum(source.stats.unparsed.values()))
                            for source in batch.sources}  # fmt: skip
                except BaseException as exc:  # the requests are told to retry
                    batch.error = exc
            try:
                if batch.error is None:
                    batch.rejected = frozenset(self.pipeline.commit_detached(taken))
            except BaseException as exc:
                batch.error = exc
            try:
                for source, driver in batch.sources.items():
                    # What was read up to the detach is on /metrics once stored, never if not.
                    if source in read:
                        driver.count_upto(source, *read[source], publish=batch.error is None)
            except Exception:
                log.exception("counting a committed batch failed")
            self.commits += 1
            batch._finish()


_GROUPS: weakref.WeakKeyDictionary[Pipeline, GroupCommit] = weakref.WeakKeyDictionary()
_GROUPS_GUARD = threading.Lock()


def group_of(pipeline: Pipeline) -> GroupCommit:
    """The one group commit of ``pipeline``, shared by every endpoint that stores into it."""
    with _GROUPS_GUARD:
        group = _GROUPS.get(pipeline)
        if group is None:
            group = _GROUPS[pipeline] = GroupCommit(pipeline)
        return group
