"""The event model: deterministic ids, UTC times, the one vocabulary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from factories import T0, ev

from monitor.model import (
    FINAL_TYPES,
    Event,
    EventType,
    domain_of,
    event_id,
    identity,
    second_prefix,
)


def test_id_is_stable_across_instances() -> None:
    """Two events built from the same facts have the same id."""
    assert ev("delivered", 1).id == ev("delivered", 1).id


def test_id_is_a_known_value() -> None:
    """The id does not depend on process state (hash seeds): it is a fixed function."""
    assert event_id("postfix:mx1", "delivered", "x") == event_id("postfix:mx1", "delivered", "x")
    assert ev("delivered").id == "69a802a0fc42c1379ba87f5688bc0314"


def test_identity_hashes_what_event_id_hashes() -> None:
    """identity() hashes the text event_id() would: None as "", zeros and "" kept apart."""
    cases = [
        ("postfix:mx", "deferred", "1709546400.250000", "1A2B", "m@x", None, "r@x", 450,
         "4.2.0", "said: 450 later", "mx[192.0.2.1]:25", 1.5, "c[192.0.2.2]"),
        ("ses", "bounced", "0.000000", "", "", "", "", 0, "", "", "", 0.0, ""),
        ("postfix:mx", "bounced", "-1.500000", None, None, None, None, None, None, None,
         None, None, None),
        ("postfix:mx", "bounced", "1.000000", "q", "m\udcff", "p", "caf\udce9@x", 550,
         "5.1.1", "550 unknown", "r", 12.0, None),
    ]  # fmt: skip
    for fields in cases:
        source, kind, seconds, *parts = fields
        expected = second_prefix(seconds) + event_id(source, kind, seconds, *parts)[:24]
        assert identity(*fields) == expected  # type: ignore[arg-type]


def test_id_ignores_raw_reference_and_enrichment() -> None:
    """Reading a line from a rotated file or adding the provider keeps the id."""
    a = ev("bounced", raw_ref="mail.log:10")
    b = ev("bounced", raw_ref="mail.log.1:10")
    assert a.id == b.id
    assert a.replace(provider="google", reason="userunknown").id == a.id


def test_id_differs_for_different_facts() -> None:
    """A different time, recipient, type or source gives a different id."""
    base = ev("deferred", 1)
    assert base.id != ev("deferred", 2).id
    assert base.id != ev("deferred", 1, recipient="bob@gmail.com").id
    assert base.id != ev("bounced", 1).id
    assert base.id != ev("deferred", 1, source="postfix:mx2").id


def test_times_are_utc() -> None:
    """An aware time in another zone is converted to UTC; a naive one is taken as UTC."""
    plus_two = timezone(timedelta(hours=2))
    e = Event(EventType.DELIVERED, datetime(2026, 3, 4, 12, 0, tzinfo=plus_two), "postfix:mx1")
    assert e.occurred_at == T0 and e.occurred_at.tzinfo == UTC
    naive = Event(EventType.DELIVERED, datetime(2026, 3, 4, 10, 0), "postfix:mx1")
    assert naive.occurred_at == T0 and naive.id == e.id


def test_recipient_domain_is_derived_lower_case() -> None:
    """The recipient domain is filled from the address, lower-cased."""
    assert ev("delivered", recipient="Bob@GMail.COM").recipient_domain == "gmail.com"
    assert domain_of("no-at-sign") is None and domain_of(None) is None


def test_final_types() -> None:
    """Deferred and submitted are not final; delivered, bounced, expired and rejected are."""
    assert EventType.DEFERRED not in FINAL_TYPES and EventType.SUBMITTED not in FINAL_TYPES
    assert {EventType.DELIVERED, EventType.BOUNCED, EventType.EXPIRED} <= FINAL_TYPES


def test_to_dict_is_json_ready() -> None:
    """to_dict gives strings for times and enums, lists for tags."""
    d = ev("delivered", tags=("ndr",)).to_dict()
    assert d["occurred_at"] == "2026-03-04T10:00:00Z"
    assert d["type"] == "delivered" and d["tags"] == ["ndr"]


def test_two_attempts_in_one_second_stay_two() -> None:
    """Two deferrals of one recipient in the same second with the same reply differ by delay."""
    first = ev("deferred", 1, reply_code=450, delay_seconds=0.03, relay="mx[192.0.2.1]:25")
    again = ev("deferred", 1, reply_code=450, delay_seconds=5.2, relay="mx[192.0.2.1]:25")
    assert first.id != again.id


def test_ids_sort_by_time() -> None:
    """An event id starts with its UNIX second, so later events sort after earlier ones."""
    assert ev("delivered", 0).id[:8] == f"{int(T0.timestamp()):08x}"
    assert ev("delivered", 0).id < ev("delivered", 2).id


def test_the_same_refusal_of_two_clients_stays_two() -> None:
    """Two NOQUEUE rejects of one recipient in one second from different clients differ."""
    a = ev("rejected", 1, queue_id=None, message_id=None, reply_code=554, client="a[192.0.2.1]")
    b = ev("rejected", 1, queue_id=None, message_id=None, reply_code=554, client="b[192.0.2.2]")
    assert a.id != b.id
