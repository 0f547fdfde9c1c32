"""Following one log file across rotations without losing or repeating a line.

    tailer = FileTailer("/var/log/mail.log", position=saved)
    for line in tailer.poll():          # complete lines only (bytes, no newline)
        ...
    save(tailer.position())             # with the events those lines made

The position is the file's identity (device, inode, a fingerprint of the first 256
bytes of its first line) and the byte offset after the last complete line handed out;
a partial last line is held until its newline arrives.  Rotation cases:

- rename and create (logrotate's default), delete and re-create: the old file is read
  to its end through the still-open handle before the new one, and kept open for
  ``rotate_wait_seconds`` in case the writer has not reopened yet (also when the
  rotation happened while Mailmon was stopped);
- ``copytruncate``: the rest of the old content is read from the copy (a sibling
  with the same fingerprint) before the truncated file is read from its start;
- rotated while Mailmon was stopped, even compressed to ``.gz`` by then: the old file
  is found among the siblings by inode or fingerprint and read from the saved offset;
- ``copytruncate`` and the file grown past the old offset again before the next poll
  (or during a read): the head no longer matches the fingerprint, so it is the same
  case as a truncation; what was read at the old offsets is dropped, not handed out.

Rotated files still read in the grace period are part of the position (each with its
own offset), so a restart in that window goes on reading them.

Known limit: a file rotated twice before the tailer looked (say copytruncate, then the
truncated file renamed and compressed, all while Mailmon was stopped) is followed to
its first rotated copy only; what was written between the two rotations is not found.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, cast

from monitor.collectors.limits import GuardedGzip

__all__ = ["FileTailer", "Position", "gunzipped"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
#: A line longer than this is handed out in pieces rather than held in memory.
MAX_LINE_BYTES = 4 << 20
_FINGERPRINT_BYTES = 256


@dataclass
class Position:
    """Where a tailer is: which file (device, inode, fingerprint) and how far in."""

    dev: int = 0
    ino: int = 0
    offset: int = 0
    fingerprint: str = ""
    #: Rotated-away files the writer may still append to, read up to their own offsets:
    #: a restart in the grace period goes on reading them instead of losing their tail.
    rotated: list[Position] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dev": self.dev, "ino": self.ino, "offset": self.offset,
                               "fingerprint": self.fingerprint}  # fmt: skip
        if self.rotated:
            out["rotated"] = [p.to_dict() for p in self.rotated]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Position | None:
        if not data:
            return None
        rotated = [p for p in map(cls.from_dict, data.get("rotated") or []) if p is not None]
        return cls(int(data.get("dev", 0)), int(data.get("ino", 0)), int(data.get("offset", 0)),
                   str(data.get("fingerprint", "")), rotated)  # fmt: skip


def _fingerprint(head: bytes) -> str:
    """Identifies a file by its first line, up to 256 bytes (logrotate keeps content, not inodes).

    "" while it cannot be known yet: a first line shorter than that without its newline.
    The same bytes give the same answer whether they come from a whole first line or
    from the head of the file, so a line longer than 256 bytes matches its checkpoint.
    """
    first, newline, _ = head.partition(b"\n")
    if not newline and len(first) < _FINGERPRINT_BYTES:
        return ""
    first = first[:_FINGERPRINT_BYTES]
    return hashlib.blake2b(first, digest_size=8).hexdigest() if first else ""


def gunzipped(raw: IO[bytes]) -> IO[bytes]:
    """``raw``, or its decompressed bytes when it starts with gzip's magic (RFC 1952 2.3.1).

    Only a stream that can ``peek`` is looked at: reading the magic would lose it.  Reading
    a stream that expands like a decompression bomb raises
    :class:`~monitor.collectors.limits.DecompressionBomb` (an ``OSError``).
    """
    peek = getattr(raw, "peek", None)
    if peek is not None and peek(2)[:2] == b"\x1f\x8b":
        return cast(IO[bytes], GuardedGzip(raw))
    return raw


def _open_any(path: str) -> IO[bytes]:
    """A plain or gzip file for reading (rotated logs are often compressed)."""
    return gunzipped(open(path, "rb"))


class _Rotated:
    """A rotated-away file still being read: its handle, position and held partial line."""

    def __init__(self, handle: IO[bytes], pos: Position, partial: bytes, since: float) -> None:
        self.handle, self.pos, self.partial, self.since = handle, pos, partial, since

    def advance(self, line: bytes, nbytes: int) -> None:
        self.pos.offset += nbytes


class FileTailer:
    """Follows ``path``; :meth:`poll` returns the complete lines added since the last call."""

    def __init__(
        self,
        path: str,
        *,
        position: Position | None = None,
        start_at: str = "beginning",
        rotate_wait_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._saved = position
        self._start_at = start_at
        self._rotate_wait = rotate_wait_seconds
        self._clock = clock
        self._handle: IO[bytes] | None = None
        self._pos = Position()
        self._partial = b""
        self._draining: list[_Rotated] = []
        self.error: str | None = None  # why the file cannot be read now, for health checks

    # -- public ----------------------------------------------------------------

    def position(self) -> Position:
        """Where the followed file and the rotated files still read are (for a checkpoint)."""
        rotated = [Position(d.pos.dev, d.pos.ino, d.pos.offset, d.pos.fingerprint)
                   for d in self._draining]  # fmt: skip
        return Position(self._pos.dev, self._pos.ino, self._pos.offset, self._pos.fingerprint,
                        rotated)  # fmt: skip

    def bytes_behind(self) -> int:
        """How much of the current file is not read yet."""
        try:
            return max(0, os.stat(self.path).st_size - self._pos.offset)
        except OSError:
            return 0

    def poll(self, max_bytes: int | None = None) -> list[bytes]:
        """Complete lines written since the last poll, across a rotation if one happened.

        With ``max_bytes``, stop after about that much of the followed file, so that a
        long catch-up is stored (and checkpointed) in steps; the next poll goes on.
        """
        lines: list[bytes] = []
        self._drain_rotated(lines)
        if self._handle is None and not self._open(lines):
            return lines
        assert self._handle is not None
        start, before = len(lines), (self._pos.offset, self._pos.fingerprint, self._partial)
        done = self._read(self._handle, lines, budget=max_bytes)
        if self._head_replaced():
            # copytruncate, and the file grew past our offset again (before this poll or
            # during this read): what was just read is new content at old offsets.
            del lines[start:]
            self._pos.offset, self._pos.fingerprint, self._partial = before
            self._truncated(lines)
            return lines
        if not done:
            return lines  # more to read: rotation is looked at once the file is done
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return lines  # deleted or renamed; the new file will appear at the next poll
        except OSError as exc:
            self._fail(exc)
            return lines
        if (st.st_dev, st.st_ino) != (self._pos.dev, self._pos.ino):
            self._rotated(lines)
        elif st.st_size < self._pos.offset:
            self._truncated(lines)
        return lines

    def close(self) -> None:
        for rotated in self._draining:
            rotated.handle.close()
        self._draining.clear()
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    # -- reading -----------------------------------------------------------------

    def _read(
        self, handle: IO[bytes], lines: list[bytes], *, track: bool = True,
        budget: int | None = None,
    ) -> bool:  # fmt: skip
        """Read complete lines of the followed file to its end; hold a partial last line.

        With ``track`` off the file is a finished one (a rotated copy): its position is
        not ours and its last line needs no newline.  Returns False when ``budget``
        bytes were read before the end.
        """
        partial, done = _read_lines(handle, lines, self._partial if track else b"",
                                    self._advance if track else None, budget)  # fmt: skip
        if track:
            self._partial = partial
        elif partial:
            lines.append(partial)
        return done

    def _advance(self, line: bytes, nbytes: int) -> None:
        if self._pos.offset == 0 and not self._pos.fingerprint:
            self._pos.fingerprint = _fingerprint(line + b"\n")
        self._pos.offset += nbytes

    def _head_replaced(self) -> bool:
        """Whether the followed file no longer starts as it did (truncated, maybe regrown)."""
        if not self._pos.fingerprint or self._handle is None:
            return False
        try:
            head = os.pread(self._handle.fileno(), _FINGERPRINT_BYTES + 1, 0)
        except OSError:
            return False
        return _fingerprint(head) != self._pos.fingerprint

    # -- opening and rotation ----------------------------------------------------------

    def _open(self, lines: list[bytes]) -> bool:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115
        except OSError as exc:
            self._fail(exc)
            return False
        st = os.fstat(handle.fileno())
        self.error = None
        saved, self._saved = self._saved, None
        self._handle = handle
        self._pos = Position(st.st_dev, st.st_ino, 0, "")
        if saved is None:
            if self._start_at == "end":
                self._skip_to(st.st_size)
            return True
        # Files rotated before the checkpoint first, in the order they were written.
        for rotated in saved.rotated:
            self._finish_elsewhere(rotated, lines, keep_open=True)
        self._drain_rotated(lines)
        same_file = (saved.dev, saved.ino) == (st.st_dev, st.st_ino) and (
            not saved.fingerprint or saved.fingerprint == self._head_fingerprint(handle)
        )
        if same_file and st.st_size >= saved.offset:
            handle.seek(saved.offset)
            self._pos.offset, self._pos.fingerprint = saved.offset, saved.fingerprint
            return True
        # The saved file is gone from this path: finish it from wherever it went first
        # (and go on reading it a while if the writer still has it open).
        self._finish_elsewhere(saved, lines, keep_open=True)
        self._drain_rotated(lines)
        return True

    def _skip_to(self, offset: int) -> None:
        assert self._handle is not None
        self._pos.fingerprint = self._head_fingerprint(self._handle)
        self._handle.seek(offset)
        self._pos.offset = offset

    @staticmethod
    def _head_fingerprint(handle: IO[bytes]) -> str:
        where = handle.tell()
        handle.seek(0)
        head = handle.read(_FINGERPRINT_BYTES + 1)
        handle.seek(where)
        return _fingerprint(head)

    def _rotated(self, lines: list[bytes]) -> None:
        """The path now names another file: the old one was read to its end above."""
        old = self._handle
        assert old is not None
        # The writer may not have reopened yet: keep reading the old file a while, with
        # its unterminated last line held there.
        self._draining.append(_Rotated(old, self.position(), self._partial, self._clock()))
        self._draining[-1].pos.rotated = []
        self._partial = b""
        self._handle = None
        log.info("%s was rotated; reading the new file from its start", self.path)
        if self._open(lines):
            assert self._handle is not None
            self._read(self._handle, lines)

    def _truncated(self, lines: list[bytes]) -> None:
        """Same file, shorter than what was read: copytruncate. Finish from the copy."""
        log.info("%s was truncated; reading the rest from its rotated copy", self.path)
        self._finish_elsewhere(self.position(), lines, exclude_inode=True)
        assert self._handle is not None
        self._handle.seek(0)
        self._partial = b""
        self._pos.offset, self._pos.fingerprint = 0, ""
        self._read(self._handle, lines)

    def _finish_elsewhere(
        self, saved: Position, lines: list[bytes], *, exclude_inode: bool = False,
        keep_open: bool = False,
    ) -> None:  # fmt: skip
        """Read ``saved``'s file from its offset to its end, found among rotated siblings.

        With ``keep_open``, the file found by its inode (not compressed, so the writer may
        still have it open) goes on being read for the rotation grace period.
        """
        for candidate in self._siblings(saved):
            try:
                st = os.stat(candidate)
                same_inode = (st.st_dev, st.st_ino) == (saved.dev, saved.ino)
                if exclude_inode and same_inode:
                    continue
                handle = _open_any(candidate)
                kept = False
                try:
                    head = self._head_fingerprint_any(handle)
                    if saved.fingerprint and head != saved.fingerprint:
                        continue  # another file, or the inode was reused
                    if not same_inode and not saved.fingerprint:
                        continue
                    _skip(handle, saved.offset)
                    kept = keep_open and same_inode and not isinstance(handle, gzip.GzipFile)
                    if kept:
                        pos = Position(saved.dev, saved.ino, saved.offset, saved.fingerprint)
                        self._draining.append(_Rotated(handle, pos, b"", self._clock()))
                    else:
                        self._read(handle, lines, track=False)
                    log.info("reading the rest of %s from %s", self.path, candidate)
                    return
                finally:
                    if not kept:
                        handle.close()
            except (OSError, EOFError) as exc:
                log.warning("cannot read rotated file %s: %s", candidate, exc)
        if saved.offset:
            log.warning(
                "%s: the file read up to byte %d was rotated away and not found; "
                "lines after that point in it are lost", self.path, saved.offset,
            )  # fmt: skip

    @staticmethod
    def _head_fingerprint_any(handle: IO[bytes]) -> str:
        head = handle.read(_FINGERPRINT_BYTES + 1)
        handle.seek(0)
        return _fingerprint(head)

    def _siblings(self, saved: Position) -> list[str]:
        """Rotated copies next to the path (mail.log.1, mail.log.1.gz, mail.log-2026...).

        The one with ``saved``'s inode first, then the newest first.
        """
        found = []
        for path in glob.glob(glob.escape(self.path) + "?*"):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if os.path.isfile(path):
                same = (st.st_dev, st.st_ino) == (saved.dev, saved.ino)
                found.append((not same, -st.st_mtime, path))
        return [path for _, _, path in sorted(found)]

    def _drain_rotated(self, lines: list[bytes]) -> None:
        """Lines the writer still put in a rotated file before reopening its log."""
        keep = []
        for rotated in self._draining:
            before = len(lines)
            try:
                rotated.partial, _ = _read_lines(rotated.handle, lines, rotated.partial,
                                                 rotated.advance)  # fmt: skip
            except OSError as exc:
                log.warning("reading rotated %s: %s", self.path, exc)
                rotated.partial, rotated.since = b"", -self._rotate_wait
            if len(lines) > before:
                rotated.since = self._clock()
            if self._clock() - rotated.since < self._rotate_wait:
                keep.append(rotated)
            else:
                if rotated.partial:
                    lines.append(rotated.partial)
                rotated.handle.close()
        self._draining = keep

    def _fail(self, exc: OSError) -> None:
        message = f"cannot read {self.path}: {exc.strerror or exc}"
        if message != self.error:
            log.error("%s (will keep trying)", message)
        self.error = message


def _read_lines(
    handle: IO[bytes],
    lines: list[bytes],
    partial: bytes,
    advance: Callable[[bytes, int], None] | None,
    budget: int | None = None,
) -> tuple[bytes, bool]:
    """Append the complete lines of ``handle`` to ``lines``.

    Returns the unterminated rest and whether the end was reached (False: the
    ``budget`` of bytes ran out first).
    """
    left = budget
    while chunk := handle.read(_CHUNK):
        parts = (partial + chunk).split(b"\n")
        partial = parts.pop()
        for line in parts:
            lines.append(line)
            if advance is not None:
                advance(line, len(line) + 1)
        if len(partial) > MAX_LINE_BYTES:  # a runaway line: hand it out, keep memory flat
            lines.append(partial)
            if advance is not None:
                advance(partial, len(partial))
            partial = b""
        if left is not None:
            left -= len(chunk)
            if left <= 0:
                return partial, False
    return partial, True


def _skip(handle: IO[bytes], offset: int) -> None:
    """Position ``handle`` at ``offset`` (gzip streams only read forward)."""
    if isinstance(handle, gzip.GzipFile):
        while offset > 0:
            chunk = handle.read(min(offset, _CHUNK))
            if not chunk:
                return
            offset -= len(chunk)
    else:
        handle.seek(offset)
