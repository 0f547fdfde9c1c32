"""Rollup windows carry submitted, engagement, hard/soft bounces and failures by blame."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from factories import T0, ev

from monitor.cli import main
from monitor.model import Event
from monitor.pipeline import Pipeline
from monitor.rollup import RejectingDetector, RollupEngine, list_incidents
from monitor.rollup.views import SENDER_DOMAINS
from monitor.rollup.windows import WindowReader, window_counts
from monitor.store import Store


def _message(n: int, minute: float, outcome: str, **fields: object) -> list[Event]:
    """One recipient at example.org: submitted at ``minute``, then ``outcome`` a minute later."""
    common = {"recipient": f"u{n}@example.org", "queue_id": f"Q{n:06d}",
              "message_id": f"m{n}@app.example", "provider": "other"}  # fmt: skip
    return [ev("submitted", minute, **common), ev(outcome, minute + 1, **common, **fields)]


def _traffic() -> list[Event]:
    """Ten minutes at example.org: deliveries with opens, clicks and a complaint, and failures
    of every kind, classified by hand (the pipeline keeps what the collector said)."""
    out: list[Event] = []
    n = 0
    for minute in range(10):
        for _ in range(6):
            n += 1
            out += _message(n, minute, "delivered")
        out.append(ev("opened", minute + 2, recipient=f"u{n}@example.org", queue_id=f"Q{n:06d}",
                      message_id=f"m{n}@app.example", provider="other"))  # fmt: skip
        n += 1
        out += _message(n, minute, "bounced", reason="userunknown", hard=True, blame="recipient",
                        reply_code=550, enhanced_status="5.1.1", diagnostic="550 5.1.1 no such user")  # fmt: skip
        n += 1
        out += _message(n, minute, "bounced", reason="spamdetected", hard=False, blame="content",
                        reply_code=550, enhanced_status="5.7.1", diagnostic="550 5.7.1 spam")  # fmt: skip
        n += 1
        out += _message(n, minute, "deferred", reason="blocked", hard=False, blame="reputation",
                        reply_code=421, enhanced_status="4.7.0", diagnostic="421 4.7.0 blocked")  # fmt: skip
        n += 1
        out += _message(n, minute, "deferred", reason="blocked", hard=False, blame="reputation",
                        reply_code=421, enhanced_status="4.7.0", diagnostic="421 4.7.0 blocked")  # fmt: skip
    out.append(ev("clicked", 5, recipient="u1@example.org", queue_id="Q000001",
                  message_id="m1@app.example", provider="other"))  # fmt: skip
    out.append(ev("complained", 6, recipient="u2@example.org", message_id="m2@app.example",
                  source="arf", provider="other"))  # fmt: skip
    # A clean morning two days before: the baseline the failures are judged against.
    for i in range(1200):
        minute = -2 * 1440 + i / 10
        out.append(ev("delivered", minute, recipient=f"b{i}@example.org", queue_id=f"B{i:06d}",
                      message_id=f"b{i}@app.example", provider="other"))  # fmt: skip
    # A bounce the classifier could not place counts as bounced, neither hard nor soft.
    out += _message(n + 1, 3, "bounced", reason="undefined", reply_code=550, diagnostic="550 ?")
    return out


@pytest.fixture
def store(db_url: str) -> Store:
    store = Store.open(db_url)
    pipeline = Pipeline(store, batch_size=50)
    pipeline.put_many(_traffic())
    pipeline.close()
    yield store  # type: ignore[misc]
    store.close()


def test_windows_count_submitted_engagement_hard_soft_and_blame(store: Store) -> None:
    """Events fed through the pipeline show up in the 1 h window, each in its own field."""
    at = (T0 + timedelta(minutes=20)).timestamp()
    with store.engine.connect() as conn:
        hour = window_counts(conn, at)[("other", "example.org")]["1h"]
    assert hour.submitted == 101
    assert (hour.delivered, hour.opened, hour.clicked, hour.complained) == (60, 10, 1, 1)
    assert (hour.bounced, hour.bounced_hard, hour.bounced_soft) == (21, 10, 10)
    assert hour.deferred == 20
    assert (hour.blame_recipient, hour.blame_content, hour.blame_reputation) == (10, 10, 20)
    data = hour.as_dict()
    assert data["failures_by_blame"] == {"content": 10, "recipient": 10, "reputation": 20}
    assert data["delivery_rate"] == pytest.approx(60 / 81, abs=1e-6)
    assert "blame_reputation" not in data


def test_sender_side_windows_split_bounces_and_blame_too(store: Store) -> None:
    """app.example sends all the traffic: its sending-domain windows hold the same hard/soft
    and blame counts as example.org's (sender_counters, schema 8), the reader's too."""
    at = (T0 + timedelta(minutes=20)).timestamp()
    with store.engine.connect() as conn:
        sender = window_counts(conn, at, SENDER_DOMAINS)[("other", "app.example")]["1h"]
        recipient = window_counts(conn, at)[("other", "example.org")]["1h"]
        assert (sender.bounced, sender.bounced_hard, sender.bounced_soft) == (21, 10, 10)
        assert (sender.blame_recipient, sender.blame_content, sender.blame_reputation) == (
            10, 10, 20,
        )  # fmt: skip
        assert sender.as_dict()["failures_by_blame"] == recipient.as_dict()["failures_by_blame"]
        reader = WindowReader(view=SENDER_DOMAINS)
        for minutes in (3, 14, 70):
            moment = (T0 + timedelta(minutes=minutes)).timestamp()
            assert reader.read(conn, moment) == window_counts(conn, moment, SENDER_DOMAINS)


def test_reader_agrees_with_window_counts_on_the_new_fields(store: Store) -> None:
    """The incremental reader gives what one full scan gives, the failure fields too."""
    with store.engine.connect() as conn:
        reader = WindowReader()
        for minutes in (3, 8, 14, 70, 8):
            at = (T0 + timedelta(minutes=minutes)).timestamp()
            table = reader.read(conn, at)
            assert table == window_counts(conn, at)
            assert table[("other", "example.org")]["24h"].bounced_hard == (minutes > 1) * min(
                minutes - 1, 10
            )


def test_incident_evidence_has_the_hard_soft_and_blame_breakdown(
    store: Store, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rejecting incident's evidence splits its failures by hard/soft, blame and reason,
    in the store, in `mailmon rollup --json` and in `mailmon incidents --json`."""
    at = T0 + timedelta(minutes=10)
    detector = RejectingDetector(min_attempts=20)
    result = RollupEngine(store, detector).evaluate(at.timestamp())
    assert result.incidents_opened == [("domain_rejecting", "other", "example.org")]
    with store.engine.connect() as conn:
        (row,) = list_incidents(conn)
    failures = row["evidence"]["failures"]
    # The 5 minutes before `at`: 5 x (1 hard + 1 soft bounce + 2 soft deferrals).
    assert failures["hard"]["hard"] == 5
    assert failures["hard"]["soft"] == 15
    assert failures["blame"]["reputation"] == 10
    assert failures["blame"]["recipient"] == 5
    top = failures["reasons"][0]
    assert (top["outcome"], top["reason"], top["hard"], top["blame"], top["count"]) == (
        "deferred", "blocked", "soft", "reputation", 10,
    )  # fmt: skip
    assert row["evidence"]["windows"]["5m"]["bounced_hard"] == 5
    assert row["evidence"]["top_replies"]

    assert main(["rollup", "--db", db_url, "--at", (at + timedelta(minutes=1)).isoformat(),
                 "--json"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["incidents", "--db", db_url, "--kind", "domain_rejecting", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["evidence"]["failures"] == failures


def test_rollup_json_carries_the_evidence_of_what_it_opened(
    store: Store, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mailmon rollup --json` lists each opened incident with its evidence."""
    at = T0 + timedelta(minutes=10)
    assert main(["rollup", "--db", db_url, "--at", at.isoformat(), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    opened = {(e["kind"], e["domain"]): e["evidence"] for e in run["evidence"]}
    assert [e[:1] + e[2:] for e in run["opened"]] == [[k, d] for k, d in opened]
    evidence = opened[("domain_rejecting", "example.org")]
    assert evidence["failures"]["blame"]["reputation"] == 10
    assert evidence["windows"]["5m"]["submitted"] == 50


def test_incidents_table_shows_hard_soft_and_blame(
    store: Store, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mailmon incidents` prints the hard/soft split and the top blame of each incident."""
    RollupEngine(store, RejectingDetector()).evaluate((T0 + timedelta(minutes=10)).timestamp())
    assert main(["incidents", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "hard 5 soft 15 reputation" in out
