"""Syslog framing: split one log line into time, host, program, pid and message.

Accepted shapes (the first character picks the pattern, so a line costs one match):

- BSD / RFC 3164 ``Mar  4 10:00:00 host prog[pid]: msg`` (``Mar 04`` and ``Mar 4`` too,
  optional fraction); Postfix ``maillog_file`` lines have this shape.  The year is not
  written, so :class:`BsdYear` infers it; the local time is read in a configured zone.
- RFC 3339 ``2024-03-04T10:00:00.123456+01:00 host prog[pid]: msg`` (rsyslog's
  high-precision default) and journald ``short-iso`` ``...T10:00:00+0100 host ...``.
- RFC 5424 ``<22>1 2024-03-04T10:00:00.123Z host app procid msgid [sd] msg``, and a
  ``<PRI>`` in front of either form above.

The ``:`` after ``prog[pid]`` is optional (some relays drop it) and trailing ``\\r``/``\\n``
are ignored.  A line whose framing cannot be understood yields None.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo

__all__ = ["BsdYear", "Fields", "Frame", "SyslogFramer", "split_line"]

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}

# The program is anything up to "[pid]" or ":"; "postfix/submission/smtpd" keeps its slashes.
# Groups: timestamp text, host, program, pid; the message is the rest of the line.
_TAIL = r" ([^ ]+) ([^ \[\]:]+)(?:\[([0-9]+)\]:?|:)(?: |$)"
_BSD = re.compile(
    r"([A-Z][a-z][a-z]  ?[0-9][0-9]? [0-9][0-9]:[0-9][0-9]:[0-9][0-9](?:[.][0-9]{1,9})?)" + _TAIL
)
# The timestamp token is checked by datetime.fromisoformat, which rejects what is not ISO.
_ISO = re.compile(r"([0-9]{4}-[0-9][0-9]-[0-9][0-9]T[^ ]+)" + _TAIL)
# RFC 5424 section 6: HEADER SP STRUCTURED-DATA [SP MSG]; SD-PARAM values escape "]" as "\]".
_RFC5424 = re.compile(
    r"<\d{1,3}>1 (\S+) (\S+) (\S+) (\S+) \S+ (?:-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: |$)"
)
_PRI = re.compile(r"<\d{1,3}>")

#: (time, host, program, pid text, message, header length): :meth:`SyslogFramer.fields`.
Fields = tuple[datetime, str, str, "str | None", str, int]


class Frame(NamedTuple):
    """One framed syslog line."""

    timestamp: datetime  # aware, UTC
    host: str
    service: str  # the program, e.g. "postfix/smtp" or "postfix-out/smtp"
    pid: int | None
    message: str


class BsdYear:
    """Infers the year BSD timestamps leave out, from a reference time and the months seen.

    The first line belongs to the reference year unless its month is after the
    reference month (a file last written in January that starts in December).  After
    that, a month more than six before the previous one is a New Year; a month more
    than six after it is a straggler from the old year and does not move the year.
    """

    def __init__(self, reference: datetime | None = None) -> None:
        ref = reference or datetime.now(UTC)
        self._ref_year = ref.year
        self._ref_month = ref.month
        self._year = 0
        self._month = 0

    def __call__(self, month: int) -> int:
        """The year of a line dated in ``month``."""
        if not self._year:
            self._year = self._ref_year - 1 if month > self._ref_month else self._ref_year
        elif month < self._month - 6:
            self._year += 1
        elif month > self._month + 6:
            return self._year - 1
        self._month = month
        return self._year


class SyslogFramer:
    """Splits lines into :class:`Frame`; keeps the BSD year and the last timestamp parsed.

    >>> framer = SyslogFramer(reference_time=datetime(2024, 3, 10, tzinfo=UTC))
    >>> framer.split("Mar  4 10:00:00 mx postfix/smtp[12]: hello").service
    'postfix/smtp'
    """

    def __init__(
        self, *, reference_time: datetime | None = None, tz: str | tzinfo | None = None
    ) -> None:
        self.year = BsdYear(reference_time)
        if tz in (None, "UTC", "Etc/UTC"):
            tz = UTC
        self._tz: tzinfo = ZoneInfo(tz) if isinstance(tz, str) else tz
        self._utc = self._tz is UTC
        # Logs repeat the same second many times: parse each timestamp text once.
        self._last_text = ""
        self._last_time = datetime(1970, 1, 1, tzinfo=UTC)

    def split(self, line: str) -> Frame | None:
        """The frame of ``line``, or None when its framing is not understood."""
        fields = self.fields(line)
        if fields is None:
            return None
        moment, host, prog, pid, message, _ = fields
        return Frame(moment, host, prog, int(pid) if pid and pid.isdigit() else None, message)

    def fields(self, line: str) -> Fields | None:
        """Like :meth:`split` as a plain tuple, the pid as text, plus the header's length.

        The header ("time host prog[pid]: ") is the text before the message; -1 when the
        line had a ``<PRI>``.  A parser may cache what a header framed to.
        """
        if line[-1:] in ("\n", "\r"):
            line = line.rstrip("\r\n")
        first = line[:1]
        if first.isalpha():
            m = _BSD.match(line)
            if m is None:
                return None
            text, host, prog, pid = m.groups()
            if text == self._last_text:
                moment: datetime | None = self._last_time
            else:
                moment = self._bsd_time(text)
        elif first.isdigit():
            m = _ISO.match(line)
            if m is None:
                return None
            text, host, prog, pid = m.groups()
            moment = self._last_time if text == self._last_text else self._iso_time(text)
        elif first == "<":
            return self._with_pri(line)
        else:
            return None
        if moment is None:
            return None
        self._last_text = text
        self._last_time = moment
        end = m.end()
        return moment, host, prog, pid, line[end:], end

    def _with_pri(self, line: str) -> Fields | None:
        m = _RFC5424.match(line)
        if m is None:
            pri = _PRI.match(line)
            rest = line[pri.end() :] if pri else ""
            fields = self.fields(rest) if rest[:1].isalnum() else None
            return None if fields is None else (*fields[:5], -1)
        text, host, prog, pid = m.groups()
        if text == "-" or prog == "-":  # NILVALUE: no time or no program to go by
            return None
        moment = self._iso_time(text)
        if moment is None:
            return None
        message = line[m.end() :]
        if message.startswith("\ufeff"):  # RFC 5424 section 6.4: MSG-UTF8 starts with a BOM
            message = message[1:]
        return moment, host, prog, None if pid == "-" else pid, message, -1

    def _bsd_time(self, text: str) -> datetime | None:
        month = _MONTHS.get(text[:3])
        if month is None:
            return None
        day, clock = text[4:].split()
        hms, _, frac = clock.partition(".")
        try:
            moment = datetime(
                self.year(month),
                month,
                int(day),
                int(hms[0:2]),
                int(hms[3:5]),
                int(hms[6:8]),
                int(frac[:6].ljust(6, "0")) if frac else 0,
                tzinfo=self._tz,
            )
        except ValueError:  # Feb 30, 25:00:00, Feb 29 in an inferred non-leap year
            return None
        return moment if self._utc else moment.astimezone(UTC)

    def _iso_time(self, text: str) -> datetime | None:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self._tz)
        return moment.astimezone(UTC)


def split_line(
    line: str, *, reference_time: datetime | None = None, tz: str | tzinfo | None = None
) -> Frame | None:
    """Frame one line on its own (a stream should share one :class:`SyslogFramer`)."""
    return SyslogFramer(reference_time=reference_time, tz=tz).split(line)
