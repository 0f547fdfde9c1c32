"""MTA log collectors: one parser per MTA, all with the same surface.

``PARSERS[kind](kind, reference_time=..., tz=...)`` gives an object whose
``feed(line, ref)`` returns the line's events and whose ``stats`` counts lines by fate.
What the parsers share lives in :mod:`.base` (counters, result codes, the queue-id
skeleton) and :mod:`.smtp` (addresses, reply codes).
"""

from __future__ import annotations

from typing import Any

from monitor.collectors.mta.exim import EximParser
from monitor.collectors.mta.kumomta import KumoParser
from monitor.collectors.mta.postfix import PostfixParser

__all__ = ["PARSERS"]

PARSERS: dict[str, Any] = {
    "postfix": PostfixParser,
    "exim": EximParser,
    "kumomta": KumoParser,
}
