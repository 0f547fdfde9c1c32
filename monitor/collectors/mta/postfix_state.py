"""What the Postfix and Exim parsers remember per queue id, bounded in count and in event time.

A queue id is remembered from its first line until ``removed``.  Lines lost to log
rotation, a parser started mid-way or a crashed Postfix would otherwise keep state
forever, so :class:`QueueTable` also drops the least recently seen ids beyond a count,
and ids not seen for a while of *log* time (replaying a month of logs ages them the same
as following them live).

Rotated logs are not always read in order (``mailmon ingest postfix mail.log
mail.log.1.gz``, or the older file in a later command), so a message's later lines can
come before its first ones.  A state whose first line was not the message's first
(``client=``, ``uid=``, Exim's ``<=``) is *unborn*: it keeps its lines and the ids of
the events it made.  When the message's first line comes later, the unborn state is set
aside as an *orphan*; once the earlier lines are read, :meth:`QueueTable.joinable` hands
the orphans back so that the parser replays their lines after them and the store
replaces the events made without them.  A *joined* record then remembers the state the
replay started from, so that reading the later lines again makes the same events.
"""

from __future__ import annotations

import collections
from datetime import datetime, timedelta
from typing import Any

__all__ = ["QueueTable", "Queued", "Recipient"]

Key = tuple[str, str, str]  # (host, Postfix instance, queue id)

#: Orphans and joined records are kept this many times longer (in log time) than queue ids.
ASIDE_AGE_FACTOR = 4

# Parts of the state kept apart from the queue ids in flight, by the end of their key.
_ORPHAN = "orphan"
_JOINED = "joined"


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

    __slots__ = (
        "arrival", "client", "emitted", "first", "lines", "message_id", "rcpts", "seen",
        "sender", "size", "tags",
    )  # fmt: skip

    def __init__(self, seen: datetime) -> None:
        self.arrival: datetime | None = None  # the earliest line that saw it arrive
        self.client: str | None = None
        self.message_id: str | None = None
        self.sender: str | None = None
        self.size: int | None = None
        self.tags: tuple[str, ...] = ()
        self.seen = seen  # the latest line about it, for the age bound
        self.first = seen  # the earliest line about it
        self.rcpts: dict[str | None, Recipient] = {}
        # Unborn only (its first line was not the message's): its lines and event ids.
        self.lines: list[list[str | None]] | None = None
        self.emitted: list[str] | None = None

    @property
    def unborn(self) -> bool:
        return self.lines is not None

    def keep_lines(self) -> None:
        self.lines, self.emitted = [], []

    def born(self) -> None:
        """Its first line is known to have been read: stop keeping lines."""
        self.lines = self.emitted = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; times as ISO 8601 so that they come back to the microsecond."""
        data: dict[str, Any] = {
            "arrival": self.arrival.isoformat() if self.arrival else None,
            "client": self.client,
            "message_id": self.message_id,
            "sender": self.sender,
            "size": self.size,
            "tags": list(self.tags),
            "seen": self.seen.isoformat(),
            "first": self.first.isoformat(),
            "rcpts": [[r, state.to_list()] for r, state in self.rcpts.items()],
        }
        if self.lines is not None:
            data["lines"], data["emitted"] = self.lines, self.emitted
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Queued:
        state = cls(datetime.fromisoformat(data["seen"]))
        arrival, first = data.get("arrival"), data.get("first")
        state.arrival = datetime.fromisoformat(arrival) if arrival else None
        state.first = datetime.fromisoformat(first) if first else state.seen
        state.client, state.message_id = data.get("client"), data.get("message_id")
        state.sender, state.size = data.get("sender"), data.get("size")
        state.tags = tuple(data.get("tags") or ())
        state.rcpts = {r: Recipient.from_list(v) for r, v in data.get("rcpts") or ()}
        if data.get("lines") is not None:  # states saved before unborn ones count as born
            state.lines = [list(pair) for pair in data["lines"]]
            state.emitted = list(data.get("emitted") or ())
        return state

    def arrived(self, moment: datetime) -> None:
        if self.arrival is None or moment < self.arrival:
            self.arrival = moment


_Aside = collections.OrderedDict[Key, Queued]  # orphans or joined records, oldest first


def _put(aside: _Aside, key: Key, state: Queued, limit: int) -> None:
    """Remember ``state`` as the most recently seen, bounded like the queue ids."""
    aside[key] = state
    aside.move_to_end(key)
    while len(aside) > limit:
        aside.popitem(last=False)


def _expire(aside: _Aside, horizon: datetime) -> list[Key]:
    """Forget the records last seen before ``horizon``; their keys."""
    gone = []
    while aside and next(iter(aside.values())).seen < horizon:
        gone.append(aside.popitem(last=False)[0])
    return gone


class QueueTable:
    """Queue ids -> :class:`Queued`, least recently seen first, bounded."""

    def __init__(self, max_queue_ids: int, max_age_seconds: float) -> None:
        self._queues: collections.OrderedDict[Key, Queued] = collections.OrderedDict()
        self._max = max(1, max_queue_ids)
        self._max_aside = max(1, self._max // 4)
        self._max_age = timedelta(seconds=max_age_seconds)
        # Orphans wait for a file read later with older lines: the newest file may span a
        # week or more (Debian rotates mail.log weekly and keeps 4), so they age slower.
        self._aside_age = self._max_age * ASIDE_AGE_FACTOR
        self._aged_at: datetime | None = None
        self._orphans: _Aside = collections.OrderedDict()
        self._joined: _Aside = collections.OrderedDict()
        self.get = self._queues.get
        #: The unborn state the current line touched (the parser keeps the line in it).
        self.unborn: Queued | None = None
        # What changed since the last checkpoint (see changes()), so that a caller can
        # store exactly the state that goes with the lines it has committed.  Off until
        # asked for: a caller that never drains them would only see them grow.
        self.tracking = False
        self._dirty: set[tuple[str, ...]] = set()
        self._saved: set[tuple[str, ...]] = set()  # keys the caller holds: gone ones it deletes
        #: Whether a line read (or the state restored) held a NUL: events made from this
        #: state may hold one too (see ``PostfixParser.nul_free``).
        self.nul = False

    def __len__(self) -> int:
        return len(self._queues)

    def touch(
        self, host: str, instance: str, qid: str, moment: datetime, birth: bool = False
    ) -> Queued:
        """The state of a queue id seen at ``moment``, made when new.

        ``birth``: the line is the message's first (a state found then belongs to an
        earlier message, or, when unborn, to this one's later lines read first).
        """
        key = (host, instance, qid)
        queues = self._queues
        state = queues.get(key)
        if self.tracking:
            self._dirty.add(key)
        if state is not None:
            if birth:
                del queues[key]
                if state.lines is not None:
                    self._set_aside(key, state)
            else:
                queues.move_to_end(key)
                state.seen = moment
                if state.lines is not None:
                    self.unborn = state
                return state
        state = queues[key] = self._joined_state(key, moment, birth)
        if len(queues) > self._max:
            self._mark(queues.popitem(last=False)[0])
        if moment is not self._aged_at:  # once per distinct timestamp is enough
            self._aged_at = moment
            horizon = moment - self._max_age
            while next(iter(queues.values())).seen < horizon:
                self._mark(queues.popitem(last=False)[0])
            for aside, part in ((self._orphans, _ORPHAN), (self._joined, _JOINED)):
                if aside:
                    for k in _expire(aside, moment - self._aside_age):
                        self._mark((*k, part))
        return state

    def _joined_state(self, key: Key, moment: datetime, birth: bool) -> Queued:
        joined = None if birth else self._joined.get(key)
        if joined is not None and joined.seen <= moment:
            # The later lines of a message joined before, read again: go on from where
            # the first replay of them started, so that they make the same events.
            state = Queued.from_dict(joined.to_dict())
            state.seen = moment
            if state.lines is not None:
                self.unborn = state
            return state
        state = Queued(moment)
        if not birth:
            state.keep_lines()
            self.unborn = state
        return state

    def starts(self, host: str, instance: str, qid: str, moment: datetime) -> None:
        """A line that may be a message's first (Postfix's ``message-id=``) came at ``moment``:
        an unborn state without a Message-ID whose lines all came later is set aside.

        Strictly later: syslog may write a message's ``message-id=`` and ``from=`` lines
        of one second in either order.
        """
        key = (host, instance, qid)
        state = self._queues.get(key)
        if (
            state is not None
            and state.lines is not None
            and state.message_id is None
            and moment < state.first
        ):
            del self._queues[key]
            self._set_aside(key, state)

    def drop(self, host: str, instance: str, qid: str, moment: datetime) -> Queued:
        """Forget a queue id (``removed``, or refused whole); its state (empty when new).

        An unborn state (or none: the message's earlier lines were not read) is kept as
        an orphan, in case they come later.
        """
        key = (host, instance, qid)
        state = self._queues.pop(key, None)
        if self.tracking:
            if key in self._saved:
                self._dirty.add(key)
            else:  # never stored, nothing to delete: a long ingest's set stays small
                self._dirty.discard(key)
        if state is None:
            state = Queued(moment)
            state.keep_lines()
        if state.lines is not None:
            state.seen = max(state.seen, moment)
            self.unborn = state
            self._set_aside(key, state)
        return state

    def has_unborn(self) -> bool:
        """Whether the line just handled touched an unborn state (see :meth:`record`)."""
        return self.unborn is not None

    def record(self, line: str, ref: str | None, result: object) -> None:
        """Keep ``line`` (and the ids of the events it made) in the unborn state it touched."""
        state, self.unborn = self.unborn, None
        if state is None or state.lines is None or state.emitted is None:
            return
        state.lines.append([line, ref])
        if isinstance(result, list):
            state.emitted.extend(e.id for e in result)

    def _set_aside(self, key: Key, state: Queued) -> None:
        earlier = self._orphans.get(key)
        if earlier is not None and earlier.lines is not None and state.lines is not None:
            # Two runs of later lines (three parts of one log): keep them in log order.
            first, last = (earlier, state) if earlier.first <= state.first else (state, earlier)
            first.lines = [*(first.lines or ()), *(last.lines or ())]
            first.emitted = [*(first.emitted or ()), *(last.emitted or ())]
            first.seen = max(first.seen, last.seen)
            state = first
        _put(self._orphans, key, state, self._max_aside)
        self._mark((*key, _ORPHAN))

    def born(self, state: Queued) -> None:
        """``state`` is known to start at the message's first line."""
        state.born()
        if self.unborn is state:
            self.unborn = None

    def joinable(self) -> list[Queued]:
        """Orphans whose message's earlier lines have now been read, taken out of the table.

        The earlier lines' state is in flight and none of its lines is later than the
        orphan's first: the orphan's lines go on after them.  A copy of that state is
        kept as the *joined* record.
        """
        ready = []
        for key, orphan in list(self._orphans.items()):
            state = self._queues.get(key)
            if state is None or state is orphan or state.seen > orphan.first:
                continue
            del self._orphans[key]
            self._mark((*key, _ORPHAN))
            record = Queued.from_dict(state.to_dict())
            record.seen = state.seen
            _put(self._joined, key, record, self._max_aside)
            self._mark((*key, _JOINED))
            ready.append(orphan)
        return ready

    def _mark(self, key: tuple[str, ...]) -> None:
        if self.tracking:
            self._dirty.add(key)

    def _lookup(self, key: tuple[str, ...]) -> Queued | None:
        if len(key) == 3:
            return self._queues.get(key)
        aside = self._orphans if key[3] == _ORPHAN else self._joined
        return aside.get(key[:3])  # type: ignore[arg-type]

    def changes(self) -> dict[str, dict[str, Any] | None]:
        """Per key (``host\x1finstance\x1fqid``, then ``\x1forphan`` or ``\x1fjoined`` for
        the states kept apart): what changed since the last call, None when gone.

        The first call starts the tracking; it reports nothing from before it.
        """
        self.tracking = True
        out: dict[str, dict[str, Any] | None] = {}
        saved = self._saved
        for key in self._dirty:
            state = self._lookup(key)
            if state is not None:
                out["\x1f".join(key)] = state.to_dict()
                saved.add(key)
            elif key in saved:  # never stored: nothing to delete
                saved.discard(key)
                out["\x1f".join(key)] = None
        self._dirty = set()
        return out

    def restore(self, saved: dict[str, dict[str, Any]], *, changed: bool = False) -> None:
        """Put back state saved by a previous run, least recently seen first.

        ``changed``: report it with the next changes (state kept under other keys before).
        """
        # repr() spells a NUL \\x00 (a text spelling it out itself costs a scan, no harm)
        if any("\x00" in key or "\\x00" in repr(value) for key, value in saved.items()):
            self.nul = True
        parts: list[tuple[tuple[str, ...], Queued]] = []
        for text, value in saved.items():
            key = tuple(text.split("\x1f"))
            if len(key) == 3 or (len(key) == 4 and key[3] in (_ORPHAN, _JOINED)):
                parts.append((key, Queued.from_dict(value)))
                (self._dirty if changed else self._saved).add(key)
        for key, state in sorted(parts, key=lambda kv: kv[1].seen):
            if len(key) == 3:
                self._queues[key] = state
            else:
                aside = self._orphans if key[3] == _ORPHAN else self._joined
                _put(aside, key[:3], state, self._max_aside)  # type: ignore[arg-type]
