"""What one input may cost: the length of a line and how far a gzip stream may expand.

    stream = GuardedGzip(raw)      # DecompressionBomb once it expands past MAX_GUNZIP_RATIO
    capped = LineCap(stream)       # lines longer than MAX_LINE_BYTES are dropped and counted
    text = io.TextIOWrapper(capped, encoding="utf-8", errors="replace")
    ...
    capped.too_long                # how many were dropped

Both keep memory bounded whatever the input: a 2 MB gzip of zeros is one 2 GB "line".
"""

from __future__ import annotations

import gzip
import io
from typing import IO, Any

__all__ = [
    "MAX_GUNZIP_RATIO",
    "MAX_LINE_BYTES",
    "DecompressionBomb",
    "GuardedGzip",
    "LineCap",
]

#: A longer line is dropped (counted as ``too_long``), never held: the follower's limit.
MAX_LINE_BYTES = 4 << 20
#: Logs compress 5-20 times (the same line over and over: 250), a run of zeros 1000
#: times (deflate's most). Past the first
#: ``_GUNZIP_SLACK`` bytes, a stream that has expanded more than this is refused.
MAX_GUNZIP_RATIO = 500
_GUNZIP_SLACK = 64 << 20
_CHUNK = 1 << 16


class DecompressionBomb(OSError):
    """A gzip input that expands far more than any log does."""


class _Counted:
    """A byte stream that counts what was read from it (the compressed side)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def __getattr__(self, name: str) -> Any:  # seek, tell, mode, name, close ...
        return getattr(self.raw, name)


class GuardedGzip(gzip.GzipFile):
    """A :class:`gzip.GzipFile` for reading that raises :class:`DecompressionBomb` once the
    bytes it handed out pass both 64 MiB and ``max_ratio`` times the bytes it read."""

    def __init__(self, raw: IO[bytes], *, max_ratio: int = MAX_GUNZIP_RATIO) -> None:
        self._compressed = _Counted(raw)
        self._out = 0
        self._max_ratio = max_ratio
        super().__init__(fileobj=self._compressed)

    def _guard(self, data: bytes) -> bytes:
        self._out += len(data)
        if self._out > _GUNZIP_SLACK and self._out > self._max_ratio * self._compressed.count:
            raise DecompressionBomb(
                f"gzip data expands more than {self._max_ratio} times "
                f"({self._compressed.count:,} bytes to over {self._out:,}): "
                "refused as a decompression bomb"
            )
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:  # in guarded steps, never all at once
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        return self._guard(super().read(size))

    def read1(self, size: int = -1) -> bytes:
        return self._guard(super().read1(size if size > 0 else _CHUNK))

    def readline(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            return self._guard(super().readline(size))
        parts = []
        while part := self._guard(super().readline(_CHUNK)):
            parts.append(part)
            if part.endswith(b"\n"):
                break
        return b"".join(parts)


class LineCap(io.BufferedIOBase):
    """``source``'s bytes without the lines longer than ``max_bytes``; :attr:`too_long`
    counts them.  A line is held only while it is shorter than the limit.

    Read it through :class:`io.TextIOWrapper` (which calls :meth:`read1`); each read hands
    out whole lines, up to ``_CHUNK`` bytes of input at a time (so a line inside one read
    is shorter than the limit).
    """

    def __init__(self, source: IO[bytes], max_bytes: int = MAX_LINE_BYTES) -> None:
        self.source = source
        # read1: what a pipe has now, not a full chunk (a live stream must not wait).
        self._read = getattr(source, "read1", source.read)
        self.max_bytes = max(max_bytes, _CHUNK)
        self.too_long = 0
        self._pending: list[bytes] = []  # the start of a line whose newline has not come
        self._held = 0  # its length
        self._skipping = False  # inside an over-long line: drop up to its newline

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        while True:
            chunk = self._read(_CHUNK)
            if not chunk:
                last = b"".join(self._pending)  # a last line without newline
                self._pending, self._held = [], 0
                return last
            first = chunk.find(b"\n")
            if self._skipping or self._held + (len(chunk) if first < 0 else first) > self.max_bytes:
                self.too_long += not self._skipping
                self._pending, self._held = [], 0
                self._skipping = first < 0
                if first < 0:
                    continue
                chunk = chunk[first + 1 :]
                first = chunk.find(b"\n")
            if first < 0:
                self._pending.append(chunk)
                self._held += len(chunk)
                continue
            end = chunk.rfind(b"\n") + 1
            lines = b"".join((*self._pending, chunk[:end]))
            rest = chunk[end:]
            self._pending, self._held = ([rest], len(rest)) if rest else ([], 0)
            return lines

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(self.read1, b""))
        return self.read1(size)
