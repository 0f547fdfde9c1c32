"""What the Postfix parser remembers per queue id, bounded in count and in event time.

A queue id is remembered from its first line until ``removed``.  Lines lost to log
rotation, a parser started mid-way or a crashed Postfix would otherwise keep state
forever, so :class:`QueueTable` also drops the least recently seen ids beyond a count,
and ids not seen for a while of *log* time (replaying a month of logs ages them the same
as following them live).
"""

from __future__ import annotations

import collections
from datetime import datetime, timedelta

__all__ = ["QueueTable", "Queued", "Recipient"]

Key = tuple[str, str, str]  # (host, Postfix instance, queue id)


class Recipient:
    """One recipient of a queued message: attempts so far and the last deferral."""

    __slots__ = ("attempts", "code", "diagnostic", "enhanced", "final")

    def __init__(self) -> None:
        self.attempts = 0
        self.final = False
        self.code: int | None = None
        self.enhanced: str | None = None
        self.diagnostic: str | None = None


class Queued:
    """What the log said so far about one queue id."""

    __slots__ = ("arrival", "client", "message_id", "rcpts", "seen", "sender", "size", "tags")

    def __init__(self, seen: datetime) -> None:
        self.arrival: datetime | None = None  # the earliest line that saw it arrive
        self.client: str | None = None
        self.message_id: str | None = None
        self.sender: str | None = None
        self.size: int | None = None
        self.tags: tuple[str, ...] = ()
        self.seen = seen  # the latest line about it, for the age bound
        self.rcpts: dict[str | None, Recipient] = {}

    def arrived(self, moment: datetime) -> None:
        if self.arrival is None or moment < self.arrival:
            self.arrival = moment


class QueueTable:
    """Queue ids -> :class:`Queued`, least recently seen first, bounded."""

    def __init__(self, max_queue_ids: int, max_age_seconds: float) -> None:
        self._queues: collections.OrderedDict[Key, Queued] = collections.OrderedDict()
        self._max = max(1, max_queue_ids)
        self._max_age = timedelta(seconds=max_age_seconds)
        self._aged_at: datetime | None = None
        self.get = self._queues.get

    def __len__(self) -> int:
        return len(self._queues)

    def touch(self, host: str, instance: str, qid: str, moment: datetime) -> Queued:
        """The state of a queue id seen at ``moment``, made when new."""
        key = (host, instance, qid)
        queues = self._queues
        state = queues.get(key)
        if state is not None:
            queues.move_to_end(key)
            state.seen = moment
            return state
        state = queues[key] = Queued(moment)
        if len(queues) > self._max:
            queues.popitem(last=False)
        if moment is not self._aged_at:  # once per distinct timestamp is enough
            self._aged_at = moment
            horizon = moment - self._max_age
            while next(iter(queues.values())).seen < horizon:
                queues.popitem(last=False)
        return state

    def drop(self, host: str, instance: str, qid: str) -> Queued | None:
        """Forget a queue id (``removed``, or refused whole); its state if it had one."""
        return self._queues.pop((host, instance, qid), None)
