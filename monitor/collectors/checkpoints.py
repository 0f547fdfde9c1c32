"""Checkpoint keys of the logs a process reads, and the state of the logs' writers.

A followed file's position is kept under ``INSTANCE:KIND:/abs/path``: two instances on
two hosts that follow the same path (``/var/log/mail.log``) into one database never
share a key.  What a log's writer said about messages still in flight (the parsers'
queue-id state) is kept under ``INSTANCE:KIND\\x1fstate\\x1f`` + its host, MTA instance
and queue id: one state per writer, whichever of its files, rotated or not, carries a
message's lines, and whichever command (``ingest`` or ``serve``) reads them.
"""

from __future__ import annotations

import os
from typing import Any

from monitor.collectors.mta.postfix_state import QueueTable

__all__ = [
    "file_key",
    "legacy_file_key",
    "restore_writer_state",
    "state_changes",
    "state_prefix",
]

#: The bounds of a writer's state (as each parser's own defaults).
MAX_QUEUE_IDS = 200_000
MAX_AGE_SECONDS = 7 * 86400


def file_key(instance: str, kind: str, path: str) -> str:
    """The checkpoint key of a followed file."""
    return f"{instance}:{kind}:{os.path.abspath(path)}"


def legacy_file_key(kind: str, path: str) -> str:
    """The key a followed file had before instances were named (taken over when found)."""
    return f"{kind}:{os.path.abspath(path)}"


def state_prefix(instance: str, kind: str) -> str:
    """Where the state of the logs of ``kind`` that ``instance`` reads is kept."""
    return f"{instance}:{kind}\x1fstate\x1f"


def restore_writer_state(store: Any, instance: str, kind: str) -> QueueTable:
    """The saved queue-id state of ``kind`` logs read by ``instance``, tracking changes."""
    table = QueueTable(MAX_QUEUE_IDS, MAX_AGE_SECONDS)
    table.restore(store.checkpoints_under(state_prefix(instance, kind)))
    table.changes()  # starts the tracking: what is restored is not a change
    return table


def state_changes(table: QueueTable, instance: str, kind: str) -> dict[str, Any]:
    """The table's changes since the last call, under their checkpoint keys."""
    prefix = state_prefix(instance, kind)
    return {prefix + k: v for k, v in table.changes().items()}
