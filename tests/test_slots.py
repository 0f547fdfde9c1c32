"""The C helpers that set and read an Event's slots in one call (monitor/slots.py).

They must give exactly what the descriptors give: the events the Postfix parser makes
and the wire tuples the store's writer process receives (tests/test_native.py compares
whole parses and stores with the source modules; these pin the helpers themselves).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import os
import random
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import monitor._slots as c_slots
import pytest
from conftest import CORPORA
from factories import generated_log

from monitor import model, native, slots
from monitor.collectors.mta import postfix_events
from monitor.collectors.mta.postfix import PostfixParser
from monitor.model import Event, EventType, Provider
from monitor.store import wire

FIELDS = [f.name for f in dataclasses.fields(Event)]
WIRE_NAMES = ["occurred_at" if f == "timestamp" else f for f in wire.WireEvent._fields]
WIRE_KINDS = [
    slots.TIMESTAMP if f == "timestamp"
    else slots.PLAIN if f == "type"
    else slots.PLAIN_OR_SAME if f == "provider"
    else slots.AS_IS
    for f in wire.WireEvent._fields
]  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_log(tmp_path_factory.mktemp("slots") / "gen.log", 5_000, seed=11)


def _corpus_events(generated: Path) -> list[Event]:
    """What the parser makes of the corpora's Postfix logs and a generated one."""
    parser = PostfixParser(reference_time=datetime(2024, 3, 10, tzinfo=UTC), tz="UTC")
    events: list[Event] = []
    logs = sorted(
        p for p in (CORPORA / "mta-logs").iterdir() if "postfix" in p.name and p.suffix == ".log"
    )
    for log in [*logs, generated]:
        with open(log, encoding="utf-8", errors="surrogateescape") as f:
            for n, line in enumerate(f, 1):
                events.extend(parser.feed(line, f"{log.name}:{n}"))
    assert len(events) > 2_000
    return events


def _enriched(events: list[Event]) -> list[Event]:
    """The events with the fields enrichment fills, in every shape the writer meets."""
    shapes = [
        {"provider": Provider.GOOGLE, "reason": "mailbox_full", "hard": False, "blame": "recipient"},
        {"provider": "other"},  # a plain str equal to a Provider value
        {"provider": "not-a-provider", "hard": True, "tags": ("a", "b")},
        {"provider": None, "hard": None},
    ]  # fmt: skip
    out = []
    for i, event in enumerate(events):
        for name, value in shapes[i % len(shapes)].items():
            object.__setattr__(event, name, value)
        out.append(event)
    return out


def test_the_helpers_are_in_use_with_the_compiled_modules() -> None:
    if os.environ.get(native.PURE_ENV, "") not in ("", "0"):
        assert not slots.available() and postfix_events._FILL is None and wire._C_WIRE is None
        assert model.identity_after is model.plain_identity_after
        assert model.event_id is model.plain_event_id
        return
    assert native.ACTIVE, native.REASON
    assert slots.available()
    assert isinstance(postfix_events._FILL, c_slots.Setter)
    assert isinstance(wire._C_WIRE, c_slots.Getter)
    assert model.identity_after is c_slots.identity
    assert model.event_id is c_slots.event_id


def test_a_setter_makes_the_same_event_as_the_descriptors(generated: Path) -> None:
    fill = c_slots.Setter(Event, FIELDS)
    for event in _corpus_events(generated):
        made = object.__new__(Event)
        fill(made, *(getattr(event, name) for name in FIELDS))
        assert made == event and made.id == event.id
        assert dataclasses.astuple(made) == dataclasses.astuple(event)


def test_a_getter_reads_the_wire_tuple_python_reads(generated: Path) -> None:
    get = c_slots.Getter(Event, WIRE_NAMES, WIRE_KINDS, wire._PLAIN)
    events = _enriched(_corpus_events(generated))
    for event in events:
        got = get(event)
        assert got == wire.plain_wire(event) == wire.to_wire(event)
        # the same types too: marshal carries only plain str, never an enum member
        assert [type(v) for v in got] == [type(v) for v in wire.plain_wire(event)]
    assert {type(get(e)[wire.PROVIDER]) for e in events} == {str, type(None)}


def test_a_getter_fails_as_python_does(generated: Path) -> None:
    get = c_slots.Getter(Event, WIRE_NAMES, WIRE_KINDS, wire._PLAIN)
    event = _corpus_events(generated)[0]
    object.__setattr__(event, "type", "no-such-type")  # _PLAIN[...] raises KeyError
    with pytest.raises(KeyError):
        wire.plain_wire(event)
    with pytest.raises(KeyError):
        get(event)
    unset = object.__new__(Event)  # no field set: AttributeError, as reading one raises
    with pytest.raises(AttributeError):
        wire.plain_wire(unset)
    with pytest.raises(AttributeError):
        get(unset)
    with pytest.raises(TypeError):
        get(("not", "an", "event"))
    object.__setattr__(event, "type", EventType.DELIVERED)
    object.__setattr__(event, "occurred_at", "not a time")  # no .timestamp()
    with pytest.raises(AttributeError):
        get(event)


def test_helpers_refuse_what_is_not_a_slot_field() -> None:
    with pytest.raises(TypeError, match="is_final"):
        c_slots.Setter(Event, ["type", "is_final"])  # a property
    with pytest.raises(AttributeError):
        c_slots.Setter(Event, ["no_such_field"])
    with pytest.raises(ValueError):
        c_slots.Getter(Event, ["type"], [9], {})
    with pytest.raises(ValueError):
        c_slots.Getter(Event, ["type", "id"], [0], {})
    fill = c_slots.Setter(Event, ["type", "id"])
    with pytest.raises(TypeError):
        fill(object.__new__(Event), EventType.DELIVERED)  # one value short
    with pytest.raises(TypeError):
        fill(("a tuple",), EventType.DELIVERED, "x")
    with pytest.raises(TypeError):
        fill(object.__new__(Event), EventType.DELIVERED, id="x")


def test_a_setter_keeps_references_counted() -> None:
    fill = c_slots.Setter(Event, ["source", "raw_ref"])
    first, second = object(), object()
    before = sys.getrefcount(first), sys.getrefcount(second)
    event = object.__new__(Event)
    for _ in range(1000):
        fill(event, first, second)
        fill(event, second, first)
    assert (sys.getrefcount(first), sys.getrefcount(second)) == (before[0] + 1, before[1] + 1)
    del event
    gc.collect()
    assert (sys.getrefcount(first), sys.getrefcount(second)) == before


# -- the event id -------------------------------------------------------------------------


def _random_part(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.2:
        return None
    if roll < 0.3:
        return rng.randrange(-(10**6), 10**6)
    if roll < 0.4:
        return rng.random() * 1000
    if roll < 0.5:  # non-ASCII, astral, and undecodable bytes kept as surrogates
        return "".join(rng.choice(["\udc80", "\udcff", "é", "中", "\U0001f600", "a"])
                       for _ in range(rng.randrange(6)))  # fmt: skip
    length = rng.choice([0, 1, 5, 40, 126, 127, 128, 129, 255, 256, 300, 1000])
    return "".join(chr(rng.randrange(32, 127)) for _ in range(length))


def test_the_id_is_the_one_python_makes() -> None:
    rng = random.Random(23)
    for _ in range(5_000):
        prefix = f"{rng.randrange(2**32):08x}"
        fields = [_random_part(rng) for _ in range(13)]  # identity_after's 13 after the prefix
        assert c_slots.identity(prefix, *fields) == model.plain_identity_after(prefix, *fields)
        parts = fields[: rng.randrange(0, 14)]  # any number: the text is the parts joined
        text = "\x1f".join("" if p is None and i > 2 else str(p) for i, p in enumerate(parts))
        assert c_slots.identity(prefix, *parts) == prefix + model._digest(text)[:24]


def test_the_id_hashes_every_length_as_blake2b_does() -> None:
    """Across the 128-byte block boundaries: BLAKE2b-128 of the text, as hashlib gives it."""
    for length in range(0, 700):
        text = "".join(chr(97 + i % 26) for i in range(length))
        digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        assert c_slots.identity("", text) == digest[:24], length
        assert c_slots.identity("p", text[: length // 2], text[length // 2 :]) == "p" + \
            hashlib.blake2b(f"{text[: length // 2]}\x1f{text[length // 2 :]}".encode(),
                            digest_size=16).hexdigest()[:24]  # fmt: skip


def test_the_ids_of_parsed_events_are_alike(generated: Path) -> None:
    for event in _corpus_events(generated):
        assert event.id == event.identity()  # the parser's id: made by identity_after
        seconds = f"{event.occurred_at.timestamp():.6f}"
        parts = (
            event.source, event.type.value, seconds, event.queue_id, event.message_id,
            event.provider_message_id, event.recipient, event.reply_code,
            event.enhanced_status, event.diagnostic, event.relay, event.delay_seconds,
            event.client,
        )  # fmt: skip
        prefix = model.second_prefix(seconds)
        assert c_slots.identity(prefix, *parts) == model.plain_identity_after(prefix, *parts)
        assert event.id == model.plain_identity_after(prefix, *parts)


def test_the_id_fails_as_python_does() -> None:
    with pytest.raises(UnicodeEncodeError):  # a lone high surrogate: not even surrogateescape
        model.plain_identity_after("", *(["\ud800"] + [None] * 12))
    with pytest.raises(UnicodeEncodeError):
        c_slots.identity("", "\ud800")
    with pytest.raises(TypeError):
        c_slots.identity()
    with pytest.raises(TypeError):
        c_slots.identity(None, "x")

    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no text")

    with pytest.raises(ValueError, match="no text"):
        c_slots.identity("", Unprintable())


def test_the_event_id_is_the_one_python_makes() -> None:
    """model.event_id: the delivery keys and the ids of other sources' events."""
    rng = random.Random(29)
    for _ in range(5_000):
        source, kind = (str(_random_part(rng) or "") for _ in range(2))
        parts = [_random_part(rng) for _ in range(rng.randrange(0, 8))]
        assert c_slots.event_id(source, kind, *parts) == model.plain_event_id(source, kind, *parts)
    assert c_slots.event_id("msg", "", "<a@b>", "x@y") == model.plain_event_id("msg", "", "<a@b>", "x@y")
    class Shouting(str):
        def __str__(self) -> str:
            return self.upper()

    # join takes a str subclass's text as it is; str() of a part asks it
    odd = (Shouting("src"), Shouting("kind"), Shouting("part"), None, 7)
    assert c_slots.event_id(*odd) == model.plain_event_id(*odd)
    # identity_after's f-string formats every one of its fields (str() for a subclass)
    fields = [Shouting("f") for _ in range(13)]
    assert c_slots.identity("p", *fields) == model.plain_identity_after("p", *fields)
    for bad in [(None, "k"), ("s", None), ("s",), (1, "k")]:  # join refuses them too
        with pytest.raises(TypeError):
            model.plain_event_id(*bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            c_slots.event_id(*bad)


# -- timestamps --------------------------------------------------------------------------


def test_the_timestamp_is_the_one_python_makes() -> None:
    """Worked out for a datetime in UTC, asked of Python for any other: the same float."""
    rng = random.Random(31)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for _ in range(50_000):
        moment = epoch + timedelta(seconds=rng.uniform(-6e10, 6e10), microseconds=rng.randrange(10**6))
        assert c_slots.timestamp(moment) == moment.timestamp(), moment
    others = [
        datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 3, 1, 12, tzinfo=ZoneInfo("UTC")), datetime(2026, 3, 1, 12),
        datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC),
    ]  # fmt: skip
    for moment in others:
        assert c_slots.timestamp(moment) == moment.timestamp(), moment
    with pytest.raises(AttributeError):
        c_slots.timestamp("2026-03-01")


def test_a_getter_gives_the_timestamp_of_any_datetime(generated: Path) -> None:
    get = c_slots.Getter(Event, WIRE_NAMES, WIRE_KINDS, wire._PLAIN)
    event = _corpus_events(generated)[0]
    for zone in (UTC, timezone(timedelta(hours=-5)), ZoneInfo("Europe/Paris")):
        object.__setattr__(event, "occurred_at", event.occurred_at.astimezone(zone))
        assert get(event) == wire.plain_wire(event)
