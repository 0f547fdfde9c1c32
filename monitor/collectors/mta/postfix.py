"""Postfix log lines -> Events, correlating each queue id's lines.

One message moves through several daemons, each logging one line keyed by the queue id::

    smtpd   QID: client=mail.example.com[192.0.2.1]       (or pickup: QID: uid=0 from=<x>)
    cleanup QID: message-id=<id@example.com>
    qmgr    QID: from=<s@example.com>, size=1234, nrcpt=1 (queue active)
    smtp    QID: to=<r@example.net>, relay=..., delay=1.2, dsn=2.0.0, status=sent (250 ...)
    qmgr    QID: removed

The parser remembers what each queue id said (per host and Postfix instance) until
``removed``, within a bound on count and age in event time, and turns delivery, expiry
and reject lines into Events: ``submitted`` (once per recipient, at the arrival time)
then ``delivered`` / ``deferred`` / ``bounced`` / ``expired``, or ``rejected``.
Use :class:`PostfixParser` for a stream, :func:`parse` for an iterable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, tzinfo
from typing import Any

from monitor.collectors.mta.base import (
    IGNORED,
    MAX_LINE_CHARS,
    NDR,
    TRACKED,
    UNPARSED,
    ParseStats,
    QueueParser,
    events_of,
)
from monitor.collectors.mta.postfix_lines import (
    CLIENT_LINE,
    MESSAGE_ID_LINE,
    QUEUED_LINE,
    Status,
    clean_message_id,
    parse_reject,
    parse_status_line,
    reply_of,
    split_queue_id,
)
from monitor.collectors.mta.postfix_rules import (
    ANY_NOISE,
    CLIENT_NOISE,
    DELIVERY_AGENTS,
    MESSAGE_STAGES,
    NOTIFICATIONS,
    QUIET_ACTIONS,
    QUIET_DAEMONS,
    REFUSALS,
    SERVER_NOISE,
)
from monitor.collectors.mta.postfix_state import QueueTable, Recipient
from monitor.collectors.syslog import SyslogFramer
from monitor.model import Event, EventType

__all__ = ["MAX_LINE_CHARS", "ParseStats", "PostfixParser", "parse"]

_DEFERRED = EventType.DEFERRED
_OUTCOMES = {
    "sent": EventType.DELIVERED,
    "deferred": _DEFERRED,
    "SOFTBOUNCE": _DEFERRED,  # soft_bounce=yes turns would-be bounces into deferrals
    "bounced": EventType.BOUNCED,
    "expired": EventType.EXPIRED,
}


_Handler = Callable[[datetime, str, str, str, "str | None"], "list[Event] | int"]
_Head = tuple[datetime, str, _Handler, str, str]  # time, host, handler, instance, daemon
_MAX_HEADS = 4096


class _NoHeads(dict[str, _Head]):
    """A header cache that stays empty (for logs whose headers never repeat)."""

    def __setitem__(self, key: str, value: _Head) -> None:
        pass


class PostfixParser(QueueParser):
    """Turns Postfix log lines into Events, one line at a time.

    >>> parser = PostfixParser(reference_time=datetime(2024, 3, 10, tzinfo=UTC))
    >>> parser.feed("Mar  4 10:00:00 mx postfix/smtpd[7]: NOQUEUE: reject: RCPT from "
    ...     "c[192.0.2.1]: 554 5.7.1 <a@b.c>: Relay access denied; from=<s@x.y> to=<a@b.c>")[0].type
    <EventType.REJECTED: 'rejected'>
    """

    kind = "postfix"

    def __init__(
        self,
        source_prefix: str = "postfix",
        *,
        reference_time: datetime | None = None,
        tz: str | tzinfo | None = None,
        max_queue_ids: int = 200_000,
        max_age_seconds: float = 7 * 86400,
        queues: QueueTable | None = None,
        state_prefix: str | None = None,
    ) -> None:
        super().__init__(source_prefix, max_queue_ids, max_age_seconds, queues, state_prefix)
        self._fields = SyslogFramer(reference_time=reference_time, tz=tz).fields
        self._queue = self._queues.touch
        # program -> (handler, instance, daemon); header text -> (time, host, handler, ...).
        self._programs: dict[str, tuple[_Handler, str, str]] = {}
        self._heads: dict[str, _Head] = {}
        self._lines_at_clear = 0
        self._handlers: dict[str, _Handler] = {
            "smtpd": self._smtpd,
            "cleanup": self._cleanup,
            "qmgr": self._qmgr,
            "oqmgr": self._qmgr,
            "pickup": self._pickup,
            "bounce": self._bounce,
            "defer": self._bounce,
            "trace": self._bounce,
            "postsuper": self._postsuper,
            "postscreen": self._postscreen,
        }

    def feed(self, line: str, ref: str | None = None) -> list[Event]:
        """The Events ``line`` completes (often none); never raises."""
        stats = self.stats
        stats.lines += 1
        daemon = "<framing>"
        try:
            if len(line) > MAX_LINE_CHARS:
                return self._oversized(line)
            if "\x00" in line:
                self._queues.nul = True
            # Most lines repeat the header ("time host prog[pid]: ") of an earlier one:
            # then framing and dispatch are one dict lookup.
            end = line.find("]: ", 16, 300) + 3
            head = self._heads.get(line[:end]) if end > 3 else None
            if head is None:
                framed = self._frame(line, end)
                if framed is None:
                    stats.unparsed[daemon] += 1
                    return []
                head, message = framed
            else:
                message = line[end:]
                if message[-1:] in ("\n", "\r"):
                    message = message.rstrip("\r\n")
            moment, host, handler, instance, daemon = head
            queues = self._queues
            queues.unborn = None
            result = handler(moment, host, instance, message, ref)
            # Asked of the table, not read here: compiled (monitor.native), this function
            # would take the attribute for the None it set above.
            if queues.has_unborn():  # a message whose first line was not read (yet)
                queues.record(line, ref, result)
        except Exception:  # a bug or hostile input must not stop ingestion: count it
            stats.unparsed[daemon] += 1
            return []
        if result.__class__ is list:
            stats.events += len(result)
            return result
        if result == TRACKED:
            stats.tracked += 1
        elif result == IGNORED:
            stats.ignored += 1
        else:
            stats.unparsed[daemon] += 1
        return []

    @property
    def nul_free(self) -> bool:
        # Event text comes from the lines and the queue-id state (restored, or shared with
        # the parsers of the writer's other files): the table remembers a NUL in either.
        return not self._queues.nul

    def _frame(self, line: str, end: int) -> tuple[_Head, str] | None:
        """Frame a line whose header is not cached; cache the header when it can repeat."""
        fields = self._fields(line)
        if fields is None:
            return None
        moment, host, program, _, message, header = fields
        try:
            known = self._programs[program]
        except KeyError:
            known = self._program(program)
        head = (moment, host, *known)
        if header == end:
            heads = self._heads
            if len(heads) >= _MAX_HEADS:
                # Microsecond timestamps never repeat a header: when fewer than half the
                # lines since the last clearing hit, stop trying.
                if self.stats.lines - self._lines_at_clear < 2 * _MAX_HEADS:
                    self._heads = _NoHeads()
                heads.clear()
                self._lines_at_clear = self.stats.lines
            self._heads[line[:end]] = head
        return head, message

    def _oversized(self, line: str) -> list[Event]:
        fields = self._fields(line[:1024])
        daemon = "<framing>" if fields is None else fields[2].rpartition("/")[2]
        self.stats.unparsed[daemon] += 1
        return []

    def _program(self, program: str) -> tuple[_Handler, str, str]:
        # "postfix/smtp", "postfix-out/smtp", "postfix/submission/smtpd": the first part is
        # the instance (syslog_name), the last the daemon.
        instance = program.partition("/")[0]
        daemon = program.rpartition("/")[2]
        handler: _Handler
        if not instance.startswith("postfix"):
            handler = self._foreign  # another program writing to the same log
        else:
            handler = self._handlers.get(daemon) or (
                self._delivery
                if daemon in DELIVERY_AGENTS
                else self._quiet
                if daemon in QUIET_DAEMONS
                else self._other
            )
        known = (handler, instance, daemon)
        if len(self._programs) < 1024:  # junk lines must not grow the cache without bound
            self._programs[program] = known
        return known

    # -- one handler per daemon: (moment, host, instance, message, ref) -> Events | code --

    def _smtpd(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        m = CLIENT_LINE.match(message)
        if m is not None:  # the first line of a message received over SMTP
            state = self._queue(host, instance, m.group(1), moment, True)
            state.arrived(moment)
            state.client = m.group(2)
            return TRACKED
        qid, body = split_queue_id(message)
        if body.startswith(SERVER_NOISE) or body.startswith(ANY_NOISE):
            return IGNORED
        return self._action(moment, host, instance, qid, body, ref, UNPARSED)

    def _postscreen(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        qid, body = split_queue_id(message)
        if qid is None:  # CONNECT, PASS, DNSBL rank, HANGUP, ...
            return IGNORED
        return self._action(moment, host, instance, qid, body, ref, IGNORED)

    def _cleanup(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        m = MESSAGE_ID_LINE.match(message)
        if m is not None:
            # The first line of a notice Postfix made itself, the second of other mail.
            self._queues.starts(host, instance, m.group(1), moment)
            state = self._queue(host, instance, m.group(1), moment)
            state.arrived(moment)
            state.message_id = clean_message_id(m.group(2))
            return TRACKED
        qid, body = split_queue_id(message)
        if body.startswith(ANY_NOISE) or body.startswith("resent-message-id="):
            return IGNORED
        return self._action(moment, host, instance, qid, body, ref, UNPARSED)

    def _pickup(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        qid, body = split_queue_id(message)
        if qid is None or not body.startswith("uid="):
            return IGNORED if body.startswith(ANY_NOISE) else UNPARSED
        state = self._queue(host, instance, qid, moment, True)  # the first line of local mail
        state.arrived(moment)
        state.client = "local"  # sendmail(1) on this host, not an SMTP client
        start = body.find("from=<")
        if start >= 0 and state.sender is None:
            state.sender = body[start + 6 : body.find(">", start)]
        return TRACKED

    def _qmgr(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        if message.endswith(": removed") and message[:-9].isalnum():
            self._queues.drop(host, instance, message[:-9], moment)
            return TRACKED
        m = QUEUED_LINE.match(message)
        if m is not None:
            qid, sender, size = m.groups()
            return self._queued(moment, host, instance, qid, sender, int(size))
        qid, body = split_queue_id(message)
        if qid is None:
            return IGNORED if body.startswith(ANY_NOISE) else UNPARSED
        if body.startswith("from="):
            if ", status=" in body:  # status=expired or force-expired, returned to sender
                return self._expired(moment, host, instance, qid, body, ref)
            # An unusual shape of "from=<s>, size=N, nrcpt=M (queue active)".
            end = body.find(">, ")
            size = body.find(", size=")
            if end < 0 or size < 0:
                return UNPARSED
            digits = body[size + 7 :].partition(",")[0]
            sender = body[6:end]
            return self._queued(
                moment, host, instance, qid, sender, int(digits) if digits.isdigit() else None
            )
        if body.startswith("skipped, still being delivered") or body.startswith(ANY_NOISE):
            return IGNORED
        return UNPARSED

    def _queued(
        self,
        moment: datetime,
        host: str,
        instance: str,
        qid: str,
        sender: str | None,
        size: int | None,
    ) -> int:
        state = self._queue(host, instance, qid, moment)
        state.arrived(moment)
        if sender is not None:
            state.sender = sender
            if not sender:  # from=<>: a bounce or notice Postfix itself sends
                state.tags = NDR
        if size is not None:
            state.size = size
        return TRACKED

    def _postsuper(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        qid, body = split_queue_id(message)
        if qid is not None and body in ("removed", "expired"):
            self._queues.drop(host, instance, qid, moment)
            return TRACKED
        return IGNORED  # requeued, placed on hold, "Deleted: 3 messages", ...

    def _bounce(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        qid, body = split_queue_id(message)
        if qid is not None and body.startswith(NOTIFICATIONS):
            notice = body.rpartition(": ")[2].strip()
            if notice.isalnum():
                # The notice is our own mail: its deliveries are tagged, not mixed with users'.
                state = self._queue(host, instance, notice, moment)
                state.tags = NDR
                if state.message_id is not None:  # its message-id= line was its first
                    self._queues.born(state)
                return TRACKED
        return IGNORED if body.startswith(ANY_NOISE) else UNPARSED

    def _quiet(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        return IGNORED

    def _foreign(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        return IGNORED  # another program writing to the same log

    def _other(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        body = split_queue_id(message)[1]
        return IGNORED if body.startswith(ANY_NOISE) else UNPARSED

    def _delivery(
        self, moment: datetime, host: str, instance: str, message: str, ref: str | None
    ) -> list[Event] | int:
        found = parse_status_line(message)
        if found is not None:
            return self._outcome(moment, host, instance, found[0], found[1], ref)
        body = split_queue_id(message)[1]
        if body.startswith(CLIENT_NOISE) or body.startswith(ANY_NOISE):
            return IGNORED
        return UNPARSED

    # -- events --------------------------------------------------------------------------

    def _outcome(
        self, moment: datetime, host: str, instance: str, qid: str, status: Status, ref: str | None
    ) -> list[Event] | int:
        recipient, orig, relay, delay, dsn, word, text = status
        kind = _OUTCOMES.get(word)
        if kind is None:
            # Address-verification probes (deliverable, undeliverable...) deliver nothing.
            return IGNORED if "deliverable" in word else UNPARSED
        state = self._queue(host, instance, qid, moment)
        source = self._sources.get(host) or self._source(host)
        events: list[Event] = []
        rcpt = state.rcpts.get(recipient)
        if rcpt is None:
            rcpt = self._first_seen(state, source, qid, recipient, orig, ref, events)
        if kind is _DEFERRED and text and text.startswith("delivery temporarily suspended"):
            # Not an attempt: Postfix skipped a destination it marked dead after failures.
            return events or IGNORED
        code, enhanced = reply_of(text)
        enhanced = dsn or enhanced  # Postfix's dsn= is what the sender's DSN will say
        rcpt.attempts += 1
        if kind is _DEFERRED:
            rcpt.code, rcpt.enhanced, rcpt.diagnostic = code, enhanced, text
        else:
            rcpt.final = True
        event = self._make.outcome(
            kind, moment, source, state, qid, recipient, orig, relay, code, enhanced, text, delay,
            rcpt.attempts, ref,
        )  # fmt: skip
        events.append(event)
        return events

    def _expired(
        self, moment: datetime, host: str, instance: str, qid: str, body: str, ref: str | None
    ) -> list[Event]:
        """``QID: from=<s>, status=expired, returned to sender``: every pending recipient."""
        state = self._queue(host, instance, qid, moment)
        if state.sender is None:
            state.sender = body[6 : body.find(">")]
            if not state.sender:
                state.tags = NDR
        pending = [(r, rcpt) for r, rcpt in state.rcpts.items() if not rcpt.final]
        if not pending:  # its deferrals were logged before this log began
            pending = [(None, Recipient())]
        source = self._source(host)
        for _, rcpt in pending:
            rcpt.final = True
        return [self._make.expired(moment, source, state, qid, r, rcpt, ref) for r, rcpt in pending]

    def _action(
        self,
        moment: datetime,
        host: str,
        instance: str,
        qid: str | None,
        body: str,
        ref: str | None,
        otherwise: int,
    ) -> list[Event] | int:
        """``[QID|NOQUEUE]: ACTION: ...`` lines: reject, milter-reject, hold, discard, ..."""
        action = body[: body.find(":")]
        if action in QUIET_ACTIONS:
            return IGNORED
        if action not in REFUSALS:
            return otherwise
        reject = parse_reject(body)
        if reject is None:
            return UNPARSED
        if reject.stage not in MESSAGE_STAGES:
            return IGNORED  # a refused connection, HELO or VRFY concerns no message
        state = None
        if qid == "NOQUEUE":
            qid = None
        elif qid is not None:
            if reject.stage in ("RCPT", "MAIL"):
                state = self._queues.get((host, instance, qid))
            else:  # the message is refused whole: no "removed" will follow
                state = self._queues.drop(host, instance, qid, moment)
        code, enhanced = reply_of(reject.text)
        source = self._source(host)
        sender, recipient, client, text = (
            reject.sender,
            reject.recipient,
            reject.client,
            reject.text,
        )
        return [
            self._make.rejected(
                moment, source, state, qid, sender, recipient, client, code, enhanced, text, ref
            )
        ]


def parse(lines: Iterable[str], source_prefix: str = "postfix", **kw: Any) -> Iterator[Event]:
    """The Events of ``lines`` in log order (keywords as for :class:`PostfixParser`)."""
    return events_of(PostfixParser(source_prefix, **kw).feed, lines)
