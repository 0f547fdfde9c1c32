"""Pure helpers that read one Exim ``mainlog`` message (the text after the timestamp).

Nothing here keeps state: message ids, arrival (``<=``) and delivery (``=>``, ``->``,
``**``, ``==``) lines, SMTP-time rejections, reply codes and Exim's durations.  The line
formats are those of the Exim specification, chapter "Log files" (section "Log line
flags" and "Reducing or increasing what is logged").  :mod:`monitor.collectors.mta.exim`
correlates.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from monitor.collectors.mta.smtp import ENHANCED_AFTER_CODE, normalize_address

__all__ = [
    "GENERAL_NOISE",
    "MESSAGE_NOISE",
    "Arrival",
    "Delivery",
    "Rejection",
    "duration",
    "host_of",
    "parse_arrival",
    "parse_delivery",
    "parse_rejection",
    "remote_reply",
    "split_id",
]

# Message ids: "1jmFYj-00039V-QX" (6-6-2, Exim < 4.97) and "10HmaX-000000005vi-0000"
# (6-11-4, Exim >= 4.97), base-62.
_ID = re.compile(
    r"([0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4}))(?: |$)"
)

# "KEY=value" or KEY="quoted value" (Exim escapes '"' and '\' inside quotes).
_FIELD = re.compile(r'([A-Za-z][A-Za-z0-9]*)=("(?:[^"\\]|\\.)*"|\S*)')
_TOKEN = re.compile(r'([A-Za-z][A-Za-z0-9]*)=("(?:[^"\\]|\\.)*"|\S*)|(\S+)')
# The text before a failure's or deferral's ": message", skipping colons inside quotes and
# colons not followed by a space (IPv6 addresses, "TLS1.2:ECDHE...", "RCPT TO:<x>").
_PREFIX = re.compile(r'(?:[^":]+|"(?:[^"\\]|\\.)*"|:(?! |$))*')
# The recipient, then "(intermediate)" parents and "<original>" (a generated address).
_ADDRESS = re.compile(r"(\S*)((?: (?:<[^>]*>|\([^)]*\)))*)")
# H=name (helo) [ip]:port, every part optional but the first; a "[" left open is tolerated.
_HOST = re.compile(r"(?:^| )H=(\S+)(?: \(([^)]*)\))?(?: \[([^\]\s]*)\]?(?::([0-9]+))?)?")
_SENDER = re.compile(r"(?:^| )F=<?([^\s>]*)>?")
# RFC 5321 section 4.2 reply code at the start of the remote's text ("...: 550 5.1.1 ...").
_REPLY = re.compile(r"(?:^|: )([2-5][0-9][0-9])(?![0-9])" + ENHANCED_AFTER_CODE)
_REJECT_RCPT = re.compile(r"(?:^|\s)(?:temporarily )?rejected RCPT <?([^\s>]*?)>?:\s*(.*)$")
# Exim writes "... : 550 5.1.1 user unknown DT=0.000s": the times follow a failure's text.
_TRAILING_TIMES = re.compile(r"(?: (?:QT|DT)=[0-9][0-9.wdhms]*)+$")
_DURATION = re.compile(r"(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9.]+)s)?$")

#: Lines after a message id that are understood and carry nothing to record (host errors
#: repeated on the ``==``/``**`` line that follows, TLS notes, frozen messages, ...).
MESSAGE_NOISE = (
    "H=",
    "[",
    "TLS ",
    "SMTP ",
    "SA: ",
    "DKIM: ",
    "ARC: ",
    "SPF ",
    "Failed to ",
    "bounce_message_file ",
    "Frozen",
    "Unfrozen",
    "Message is frozen",
    "Spool file ",
    "Spool read error",
    "cancelled by ",
    "Warning: ",
    "Error while ",
    "no immediate delivery",
    "Sender identification ",
    "Connection ",
    "Remote host ",
    "Message ",
    "Unable to ",
    "unexpected disconnection",
    "malware acl condition",
    "F=",
    "U=",
    "P=",
    "*>",
)

#: Lines without a message id that are understood and carry nothing to record.
GENERAL_NOISE = (
    "exim ",
    "Start queue run",
    "End queue run",
    "SMTP ",
    "TLS ",
    "H=",
    "no MAIL in SMTP connection",
    "no host name found",
    "no IP address found",
    "unexpected disconnection",
    "Connection ",
    "connection ",
    "cwd=",
    "pid ",
    "Received ",
    "Warning: ",
    "exim user lost privilege",
    "Spool ",
    "DKIM: ",
    "SPF ",
    "ratelimit ",
    "rejected ",
    "sender verify ",
    "lost connection",
    "LOG: ",
    "Queue run",
    "daemon ",
    "[",
)


class Arrival(NamedTuple):
    """A ``<=`` line: the message as Exim received it."""

    sender: str  # "" for the null sender <>
    client: str | None  # "name[ip]", "unknown[ip]" or "local"
    size: int | None
    message_id: str | None
    bounce_of: str | None  # R=: the message this bounce notice is about
    recipients: tuple[str, ...]  # "for ..." (log_selector +received_recipients)


class Delivery(NamedTuple):
    """A ``=>``, ``->``, ``**`` or ``==`` line."""

    recipient: str | None
    orig_recipient: str | None
    sender: str | None  # F=<...> (log_selector +sender_on_delivery)
    relay: str | None  # "name[ip]" or "name[ip]:port"
    confirmation: str | None  # C="..." (log_selector +smtp_confirmation)
    delay: float | None  # QT= (time on queue), else DT= (delivery time)
    text: str | None  # the error or deferral reason after ": "
    blackhole: bool


class Rejection(NamedTuple):
    """A recipient Exim refused during the SMTP dialogue."""

    sender: str | None
    recipient: str | None
    client: str | None
    text: str | None


def split_id(body: str) -> tuple[str | None, str]:
    """``("1jmFYj-00039V-QX", "<= ...")`` from ``"1jmFYj-00039V-QX <= ..."``."""
    if body[6:7] != "-":
        return None, body
    m = _ID.match(body)
    if m is None:
        return None, body
    return m.group(1), body[m.end() :]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
        if "\\" in value:
            value = re.sub(r"\\(.)", r"\1", value)
    return value


def host_of(name: str, helo: str | None, ip: str | None, port: str | None) -> str | None:
    """``name[ip]:port`` the way Postfix writes hosts, from the parts of ``H=``."""
    del helo  # the HELO name is what the client claimed, not who it is
    if name.startswith("["):  # H=[192.0.2.1]:25: no name at all
        ip, _, rest = name[1:].partition("]")
        name = "unknown"
        port = port or rest.lstrip(":") or None
    elif name.startswith("("):  # H=(helo) [ip]: no verified name
        name = "unknown" if ip else name.strip("()")
    if ip is None:
        return name
    return f"{name}[{ip}]:{port}" if port else f"{name}[{ip}]"


def _host(text: str) -> str | None:
    m = _HOST.search(text)
    return None if m is None else host_of(*m.groups())


def parse_arrival(rest: str) -> Arrival:
    """The fields of the text after ``<= ``."""
    sender, _, tail = rest.partition(" ")
    if sender == "<>":
        sender = ""
    client: str | None = None
    size: int | None = None
    message_id: str | None = None
    bounce_of: str | None = None
    recipients: tuple[str, ...] = ()
    user = False
    for m in _TOKEN.finditer(tail):
        key, value, bare = m.groups()
        if bare is not None:
            if bare == "for":
                recipients = tuple(
                    a for r in tail[m.end() :].split() if (a := normalize_address(r.strip("<>")))
                )
                break
            continue
        if key == "H":
            client = _host(tail[m.start() - 1 if m.start() else 0 :])
        elif key == "S":
            size = int(value) if value.isdigit() else None
        elif key == "id":
            message_id = value.strip("<>") or None
        elif key == "R":
            bounce_of = value
        elif key == "U":
            user = True
    if client is None and user:
        client = "local"  # submitted on this host (sendmail -t, exim -bm), not over SMTP
    return Arrival(sender, client, size, message_id, bounce_of, recipients)


def duration(text: str | None) -> float | None:
    """Seconds from Exim's ``0.021s``, ``2s``, ``1m3s``, ``2h``, ``1d3h`` and ``1w``."""
    if not text:
        return None
    if text[-1] == "s" and text[0].isdigit():
        try:
            return float(text[:-1])
        except ValueError:
            pass
    m = _DURATION.match(text)
    if m is None or not any(m.groups()):
        return None
    weeks, days, hours, minutes, seconds = m.groups()
    try:
        total = float(seconds) if seconds else 0.0
    except ValueError:
        return None
    for count, unit in ((weeks, 604800), (days, 86400), (hours, 3600), (minutes, 60)):
        if count:
            total += int(count) * unit
    return total


def parse_delivery(rest: str) -> Delivery | None:
    """The fields of the text after ``=> ``, ``-> ``, ``** `` or ``== ``; None when empty."""
    blackhole = rest.startswith(":blackhole:")
    if blackhole:  # "=> :blackhole: <original> R=router": discarded by configuration
        rest = rest[11:]
    m = _PREFIX.match(rest)
    end = m.end() if m is not None else 0
    tail = rest[end:]
    text: str | None = None
    times = ""
    if tail:
        if tail[0] != ":":  # an unbalanced quote: fall back to the first ": "
            at = tail.find(": ")
            end = end + at if at >= 0 else len(rest)
            tail = rest[end:]
        text = tail[1:].strip()
        found = _TRAILING_TIMES.search(text)
        if found is not None:
            text, times = text[: found.start()], found.group(0)
        text = text or None
    head = rest[:end].strip()
    if blackhole:
        head = " " + head  # no recipient of its own: only "<original>" follows
    m2 = _ADDRESS.match(head)
    if m2 is None:  # pragma: no cover - the pattern matches any text
        return None
    address = m2.group(1).rstrip(":")
    orig: str | None = None
    for part in m2.group(2).split():
        if part[0] == "<":
            orig = part[1:-1] or None
    if not address and orig is None:
        return None
    fields_text = head[m2.end() :] + times
    fields = dict(_FIELD.findall(fields_text))
    confirmation = fields.get("C")
    delay = duration(fields.get("QT")) if "QT" in fields else duration(fields.get("DT"))
    sender = fields.get("F")
    if "@" not in address and orig is not None:
        # A local part, a pipe or a file of a local delivery: the original is the address.
        address, orig = orig, None
    return Delivery(
        normalize_address(address),
        normalize_address(orig),
        sender.strip("<>") if sender is not None else None,
        _host(fields_text),
        _unquote(confirmation) if confirmation is not None else None,
        delay,
        text,
        blackhole,
    )


def remote_reply(text: str | None) -> tuple[int | None, str | None]:
    """The SMTP reply code and enhanced status of an Exim error or confirmation text.

    ``250 2.0.0 OK``; ``SMTP error from remote mail server after RCPT TO:<a@b>: 550 5.1.1
    ...``; ``LMTP error after DATA: 440 ...``.
    """
    if not text:
        return None, None
    m = _REPLY.search(text)
    if m is None:
        return None, None
    return int(m.group(1)), m.group(2)


def parse_rejection(body: str) -> Rejection | None:
    """``H=... F=<s> rejected RCPT <r>: text`` (also ``temporarily rejected``), or None."""
    m = _REJECT_RCPT.search(body)
    if m is None:
        return None
    prefix = body[: m.start()]
    sender = _SENDER.search(prefix)
    recipient, text = m.groups()
    return Rejection(
        sender.group(1) if sender else None,
        normalize_address(recipient) if recipient else None,
        _host(prefix),
        text.strip() or None,
    )
