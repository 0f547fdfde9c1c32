"""Following the logs named in the config: each file through a rotation-safe tailer.

The tailer's position is written in the same transaction as the events read up to
it (by the driver, :mod:`monitor.driver`), so a restart resumes where the store is: no
line lost, none stored twice (events carry deterministic ids, so a line read again after
a crash is a duplicate the store drops).  Checkpoint keys carry the instance's name
(``[service] instance``), so instances on several hosts that follow the same path into
one database keep apart; what the parsers remember of messages in flight is one state
per log kind, shared by the files of that kind and by ``mailmon ingest``
(``monitor.collectors.checkpoints``).
"""

from __future__ import annotations

import collections
import fnmatch
import glob
import logging
import threading
import time
from collections.abc import Callable

from monitor.collectors.checkpoints import (
    file_key,
    legacy_file_key,
    restore_writer_state,
    state_prefix,
)
from monitor.collectors.mta.postfix_state import QueueTable
from monitor.collectors.registry import LineInput, is_stateful, line_source
from monitor.collectors.tail import FileTailer, Position
from monitor.config import LogSource, default_instance
from monitor.driver import Driver
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline

__all__ = ["Follower"]

log = logging.getLogger(__name__)

#: Lines not understood are logged at most this often per file, as one line with counts by
#: service: a log full of unknown lines must not turn into a log of the same size.
UNPARSED_LOG_INTERVAL_SECONDS = 60.0


class _Followed:
    """One file: its tailer, its parser and its checkpoint key."""

    def __init__(
        self, source: LogSource, path: str, pipeline: Pipeline, instance: str,
        queues: QueueTable | None,
    ) -> None:  # fmt: skip
        self.source = source
        self.key = file_key(instance, source.kind, path)
        saved = pipeline.store.checkpoint(self.key)
        #: Keys written before instances were named, taken over with the first checkpoint.
        self.legacy: dict[str, None] = {}
        if saved is None:
            legacy = legacy_file_key(source.kind, path)
            saved = pipeline.store.checkpoint(legacy)
            if saved is not None:
                old_state = pipeline.store.checkpoints_under(f"{legacy}\x1fstate\x1f")
                if queues is not None:
                    queues.restore(old_state, changed=True)
                self.legacy = {legacy: None}
                self.legacy.update({f"{legacy}\x1fstate\x1f{k}": None for k in old_state})
        self.tailer = FileTailer(
            path,
            position=Position.from_dict((saved or {}).get("position")),
            start_at=source.start_at,
        )
        self.parser = line_source(source.kind, LineInput(
            tz=source.tz, queues=queues, state_prefix=state_prefix(instance, source.kind),
        ))  # fmt: skip
        self.unparsed_seen = 0  # by this parser, which starts from zero
        self.unparsed_logged: collections.Counter[str] = collections.Counter()
        self.unparsed_logged_at = float("-inf")
        # Lines read and not understood since the file was first followed, kept in its
        # checkpoint across restarts: a file's history for operators (the /metrics
        # counters are the process's own).
        counts = (saved or {}).get("counts") or {}
        self.lines = int(counts.get("lines", 0))
        self.unparsed = int(counts.get("rejected", {}).get("unparsed", 0))
        self.saved_position = (saved or {}).get("position")

    def taken_over(self) -> dict[str, None]:
        """The keys this file takes over, deleted with its first checkpoint."""
        keys, self.legacy = self.legacy, {}
        return keys


class Follower:
    """Polls every configured log and feeds new complete lines to the pipeline."""

    def __init__(self, sources: tuple[LogSource, ...], pipeline: Pipeline, metrics: Metrics,
                 *, stop: threading.Event | None = None, instance: str | None = None) -> None:
        self.sources = sources
        self.pipeline = pipeline
        self.metrics = metrics
        self.driver = Driver(pipeline, metrics)
        self.stop = stop or threading.Event()
        self.instance = instance or default_instance()
        self.files: dict[str, _Followed] = {}
        # Files that could not be set up (a checkpoint or parser that fails), with why:
        # tried again at every poll, and never in the way of the other files.
        self.broken: dict[str, str] = {}
        self.writers: dict[str, QueueTable] = {}  # log kind -> the state its parsers share
        self.failure: str | None = None  # why the last poll failed, for /healthz

    def _follow(self, source: LogSource, path: str) -> _Followed:
        queues = self.writers.get(source.kind)
        if queues is None and is_stateful(source.kind):
            queues = self.writers[source.kind] = restore_writer_state(
                self.pipeline.store, self.instance, source.kind
            )
        return _Followed(source, path, self.pipeline, self.instance, queues)

    def run(self, after_first_poll: Callable[[], object] | None = None) -> None:
        """Poll until ``stop`` is set; a failed poll is logged, shown in :meth:`health` and
        retried at the next.  ``after_first_poll``: called once the first poll (the catch-up
        read, which tells most about the busiest domains) is stored."""
        interval = min((s.poll_interval_seconds for s in self.sources), default=1.0)
        while not self.stop.is_set():
            try:
                self.poll_once()
                self.failure = None
                if after_first_poll is not None:
                    after_first_poll()
                    after_first_poll = None
            except Exception:  # the service keeps running; the next poll retries
                log.exception("log follower failed; retrying")
                self.failure = "the log follower failed (see the service log)"
            self.stop.wait(interval)

    def health(self) -> dict[str, object]:
        """Each followed log's status for /healthz (``starting`` until it is first polled)."""
        files = self.files.copy()  # atomic: the polling thread adds and drops files
        logs: dict[str, dict[str, object]] = {s.path: {"status": "starting"} for s in self.sources}
        for path, followed in files.items():
            for source in self.sources:
                if fnmatch.fnmatch(path, source.path):
                    logs.pop(source.path, None)
            error = followed.tailer.error
            logs[path] = {"status": "failing", "reason": error} if error else {"status": "ok"}
        checks: dict[str, object] = {"logs": logs}
        if self.failure:
            checks["follower"] = {"status": "failing", "reason": self.failure}
        return checks

    def poll_once(self) -> int:
        """Read what is new in every file; returns the number of lines read."""
        total = 0
        for source in self.sources:
            for path in sorted(glob.glob(source.path)) or [source.path]:
                followed = self.files.get(path) or self._start(source, path)
                if followed is None:
                    continue
                try:
                    total += self._poll(followed)
                except Exception:
                    # The store refused the batch (database down, disk full): forget what
                    # was read since the last checkpoint and start again from it.
                    log.exception("storing %s failed; will re-read from its checkpoint", path)
                    self.pipeline.discard()
                    # The files of this kind share one state: all start again from the store.
                    self.writers.pop(source.kind, None)
                    for p, f in list(self.files.items()):
                        if f.source.kind == source.kind:
                            f.tailer.close()
                            del self.files[p]
        behind: dict[str, int] = {}
        for f in self.files.values():
            behind[f.source.kind] = behind.get(f.source.kind, 0) + f.tailer.bytes_behind()
        for kind, n in behind.items():
            self.metrics.bytes_behind.labels(kind).set(n)
        return total

    def errors(self) -> dict[str, str]:
        """Files that cannot be read now, with the reason (for /healthz)."""
        failing = {p: f.tailer.error for p, f in self.files.items() if f.tailer.error}
        return {**failing, **self.broken}

    def _start(self, source: LogSource, path: str) -> _Followed | None:
        try:
            followed = self.files[path] = self._follow(source, path)
        except Exception as exc:
            message = f"cannot follow {path}: {type(exc).__name__}: {exc}"
            if self.broken.get(path) != message:
                log.exception("%s (will keep trying; the other logs go on)", message)
            self.broken[path] = message
            return None
        self.broken.pop(path, None)
        return followed

    def _poll(self, f: _Followed) -> int:
        lines = f.tailer.poll(max_bytes=f.source.max_bytes_per_poll)
        ref = f.tailer.path
        self.driver.run(f.parser, (raw.decode("utf-8", "replace").rstrip("\r") for raw in lines),
                        ref, numbered=False)  # fmt: skip
        position = f.tailer.position().to_dict()
        # Also without lines when the position moved on (a rotated file done with), so
        # that a restart does not go back to it.
        if lines or (position != f.saved_position and f.tailer.error is None):
            unparsed = sum(f.parser.stats.unparsed.values())
            new_unparsed = unparsed - f.unparsed_seen
            total_lines, total_unparsed = f.lines + len(lines), f.unparsed + new_unparsed
            counts = {"source": f.source.kind, "lines": total_lines,
                      "rejected": {"unparsed": total_unparsed}}
            self.driver.commit(
                f.parser,
                (f.key, {"path": f.tailer.path, "position": position, "counts": counts}),
                state=f.taken_over(),
            )  # fmt: skip
            # Only once stored: a failed batch is read again from the checkpoint.
            f.lines, f.unparsed, f.unparsed_seen = total_lines, total_unparsed, unparsed
            f.saved_position = position
            if new_unparsed:
                self._log_unparsed(f)
        return len(lines)

    @staticmethod
    def _log_unparsed(f: _Followed) -> None:
        now = time.monotonic()
        if now - f.unparsed_logged_at < UNPARSED_LOG_INTERVAL_SECONDS:
            return
        by_service = collections.Counter(f.parser.stats.unparsed)
        by_service.subtract(f.unparsed_logged)
        shown = ", ".join(f"{name}: {n}" for name, n in sorted(by_service.items()) if n > 0)
        log.warning("%s: lines not understood (by service or framing, since the last report): %s;"
                    " `mailmon ingest %s FILE` lists them", f.tailer.path, shown, f.source.kind)
        f.unparsed_logged = collections.Counter(f.parser.stats.unparsed)
        f.unparsed_logged_at = now
