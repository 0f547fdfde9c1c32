"""The sources of lines that ``mailmon ingest KIND`` and ``[[logs]] kind`` can name.

A kind is registered with a function that makes its source for one input, given what
the input tells (:class:`LineInput`)::

    register_line_source("ping", lambda given: Pings())

The built-in kinds are the MTA logs; a correlating kind (``stateful=True``) shares the
state of its log's writer between files and commands (``monitor.collectors.checkpoints``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from monitor.collectors.mta.exim import EximParser
from monitor.collectors.mta.kumomta import KumoParser
from monitor.collectors.mta.postfix import PostfixParser
from monitor.collectors.mta.postfix_state import QueueTable
from monitor.collectors.source import Source

__all__ = ["LineInput", "is_stateful", "line_kinds", "line_source", "register_line_source"]


@dataclass(frozen=True)
class LineInput:
    """What a line source may need to know of its input."""

    #: when the input was written (BSD syslog lines carry no year)
    reference_time: datetime | None = None
    #: the time zone of timestamps that carry none
    tz: str | tzinfo | None = None
    #: the state of the log's writer, shared by the sources of its files (stateful kinds)
    queues: QueueTable | None = None
    #: where that state is checkpointed
    state_prefix: str | None = None


@dataclass(frozen=True)
class _Kind:
    make: Callable[[LineInput], Source[str]]
    stateful: bool


_KINDS: dict[str, _Kind] = {}


def register_line_source(
    kind: str, make: Callable[[LineInput], Source[str]], *, stateful: bool = False
) -> None:
    """Make ``kind`` known to ``mailmon ingest`` and ``[[logs]]`` (a kind registered again
    is replaced)."""
    _KINDS[kind] = _Kind(make, stateful)


def line_kinds() -> tuple[str, ...]:
    """The registered kinds, built-in ones first."""
    return tuple(_KINDS)


def is_stateful(kind: str) -> bool:
    """Whether ``kind``'s sources share their writer's state (and checkpoint it)."""
    found = _KINDS.get(kind)
    return found is not None and found.stateful


def line_source(kind: str, given: LineInput | None = None) -> Source[str]:
    """The source of one input of ``kind``."""
    found = _KINDS.get(kind)
    if found is None:
        raise ValueError(f"unknown log kind {kind!r}; known: {', '.join(_KINDS)}")
    return found.make(given or LineInput())


register_line_source("postfix", lambda given: PostfixParser(
    "postfix", reference_time=given.reference_time, tz=given.tz, queues=given.queues,
    state_prefix=given.state_prefix,
), stateful=True)  # fmt: skip
register_line_source("exim", lambda given: EximParser(
    "exim", reference_time=given.reference_time, tz=given.tz, queues=given.queues,
    state_prefix=given.state_prefix,
), stateful=True)  # fmt: skip
register_line_source("kumomta", lambda given: KumoParser("kumomta"))


def _postfix_headers(given: LineInput) -> Source[str]:
    from monitor.collectors.syslog import SyslogFramer
    from monitor.threads.headers import PostfixHeaderSource

    return PostfixHeaderSource(SyslogFramer(reference_time=given.reference_time, tz=given.tz))


register_line_source("postfix-headers", _postfix_headers)
