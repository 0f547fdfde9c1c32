"""Read emails from files: one ``.eml``, an mbox of several, or stdin; each capped in size.

The thin I/O adapter in front of :func:`monitor.collectors.mail.dsn.parse`: every message is read
with at most ``max_bytes + 1`` bytes in memory (the extra byte tells it was cut), mbox
files message by message through :class:`mailbox.mbox`.
"""

from __future__ import annotations

import mailbox
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from monitor.collectors.mail.dsn import DEFAULT_MAX_BYTES

__all__ = ["MailItem", "is_mail", "is_mbox", "read_messages"]


class MailItem(NamedTuple):
    """One message read from a file: where it came from and its (possibly cut) bytes."""

    file: str
    position: int  # in an mbox from 1; 0 for a single message
    data: bytes


def is_mbox(head: bytes) -> bool:
    """An mbox starts with a ``From `` separator line (RFC 4155)."""
    return head.startswith(b"From ") and b"\n" in head[:1000]


#: An RFC 5322 header field's name and colon (section 2.2: printable ASCII but ':').
_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
#: At least one of these is in every message a mail system writes or hands on.
_ORIGIN_FIELDS = frozenset({b"from", b"date", b"received", b"return-path", b"message-id"})


def is_mail(data: bytes) -> bool:
    """Whether ``data`` starts like an email: a header section (RFC 5322 2.1) whose lines
    are all header fields or their folded continuations, with one of From, Date,
    Received, Return-Path or Message-ID.  A log, a JSON payload or a binary file is not."""
    lines = data[:65536].lstrip(b"\r\n").splitlines()
    if lines and lines[0].startswith(b"From "):  # an mbox separator (RFC 4155)
        lines = lines[1:]
    names: set[bytes] = set()
    for line in lines:
        if not line.strip():
            break
        if line[:1] in (b" ", b"\t"):
            if not names:
                return False
            continue
        field = _FIELD.match(line)
        if field is None:
            return False
        names.add(field.group(0).rstrip(b": \t").lower())
    return not names.isdisjoint(_ORIGIN_FIELDS)


def _capped(stream: BinaryIO, max_bytes: int) -> bytes:
    return stream.read(max_bytes + 1)


def read_messages(path: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[MailItem]:
    """The messages in ``path`` (``-`` is stdin); raises ``OSError`` when it cannot be read."""
    if path == "-":
        data = _capped(sys.stdin.buffer, max_bytes)
        yield MailItem("-", 0, data)
        return
    file = Path(path)
    with file.open("rb") as stream:
        head = stream.read(1024)
        if not is_mbox(head):
            stream.seek(0)
            yield MailItem(path, 0, _capped(stream, max_bytes))
            return
    box = mailbox.mbox(file, create=False)
    try:
        for index, key in enumerate(box.iterkeys(), start=1):
            with box.get_file(key) as message:
                yield MailItem(path, index, _capped(message, max_bytes))  # type: ignore[arg-type]
    finally:
        box.close()
