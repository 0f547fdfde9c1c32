"""Exim ``mainlog`` lines -> Events, correlating each message id's lines.

Exim writes one line per step of a message, keyed by its id (Exim specification, chapter
"Log files", "Log line flags")::

    2026-11-24 06:33:21.193 1xVk5h-0004AD-0c <= s@app.test H=(c) [127.0.0.1] S=400 id=m@app.test
    2026-11-24 06:33:21.213 1xVk5h-0004AD-0c => a@gmail.test R=r T=t H=mx [192.0.2.1] C="250 OK"
    2026-11-24 06:33:21.213 1xVk5h-0004AD-0c == b@gmail.test R=r T=t defer (-44) ...: 452 ...
    2026-11-24 06:34:27.357 1xVk5h-0004AD-0c ** b@gmail.test: retry timeout exceeded
    2026-11-24 06:34:27.365 1xVk5h-0004AD-0c Completed

``<=`` arrival, ``=>`` delivered (``->``: one more recipient of the same transaction,
``>>``: delivered by cutthrough), ``**`` failed, ``==`` deferred, ``*>`` a fake delivery
(``-N``), ``Completed`` the end of the message.  The parser remembers what ``<=`` said
until ``Completed``, within a bound on count and age in event time, and emits
``submitted`` (once per recipient, at the arrival time) then ``delivered`` /
``deferred`` / ``bounced`` / ``expired`` / ``dropped``, and ``rejected`` for recipients
refused during the SMTP dialogue.  ``== ... retry time not reached`` is not an attempt
and yields nothing.

Timestamps are ``2026-11-24 06:33:21``, with ``.867`` (``+millisec``), a ``+0200`` zone
(``log_timezone``) and ``[pid]`` (``+pid``) optional.  Lines that went through syslog
(``Mar  4 10:00:00 host exim[123]: ...``, with or without Exim's own timestamp after it)
are framed by :class:`~monitor.collectors.syslog.SyslogFramer`; the source is then
``exim:<syslog host>``, otherwise ``exim:local`` (the mainlog does not name its host).
Use :class:`EximParser` for a stream, :func:`parse` for an iterable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from monitor.collectors.mta.base import (
    IGNORED,
    MAX_LINE_CHARS,
    NDR,
    TRACKED,
    UNPARSED,
    QueueParser,
    events_of,
)
from monitor.collectors.mta.exim_lines import (
    GENERAL_NOISE,
    MESSAGE_NOISE,
    Delivery,
    parse_arrival,
    parse_delivery,
    parse_rejection,
    remote_reply,
    split_id,
)
from monitor.collectors.mta.postfix_lines import reply_of
from monitor.collectors.mta.postfix_state import Queued, QueueTable, Recipient
from monitor.collectors.syslog import SyslogFramer
from monitor.model import Event, EventType

__all__ = ["EximParser", "parse"]

# "2026-11-24 06:33:21[.867][ +0200][ [pid]] ", the header of every mainlog line.
_STAMP = re.compile(
    r"([0-9]{4})-([0-9][0-9])-([0-9][0-9]) ([0-9][0-9]):([0-9][0-9]):([0-9][0-9])"
    r"(?:[.]([0-9]{3,6}))?(?: ([+-])([0-9][0-9])([0-9][0-9]))?(?: \[[0-9]+\])?(?: |$)"
)
# "host exim[pid]: " (or exim4, exim-out, ...) where syslog's own timestamp was left off.
_PROGRAM = re.compile(r"([^ \[\]:]+) (exim[^ \[\]:]*)(?:\[[0-9]+\])?: ")
_PID = re.compile(r"\[[0-9]+\] ")

_INSTANCE = "exim"  # the QueueTable key's middle part (Postfix keys it by instance)
_LOCAL = "local"


class EximParser(QueueParser):
    """Turns Exim mainlog lines into Events, one line at a time.

    >>> parser = EximParser()
    >>> parser.feed("2026-11-24 06:33:21 H=(c) [192.0.2.1] F=<s@x.y> rejected RCPT "
    ...     "<a@b.c>: relay not permitted")[0].type
    <EventType.REJECTED: 'rejected'>
    """

    kind = "exim"

    def __init__(
        self,
        source_prefix: str = "exim",
        *,
        reference_time: datetime | None = None,
        tz: str | tzinfo | None = None,
        max_messages: int = 200_000,
        max_age_seconds: float = 7 * 86400,
        queues: QueueTable | None = None,
        state_prefix: str | None = None,
    ) -> None:
        super().__init__(source_prefix, max_messages, max_age_seconds, queues, state_prefix)
        if tz in (None, "UTC", "Etc/UTC"):
            tz = UTC
        self._tz: tzinfo = ZoneInfo(tz) if isinstance(tz, str) else tz
        self._syslog = SyslogFramer(reference_time=reference_time, tz=self._tz).fields
        self._last_stamp = ""
        self._last_time = datetime(1970, 1, 1, tzinfo=UTC)
        # Every delivery flag's line reads alike: parsed once, then handled by its flag.
        self._outcomes: dict[
            str, Callable[[datetime, str, str, Delivery, str | None], list[Event] | int]
        ] = {
            "=> ": self._delivered,
            "-> ": self._delivered,
            ">> ": self._delivered,
            "** ": self._failed,
            "== ": self._deferred,
        }
        self._flags = {"<= ", *self._outcomes}

    def feed(self, line: str, ref: str | None = None) -> list[Event]:
        """The Events ``line`` completes (often none); never raises."""
        stats = self.stats
        stats.lines += 1
        kind = "<framing>"
        try:
            if len(line) > MAX_LINE_CHARS:
                stats.unparsed["<oversized>"] += 1
                return []
            if line[-1:] in ("\n", "\r"):
                line = line.rstrip("\r\n")
            framed = self._frame(line)
            if framed is None:
                stats.unparsed[kind] += 1
                return []
            moment, host, body = framed
            if body is None:  # another program's line in a shared syslog file
                stats.ignored += 1
                return []
            qid, rest = split_id(body)
            if qid is None:
                kind = "general"
                result = self._general(moment, host, body, ref)
            else:
                kind = rest[:2] if rest[:3] in self._flags else "message"
                queues = self._queues
                queues.unborn = None
                result = self._message(moment, host, qid, rest, ref)
                # Asked of the table: compiled, the attribute would be taken for the None
                # set above (monitor.native).
                if queues.has_unborn():  # a message whose first line was not read (yet)
                    queues.record(line, ref, result)
        except Exception:  # a bug or hostile input must not stop ingestion: count it
            stats.unparsed[kind] += 1
            return []
        if result.__class__ is list:
            stats.events += len(result)
            return result
        if result == TRACKED:
            stats.tracked += 1
        elif result == IGNORED:
            stats.ignored += 1
        else:
            stats.unparsed[kind] += 1
        return []

    # -- framing ---------------------------------------------------------------------------

    def _frame(self, line: str) -> tuple[datetime, str, str | None] | None:
        """(time, host, Exim text) of a line; the text is None for other programs' lines."""
        if line[:1].isdigit():
            m = _STAMP.match(line)
            if m is not None:
                moment = self._stamp(m)
                if moment is None:
                    return None
                body = line[m.end() :]
                host = _LOCAL
                if " exim" in body[:160]:  # "2016-04-01 11:08:00 host exim[8003]: [8003] ..."
                    p = _PROGRAM.match(body)
                    if p is not None:
                        host, body = p.group(1), self._strip_pid(body[p.end() :])
                return moment, host, body
        fields = self._syslog(line)
        if fields is not None:
            moment, host, program, _, body, _ = fields
            if not program.startswith("exim"):
                return moment, host, None
            inner = self._inner(body)
            return (inner[0], host, inner[1]) if inner is not None else (moment, host, body)
        p = _PROGRAM.match(line)  # "host exim[pid]: 2021-07-17 23:20:49 ...": no syslog time
        if p is None:
            return None
        inner = self._inner(line[p.end() :])
        return None if inner is None else (inner[0], p.group(1), inner[1])

    def _inner(self, body: str) -> tuple[datetime, str] | None:
        """Exim's own timestamp (and pid) at the start of a syslog message, if it has one."""
        m = _STAMP.match(body) if body[:1].isdigit() else None
        if m is None:
            return None
        moment = self._stamp(m)
        return None if moment is None else (moment, self._strip_pid(body[m.end() :]))

    @staticmethod
    def _strip_pid(body: str) -> str:
        if body[:1] == "[":
            p = _PID.match(body)
            if p is not None:
                return body[p.end() :]
        return body

    def _stamp(self, m: re.Match[str]) -> datetime | None:
        text = m.group(0)
        end = text.find(" [")
        if end > 0:
            text = text[:end]  # the pid does not change the time
        if text == self._last_stamp:
            return self._last_time
        year, month, day, hour, minute, second, fraction, sign, zh, zm = m.groups()
        zone: tzinfo = self._tz
        if sign is not None:
            offset = timedelta(hours=int(zh), minutes=int(zm))
            zone = timezone(-offset if sign == "-" else offset)
        try:
            moment = datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second),
                int(fraction.ljust(6, "0")) if fraction else 0, tzinfo=zone,
            )  # fmt: skip
        except ValueError:  # 2026-02-30, 25:00:00
            return None
        if zone is not UTC:
            moment = moment.astimezone(UTC)
        self._last_stamp, self._last_time = text, moment
        return moment

    # -- lines -----------------------------------------------------------------------------

    def _message(
        self, moment: datetime, host: str, qid: str, rest: str, ref: str | None
    ) -> list[Event] | int:
        outcome = self._outcomes.get(rest[:3])
        if outcome is not None:
            delivery = parse_delivery(rest[3:])
            return UNPARSED if delivery is None else outcome(moment, host, qid, delivery, ref)
        if rest[:3] == "<= ":
            return self._arrival(moment, host, qid, rest[3:], ref)
        if rest == "Completed" or rest.startswith("removed by "):
            self._queues.drop(host, _INSTANCE, qid, moment)
            return TRACKED
        if " rejected RCPT " in rest:
            return self._rejected(moment, host, qid, rest, ref)
        if rest.startswith(MESSAGE_NOISE) or rest.endswith(": error ignored"):
            return IGNORED
        return UNPARSED

    def _general(
        self, moment: datetime, host: str, body: str, ref: str | None
    ) -> list[Event] | int:
        if "rejected RCPT " in body:
            return self._rejected(moment, host, None, body, ref)
        if body.startswith(GENERAL_NOISE) or " authenticator failed for " in body[:80]:
            return IGNORED
        return UNPARSED

    def _arrival(
        self, moment: datetime, host: str, qid: str, rest: str, ref: str | None
    ) -> list[Event] | int:
        arrival = parse_arrival(rest)
        # The message's first line: a state found is a stale one (an id is never reused)
        # or, unborn, this message's later lines read first.
        state = self._queues.touch(host, _INSTANCE, qid, moment, True)
        state.arrived(moment)
        state.sender = arrival.sender
        state.size = arrival.size
        state.message_id = arrival.message_id
        state.client = arrival.client
        if not arrival.sender:  # <= <>: a bounce or notice Exim itself sends
            state.tags = NDR
        return TRACKED

    def _state(self, host: str, qid: str, moment: datetime) -> Queued:
        return self._queues.touch(host, _INSTANCE, qid, moment)

    def _recipient(
        self,
        moment: datetime,
        host: str,
        qid: str,
        delivery: Delivery,
        ref: str | None,
        events: list[Event],
    ) -> tuple[Queued, Recipient, str]:
        """The message's and recipient's state; ``submitted`` the first time it is seen."""
        state = self._state(host, qid, moment)
        if state.sender is None and delivery.sender is not None:
            state.sender = delivery.sender
        source = self._source(host)
        recipient = delivery.recipient
        rcpt = state.rcpts.get(recipient)
        if rcpt is None:
            rcpt = self._first_seen(
                state, source, qid, recipient, delivery.orig_recipient, ref, events
            )
        return state, rcpt, source

    def _attempt(
        self,
        kind: EventType,
        moment: datetime,
        host: str,
        qid: str,
        delivery: Delivery,
        code: int | None,
        enhanced: str | None,
        text: str | None,
        ref: str | None,
    ) -> list[Event]:
        """One delivery attempt's event, after ``submitted`` if the recipient is new.

        A deferral is remembered: it says why, should Exim give up on the address later.
        """
        events: list[Event] = []
        state, rcpt, source = self._recipient(moment, host, qid, delivery, ref, events)
        rcpt.attempts += 1
        if kind is EventType.DEFERRED:
            rcpt.code, rcpt.enhanced, rcpt.diagnostic = code, enhanced, text
        else:
            rcpt.final = True
        events.append(self._make.outcome(
            kind, moment, source, state, qid, delivery.recipient, delivery.orig_recipient,
            delivery.relay, code, enhanced, text, delivery.delay, rcpt.attempts, ref,
        ))  # fmt: skip
        return events

    def _delivered(
        self, moment: datetime, host: str, qid: str, delivery: Delivery, ref: str | None
    ) -> list[Event] | int:
        kind = EventType.DROPPED if delivery.blackhole else EventType.DELIVERED
        text = delivery.confirmation
        code, enhanced = reply_of(text)
        return self._attempt(kind, moment, host, qid, delivery, code, enhanced, text, ref)

    def _deferred(
        self, moment: datetime, host: str, qid: str, delivery: Delivery, ref: str | None
    ) -> list[Event] | int:
        text = delivery.text
        if text is not None and "retry time not" in text.lower():
            # Not an attempt: Exim skipped the address because its retry time has not come.
            return IGNORED
        code, enhanced = remote_reply(text)
        return self._attempt(
            EventType.DEFERRED, moment, host, qid, delivery, code, enhanced, text, ref
        )

    def _failed(
        self, moment: datetime, host: str, qid: str, delivery: Delivery, ref: str | None
    ) -> list[Event] | int:
        text = delivery.text
        if not _gave_up(text or ""):
            code, enhanced = remote_reply(text)
            return self._attempt(
                EventType.BOUNCED, moment, host, qid, delivery, code, enhanced, text or None, ref
            )
        # Exim stopped retrying: the last deferral says why (as Postfix's expiry does).
        events: list[Event] = []
        state, rcpt, source = self._recipient(moment, host, qid, delivery, ref, events)
        rcpt.final = True
        events.append(self._make.expired(moment, source, state, qid, delivery.recipient, rcpt, ref))
        return events

    def _rejected(
        self, moment: datetime, host: str, qid: str | None, body: str, ref: str | None
    ) -> list[Event] | int:
        rejection = parse_rejection(body)
        if rejection is None:
            return UNPARSED
        if rejection.recipient is None:
            return IGNORED
        code, enhanced = remote_reply(rejection.text)
        state = self._queues.get((host, _INSTANCE, qid)) if qid is not None else None
        return [
            self._make.rejected(
                moment,
                self._source(host),
                state,
                qid,
                rejection.sender,
                rejection.recipient,
                rejection.client,
                code,
                enhanced,
                rejection.text,
                ref,
            )
        ]


def _gave_up(text: str) -> bool:
    """Whether a ``**`` text says Exim's retry rules gave up, rather than the remote refused."""
    return (
        text.startswith("retry timeout exceeded")
        or "retry time not reached for any host after a long failure period" in text
        or "have been failing for a long time" in text
    )


def parse(lines: Iterable[str], source_prefix: str = "exim", **kw: Any) -> Iterator[Event]:
    """The Events of ``lines`` in log order (keywords as for :class:`EximParser`)."""
    return events_of(EximParser(source_prefix, **kw).feed, lines)
