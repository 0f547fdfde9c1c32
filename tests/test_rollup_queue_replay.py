"""Queue age on replay: an old log ingested and replayed is judged as of the log's time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.rollup import QueueAgeDetector, RollupEngine, list_incidents
from monitor.store import Store

START = datetime(2026, 3, 4, 10, tzinfo=UTC)
SLOW = "421 4.7.0 Try again later, too many messages from your IP"


def _log(messages: int = 25) -> str:
    """A batch to slow.example at 10:00, deferred every hour (rate limited) and delivered at
    16:00: six hours in the queue."""
    lines = []

    def line(at: datetime, text: str) -> None:
        lines.append(f"{at.isoformat()} mx1 {text}")

    for i in range(messages):
        qid = f"{0xA0000 + i:X}"
        line(START, f"postfix/cleanup[101]: {qid}: message-id=<m{i}@app.example>")
        line(START, f"postfix/qmgr[102]: {qid}: from=<noreply@app.example>, size=900, nrcpt=1 "
                    "(queue active)")  # fmt: skip
        for hour in range(6):
            at = START + timedelta(hours=hour, seconds=2)
            line(at, f"postfix/smtp[103]: {qid}: to=<u{i}@slow.example>, "
                     f"relay=mx.slow.example[192.0.2.7]:25, delay={hour * 3600 + 2}, "
                     "delays=0/0/1/1, dsn=4.7.0, status=deferred (host mx.slow.example"
                     f"[192.0.2.7] said: {SLOW} (in reply to MAIL FROM command))")  # fmt: skip
        done = START + timedelta(hours=6, seconds=2)
        line(done, f"postfix/smtp[103]: {qid}: to=<u{i}@slow.example>, "
                   "relay=mx.slow.example[192.0.2.7]:25, delay=21602, delays=21600/0/1/1, "
                   "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)")  # fmt: skip
        line(done, f"postfix/qmgr[102]: {qid}: removed")
    lines.sort(key=lambda text: text[:25])  # one log in time order, each message's in its own
    return "\n".join(lines) + "\n"


def test_replay_after_ingest_judges_queue_age_as_of_the_log(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`mailmon ingest` of a day-old log, then `mailmon rollup --from --to`: the batch stuck
    from 14:00 (four hours after its first attempt) opens a queue_age incident that closes
    once it is delivered, though every message is delivered by the time of the replay."""
    monkeypatch.setenv("MAILMON_RESOLVE_MX", "0")
    log = tmp_path / "mail.log"
    log.write_text(_log())
    assert main(["ingest", "postfix", str(log), "--db", db_url, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["rollup", "--db", db_url, "--from", START.isoformat(),
                 "--to", (START + timedelta(hours=7)).isoformat(), "--step", "30m",
                 "--json"]) == 0  # fmt: skip
    runs = json.loads(capsys.readouterr().out)
    opened = [(r["at"], k) for r in runs for k in r["opened"] if k[0] == "queue_age"]
    closed = [(r["at"], k) for r in runs for k in r["closed"] if k[0] == "queue_age"]
    key = ["queue_age", "other", "slow.example"]
    assert opened == [((START + timedelta(hours=4, minutes=30)).isoformat(), key)]
    assert closed == [((START + timedelta(hours=6, minutes=30)).isoformat(), key)]
    with Store.open(db_url) as store, store.engine.connect() as conn:
        (incident,) = list_incidents(conn, kind="queue_age")
    evidence = incident["evidence"]
    assert evidence["queue"]["stuck"] == 25
    assert evidence["queue"]["oldest_age"] == pytest.approx(4.5 * 3600 - 2)
    # Why they waited then: the deferral reply, not the 250 that ended it later.
    (reply,) = evidence["top_replies"]
    assert (reply["reply_code"], reply["count"]) == (421, 25)
    assert SLOW in reply["text"]


def test_live_evaluation_sees_the_queue_as_stored(db_url: str) -> None:
    """At the newest event time the engine reads the queue as it is now: the same batch,
    still deferred there, is stuck; the replay reader agrees with the live one."""
    from monitor.collectors.mta.postfix import parse

    events = list(parse(_log().splitlines()))
    before_delivery = [e for e in events if e.occurred_at < START + timedelta(hours=6)]
    detector = QueueAgeDetector()
    at = (START + timedelta(hours=5)).timestamp()
    with Store.open(db_url) as store:
        store.write(before_delivery)
        live = RollupEngine(store, detector).evaluate(at)
        assert live.incidents_opened == [("queue_age", "other", "slow.example")]
        # The same time replayed, once the log has more: the same verdict.
        store.write(events)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM incidents")
        replay = RollupEngine(store, detector).evaluate(at)
    assert replay.incidents_opened == live.incidents_opened
    assert replay.subjects == live.subjects


def test_live_evaluation_counts_the_queue_that_left_in_the_newest_minute(db_url: str) -> None:
    """Evaluated live at 16:00, when the batch was delivered at 16:00:02 (inside the newest
    minute, after the evaluation's time): it was still queued at 16:00, so it is stuck there,
    as a replay of 16:00 once later mail arrived finds it; on SQLite the rows come from the
    index of deferred rows by final time, not from a scan."""
    from monitor.collectors.mta.postfix import parse
    from monitor.rollup.deliveries import queue_stats

    events = list(parse(_log().splitlines()))
    detector = QueueAgeDetector()
    at = (START + timedelta(hours=6)).timestamp()
    assert max(e.occurred_at for e in events) == START + timedelta(hours=6, seconds=2)
    with Store.open(db_url) as store:
        store.write(events)
        live = RollupEngine(store, detector).evaluate(at)
        with store.engine.connect() as conn:
            stats = queue_stats(conn, at, ["slow.example"], detector, final_after=True)
        assert stats[("other", "slow.example")].stuck == 25
        assert stats[("other", "slow.example")].oldest_age == pytest.approx(6 * 3600 - 2)
        if store.engine.dialect.name == "sqlite":
            with store.engine.connect() as conn:
                plan = conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT recipient_domain FROM deliveries"
                    " WHERE deferrals > 0 AND final_at > ? AND first_attempt_at <= ?"
                    " AND stream != 'ndr'", (at, at)
                ).all()  # fmt: skip
            assert "ix_deliveries_deferred_final" in " ".join(str(r[-1]) for r in plan)
        at8 = (START + timedelta(hours=8)).isoformat()
        later = [f"{at8} mx1 postfix/qmgr[102]: B0001: from=<noreply@app.example>, size=900, "
                 "nrcpt=1 (queue active)",
                 f"{at8} mx1 postfix/smtp[103]: B0001: to=<late@other.example>, relay=mx.other"
                 ".example[192.0.2.8]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 "
                 "2.0.0 Ok)"]  # fmt: skip
        store.write(list(parse(later)))
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM incidents")
        replay = RollupEngine(store, detector).evaluate(at)
    assert live.incidents_opened == [("queue_age", "other", "slow.example")]
    assert replay.incidents_opened == live.incidents_opened
    assert replay.subjects == live.subjects
