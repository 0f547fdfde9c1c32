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
from typing import Any

__all__ = ["QueueTable", "Queued", "Recipient", "StatefulParser"]

Key = tuple[str, str, str]  # (host, Postfix instance, queue id)


class Recipient:
    """One recipient of a queued message: attempts so far and the last deferral."""

    def to_list(self) -> list[Any]:
        return [self.attempts, self.final, self.code, self.enhanced, self.diagnostic]

    @classmethod
    def from_list(cls, data: list[Any]) -> Recipient:
        rcpt = cls()
        rcpt.attempts, rcpt.final, rcpt.code, rcpt.enhanced, rcpt.diagnostic = data
        return rcpt

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; times as ISO 8601 so that they come back to the microsecond."""
        return {
            "arrival": self.arrival.isoformat() if self.arrival else None,
            "client": self.client,
            "message_id": self.message_id,
            "sender": self.sender,
            "size": self.size,
            "tags": list(self.tags),
            "seen": self.seen.isoformat(),
            "rcpts": [[r, state.to_list()] for r, state in self.rcpts.items()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Queued:
        state = cls(datetime.fromisoformat(data["seen"]))
        arrival = data.get("arrival")
        state.arrival = datetime.fromisoformat(arrival) if arrival else None
        state.client, state.message_id = data.get("client"), data.get("message_id")
        state.sender, state.size = data.get("sender"), data.get("size")
        state.tags = tuple(data.get("tags") or ())
        state.rcpts = {r: Recipient.from_list(v) for r, v in data.get("rcpts") or ()}
        return state

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
        # What changed since the last checkpoint (see changes()), so that a follower can
        # store exactly the state that goes with the lines it has committed.  Off until
        # asked for: a one-shot ingest never drains them and they would only grow.
        self.tracking = False
        self._dirty: set[Key] = set()
        self._gone: set[Key] = set()

    def __len__(self) -> int:
        return len(self._queues)

    def touch(self, host: str, instance: str, qid: str, moment: datetime) -> Queued:
        """The state of a queue id seen at ``moment``, made when new."""
        key = (host, instance, qid)
        queues = self._queues
        state = queues.get(key)
        if self.tracking:
            self._dirty.add(key)
        if state is not None:
            queues.move_to_end(key)
            state.seen = moment
            return state
        self._gone.discard(key)
        state = queues[key] = Queued(moment)
        if len(queues) > self._max:
            self._forget(queues.popitem(last=False)[0])
        if moment is not self._aged_at:  # once per distinct timestamp is enough
            self._aged_at = moment
            horizon = moment - self._max_age
            while next(iter(queues.values())).seen < horizon:
                self._forget(queues.popitem(last=False)[0])
        return state

    def _forget(self, key: Key) -> None:
        if self.tracking:
            self._dirty.discard(key)
            self._gone.add(key)

    def drop(self, host: str, instance: str, qid: str) -> Queued | None:
        """Forget a queue id (``removed``, or refused whole); its state if it had one."""
        key = (host, instance, qid)
        state = self._queues.pop(key, None)
        if state is not None:
            self._forget(key)
        return state

    def changes(self) -> tuple[dict[Key, Queued], set[Key]]:
        """Queue ids touched and forgotten since the last call (the call resets both).

        The first call starts the tracking; it reports nothing from before it.
        """
        self.tracking = True
        touched = {k: self._queues[k] for k in self._dirty if k in self._queues}
        gone = self._gone
        self._dirty, self._gone = set(), set()
        return touched, gone

    def restore(self, saved: dict[Key, Queued]) -> None:
        """Put back state saved by a previous run, least recently seen first."""
        for key, state in sorted(saved.items(), key=lambda kv: kv[1].seen):
            self._queues[key] = state


class StatefulParser:
    """Checkpointing of the queue table, for parsers that keep one in ``_queues``.

    A follower stores :meth:`state_changes` with the events of the lines it has read
    and hands the stored state to :meth:`restore_state` after a restart, so that a
    message whose first lines were read before a crash is still known after it.
    """

    _queues: QueueTable

    def state_changes(self) -> dict[str, dict[str, Any] | None]:
        """Per queue id (``host\x1finstance\x1fqid``): its new state, or None when gone."""
        touched, gone = self._queues.changes()
        out: dict[str, dict[str, Any] | None] = {"\x1f".join(k): None for k in gone}
        out.update({"\x1f".join(k): state.to_dict() for k, state in touched.items()})
        return out

    def restore_state(self, saved: dict[str, dict[str, Any]]) -> None:
        restored: dict[Key, Queued] = {}
        for key, value in saved.items():
            parts = key.split("\x1f")
            if len(parts) == 3:
                restored[(parts[0], parts[1], parts[2])] = Queued.from_dict(value)
        self._queues.restore(restored)
