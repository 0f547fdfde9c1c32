"""JSON request bodies and payload files, split into records for a source.

A body holds one JSON value, an array of them, or one per line (NDJSON).
:func:`split_records` yields each record decoded, or an :class:`Undecodable` saying why
a piece could not be (the source counts it as not understood and goes on).  Decoding
never recurses without bound: a value nested deeper than the decoder can go is
``nested too deeply``, not a crash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from monitor.collectors.source import NotUnderstood

__all__ = ["NOT_JSON", "TOO_DEEP", "Undecodable", "split_records"]

NOT_JSON = "not JSON"
TOO_DEEP = "nested too deeply"
_DECODER = json.JSONDecoder()  # holds no state between calls


class Undecodable(NotUnderstood):
    """A piece of a body that is not a JSON value (or is nested too deeply to decode)."""


def _decode(text: str, decoder: json.JSONDecoder, at: int = 0) -> tuple[Any, int]:
    """One JSON value from ``text`` at ``at``: (value, end), or Undecodable saying why not."""
    try:
        return decoder.raw_decode(text, at)
    except RecursionError:
        raise Undecodable(TOO_DEEP) from None
    except ValueError:
        raise Undecodable(NOT_JSON) from None


def split_records(text: str) -> Iterator[Any]:
    """Each record of a body: the decoded value, or an Undecodable saying why not."""
    decoder = _DECODER
    text = text.strip()
    if text.startswith("["):
        try:  # a well-formed array (nearly every body) in one call
            whole = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            if isinstance(whole, list):
                yield from whole
                return
        # An array, element by element: a bad element ends what can be found of it, the
        # elements before it stand.
        at = 1
        while True:
            while at < len(text) and text[at] in " \t\r\n,":
                at += 1
            if at >= len(text) or text[at] == "]":
                return
            try:
                value, at = _decode(text, decoder, at)
            except Undecodable as exc:
                yield exc
                return
            yield value
    if text.startswith("{"):
        try:  # one object, perhaps spread over several lines
            value, end = _decode(text, decoder)
        except Undecodable:
            pass
        else:
            if end == len(text):
                yield value
                return
    for line in text.splitlines():
        if line.strip():
            try:
                value, end = _decode(line.strip(), decoder)
                if end != len(line.strip()):
                    raise Undecodable(NOT_JSON)
            except Undecodable as exc:
                yield exc
                continue
            yield value
