"""Following the logs named in the config: read from a checkpoint, then poll for appends.

The checkpoint (file identity and byte offset) is written in the same transaction
as the events read up to it, so a restart neither loses nor repeats lines.  A
partial last line is held until its newline arrives.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.collectors.mta.postfix import PostfixParser
from monitor.config import LogSource
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline

__all__ = ["FollowedFile", "Follower"]

log = logging.getLogger(__name__)


@dataclass
class FollowedFile:
    """One file being followed and where we are in it."""

    path: str
    checkpoint_key: str
    parser: PostfixParser
    inode: int | None = None
    offset: int = 0
    unparsed_seen: int = 0
    warned: set[str] = field(default_factory=set)


class Follower:
    """Polls every configured log and feeds new complete lines to the pipeline."""

    def __init__(
        self,
        sources: tuple[LogSource, ...],
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.sources = sources
        self.pipeline = pipeline
        self.metrics = metrics
        self.stop = stop or threading.Event()
        self.files: dict[str, FollowedFile] = {}

    def run(self) -> None:
        interval = min((s.poll_interval_seconds for s in self.sources), default=1.0)
        while not self.stop.is_set():
            self.poll_once()
            self.stop.wait(interval)

    def poll_once(self) -> int:
        """Read what is new in every file; returns the number of lines read."""
        total = 0
        for source in self.sources:
            for path in sorted(glob.glob(source.path)) or [source.path]:
                total += self._poll_file(source, path)
        return total

    def _file(self, source: LogSource, path: str) -> FollowedFile:
        known = self.files.get(path)
        if known is not None:
            return known
        key = f"{source.kind}:{os.path.abspath(path)}"
        followed = FollowedFile(path, key, PostfixParser(source.kind, tz=source.tz))
        saved = self.pipeline.store.checkpoint(key)
        if saved:
            followed.inode, followed.offset = saved.get("inode"), int(saved.get("offset", 0))
        elif source.start_at == "end":
            try:
                st = os.stat(path)
                followed.inode, followed.offset = st.st_ino, st.st_size
            except OSError:
                pass
        self.files[path] = followed
        return followed

    def _poll_file(self, source: LogSource, path: str) -> int:
        f = self._file(source, path)
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            if exc.strerror not in f.warned:
                log.error("cannot read %s: %s (will keep trying)", path, exc.strerror)
                f.warned.add(exc.strerror or "")
            return 0
        f.warned.clear()
        with handle:
            st = os.fstat(handle.fileno())
            if f.inode != st.st_ino or st.st_size < f.offset:
                # A new file at this path (rotation) or a truncation: start at its top.
                f.inode, f.offset = st.st_ino, 0
            if st.st_size == f.offset:
                return 0
            handle.seek(f.offset)
            lines = 0
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # a partial last line: hold it until its newline arrives
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                for event in f.parser.feed(line, f"{path}@{f.offset}"):
                    self.pipeline.put(event)
                f.offset += len(raw)
                lines += 1
            self.pipeline.flush(checkpoint=(f.checkpoint_key, self._state(f)))
        unparsed = sum(f.parser.stats.unparsed.values())
        self.metrics.count_input(source.kind, lines, unparsed - f.unparsed_seen)
        f.unparsed_seen = unparsed
        return lines

    @staticmethod
    def _state(f: FollowedFile) -> dict[str, Any]:
        return {
            "path": f.path,
            "inode": f.inode,
            "offset": f.offset,
            "at": datetime.now(UTC).isoformat(),
        }
