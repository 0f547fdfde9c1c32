"""KumoMTA log records: each record type to the right event; bad records counted, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

from golden import check_jsonl

from monitor.collectors.mta.kumomta import KumoParser

DATA = Path(__file__).parent / "data" / "kumomta"


def _parse(lines: list[str]) -> tuple[list, KumoParser]:
    parser = KumoParser()
    events = [e for n, line in enumerate(lines, 1) for e in parser.feed(line, f"records:{n}")]
    return events, parser


def test_golden_records() -> None:
    """Each record type of the fixture becomes the expected event (Delay records change nothing)."""
    events, parser = _parse((DATA / "records.jsonl").read_text().splitlines())
    check_jsonl(DATA / "records.events.jsonl", [e.to_dict() for e in events])
    assert [e.type.value for e in events] == [
        "submitted", "deferred", "delivered", "bounced", "expired", "complained", "dropped"]
    assert parser.stats.ignored == 1 and not parser.stats.unparsed


def test_fields_of_a_delivery() -> None:
    """A Delivery carries reply, enhanced status, relay, sending IP, delay and the Message-ID."""
    events, _ = _parse((DATA / "records.jsonl").read_text().splitlines())
    delivered = events[2]
    assert delivered.recipient == "alice@gmail.com" and delivered.message_id == "r-1001@shop.example"
    assert (delivered.reply_code, delivered.enhanced_status) == (250, "2.0.0")
    assert delivered.relay == "gmail-smtp-in.l.google.com[142.251.2.27]"
    assert delivered.sending_ip == "203.0.113.7" and delivered.delay_seconds == 600.0
    assert events[1].enhanced_status == "4.7.28" and events[1].attempt == 1
    assert events[5].recipient == "dave@aol.com"  # the complaint names the original recipient


def test_bad_records_are_counted_and_neighbours_kept() -> None:
    """Junk, wrong JSON types, unknown record types and bad times are counted; good lines still parse."""
    good = (DATA / "records.jsonl").read_text().splitlines()[2]
    junk = ["{not json", "[1, 2]", json.dumps({"type": "Nope", "timestamp": 1}),
            json.dumps({"type": "Delivery", "timestamp": "yesterday"}), "\x00\xff", "x" * 1_000_000]
    events, parser = _parse([junk[0], good, *junk[1:], good])
    assert len(events) == 2 and parser.stats.unparsed["record"] == len(junk)
