"""``mailmon ingest eml|mbox FILE...``: bounce, complaint and auto-reply emails into the store.

Each message (an ``.eml`` file, every message of an mbox, ``-`` for stdin) is parsed by
:func:`.dsn.parse` and its events (:func:`.events.report_events`) go through the same
pipeline as log lines.  They carry the original message's Message-ID, so a bounce joins
the original delivery and ``mailmon trace`` shows it in that timeline.  The event source
is ``mailbox:<kind>``; a message is referenced as ``file#n``.  Input that is not an email
(:func:`.mailfiles.is_mail`: a log, a JSON payload, a binary file) is refused and counted
as ``not_mail``.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, Protocol

from monitor.collectors.mail.dsn import DEFAULT_MAX_BYTES, parse
from monitor.collectors.mail.events import report_events
from monitor.collectors.mail.mailfiles import is_mail, read_messages
from monitor.model import Event

__all__ = ["MAIL_SOURCES", "ingest_mail"]

#: The ``mailmon ingest`` kinds this module reads (either reads both shapes of file).
MAIL_SOURCES = ("eml", "mbox")


class _Sink(Protocol):
    def put(self, event: Event) -> None: ...
    def flush(self) -> object: ...


class _Counts(Protocol):
    def count_input(self, source: str, lines: int, unparsed: int) -> None: ...


def ingest_mail(
    paths: list[str],
    pipeline: _Sink,
    *,
    kind: str = "mbox",
    metrics: _Counts | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, Any]:
    """Parse every message of ``paths`` into ``pipeline``; a summary of what was read."""
    source = f"mailbox:{kind}"
    failed: list[str] = []
    kinds: Counter[str] = Counter()
    messages = events = best_effort = not_mail = 0
    for path in paths:
        try:
            for item in read_messages(path, max_bytes=max_bytes):
                ref = f"{item.file}#{item.position}" if item.position else item.file
                if not is_mail(item.data):  # the DSN parser would read events into anything
                    print(f"mailmon: {ref}: not an email (no header fields such as From, "
                          "Date or Received): refused", file=sys.stderr)  # fmt: skip
                    not_mail += 1
                    continue
                messages += 1
                report = parse(item.data, max_bytes=max_bytes)
                kinds[report.kind] += 1
                best_effort += report.best_effort
                for event in report_events(report, source, raw_ref=ref):
                    pipeline.put(event)
                    events += 1
        except OSError as exc:
            print(f"mailmon: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            failed.append(path)
        pipeline.flush()
    if metrics is not None:
        metrics.count_input(source, messages + not_mail, kinds["unknown"] + not_mail)
    return {
        "files": len(paths) - len(failed),
        "failed": failed,
        "messages": messages,
        "not_mail": not_mail,
        "by_kind": dict(kinds.most_common()),
        "best_effort": best_effort,
        "events": events,
    }
