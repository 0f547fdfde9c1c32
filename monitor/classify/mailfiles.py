"""Read emails from files: one ``.eml``, an mbox of several, or stdin; each capped in size.

The thin I/O adapter in front of :func:`monitor.classify.dsn.parse`: every message is read
with at most ``max_bytes + 1`` bytes in memory (the extra byte tells it was cut), mbox
files message by message through :class:`mailbox.mbox`.
"""

from __future__ import annotations

import mailbox
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from monitor.classify.dsn import DEFAULT_MAX_BYTES

__all__ = ["MailItem", "is_mbox", "read_messages"]


class MailItem(NamedTuple):
    """One message read from a file: where it came from and its (possibly cut) bytes."""

    file: str
    position: int  # in an mbox from 1; 0 for a single message
    data: bytes


def is_mbox(head: bytes) -> bool:
    """An mbox starts with a ``From `` separator line (RFC 4155)."""
    return head.startswith(b"From ") and b"\n" in head[:1000]


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
