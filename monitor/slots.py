"""An event's fields set, or read, in one call, and its id: the C helpers of
``monitor/_slots.c``.

:class:`~monitor.model.Event` keeps its fields in ``__slots__``.  Python sets and reads
a slot through its descriptor, one call each: the Postfix parser's ``EventMaker`` sets 27
per event and the store's :func:`~monitor.store.wire.to_wire` reads 27 (1.35 and 0.98 us
an event; 0.23 and 0.43 us in one call to C, on the benchmark's machine).  The C helpers
find each field's offset once, from its descriptor, and then do what that descriptor does.
:func:`function` gives the C forms of :func:`monitor.model.identity_after` and
:func:`~monitor.model.event_id`, which gather the parts' UTF-8 in one buffer for hashlib's
BLAKE2b instead of an f-string, a str and its bytes: 10.6 against 15.8 thousand
instructions an event's id; and ``timestamp``,
``dt.timestamp()`` for a datetime in UTC without the subtraction Python makes (0.9
against 2.1 thousand instructions a call from Python, less from the getter: the pipeline
and the wire tuple ask it per event).

They are built with the compiled modules (``monitor/native.py``) and used when those are:
:func:`setter`, :func:`getter` and :func:`function` return None otherwise, and their
callers keep the pure path, which gives the same events, ids and rows
(``tests/test_native.py``, ``tests/test_slots.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monitor import native

__all__ = [
    "AS_IS",
    "PLAIN",
    "PLAIN_OR_SAME",
    "TIMESTAMP",
    "available",
    "function",
    "getter",
    "setter",
]

#: What a getter does with a field: hands it out as it is, calls its ``timestamp()``,
#: maps it through ``plain`` (KeyError when missing), or maps it where found and not None.
AS_IS, TIMESTAMP, PLAIN, PLAIN_OR_SAME = 0, 1, 2, 3


def available() -> bool:
    """Whether the C helpers are built and in use (with the compiled modules)."""
    if not native.ACTIVE:
        return False
    try:
        import monitor._slots  # noqa: F401
    except ImportError:
        return False
    return True


def setter(cls: type, names: Sequence[str]) -> Callable[..., None] | None:
    """``set(obj, *values)`` setting ``cls``'s slot fields ``names`` in order, or None."""
    if not available():
        return None
    from monitor._slots import Setter

    made: Callable[..., None] = Setter(cls, tuple(names))
    return made


def getter(
    cls: type, names: Sequence[str], kinds: Sequence[int], plain: Mapping[Any, Any]
) -> Callable[[Any], tuple[Any, ...]] | None:
    """``get(obj)``: the tuple of ``cls``'s slot fields ``names``, each as its kind says
    (:data:`AS_IS`, ...), or None."""
    if not available():
        return None
    from monitor._slots import Getter

    made: Callable[[Any], tuple[Any, ...]] = Getter(cls, tuple(names), tuple(kinds), dict(plain))
    return made


def function(name: str) -> Callable[..., Any] | None:
    """The C function ``name``, or None: ``identity`` and ``event_id`` make the ids of
    :func:`monitor.model.plain_identity_after` and :func:`~monitor.model.plain_event_id`
    (the parts' UTF-8 gathered in one buffer, hashed by hashlib's BLAKE2b); ``timestamp(dt)`` is
    ``dt.timestamp()``, worked out in C for a datetime in UTC."""
    if not available():
        return None
    import monitor._slots

    found: Callable[..., Any] = getattr(monitor._slots, name)
    return found
