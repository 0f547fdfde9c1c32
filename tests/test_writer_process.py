"""The writer process: a store's writes done in a child process, row for row as in-process."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import PG_ADMIN_URL
from factories import T0, ev, refuse_checkpoints, writer_processes
from prometheus_client import CollectorRegistry, generate_latest

from monitor.dnscheck.records import DnsblListing
from monitor.errors import StoreError
from monitor.metrics import Metrics
from monitor.model import Event, EventType, Provider
from monitor.pipeline import Pipeline
from monitor.store import Store, process
from monitor.store.process import WriterProcess

#: The tables an event write touches.
TABLES = ("events", "deliveries", "counters", "failure_counters", "sender_counters", "checkpoints")


@pytest.fixture
def twin_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second database on ``db_url``'s back end: where Store.write makes the expected rows."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'twin.db'}"
        return
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"mailmon_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pair(db_url: str, twin_url: str) -> Iterator[tuple[WriterProcess, Store]]:
    """A writer process on ``db_url`` and the in-process store on its twin, tables made."""
    with Store.open(db_url), Store.open(twin_url) as twin, WriterProcess(db_url) as writer:
        yield writer, twin


def _rows(url: str, *more: str) -> dict[str, list[tuple[tuple[str, type, Any], ...]]]:
    """Every row of the written tables as (column, Python type, value), in a stable order."""
    out = {}
    with Store.open(url) as store, store.engine.connect() as conn:
        for table in TABLES + more:
            result = conn.execute(sa.text(f"SELECT * FROM {table}"))
            rows = [
                tuple((c, type(v), v) for c, v in zip(result.keys(), row, strict=True)
                      if c != "updated_at")  # checkpoints: the wall clock of the write
                for row in result
            ]  # fmt: skip
            out[table] = sorted(rows, key=repr)
    return out


def _same_tables(url: str, twin_url: str, *more: str) -> dict[str, list[Any]]:
    found, expected = _rows(url, *more), _rows(twin_url, *more)
    for table in expected:
        assert found[table] == expected[table], table
    return found


def _same_objects(found: list[Any], expected: list[Any]) -> None:
    """``found`` holds the very objects of ``expected``, in its order."""
    assert [id(x) for x in found] == [id(x) for x in expected]


def _varied() -> list[Event]:
    """Two messages through every outcome, an NDR, a report, an unclassified bounce, and
    events with their optional fields left None; ``category:`` tags, sizes, delays, IPs."""
    google = {"provider": "google", "sending_ip": "203.0.113.7"}
    return [
        ev("submitted", 0, size_bytes=2048, tags=("category:receipts",), **google),
        ev("deferred", 1, reply_code=421, enhanced_status="4.7.28", reason="speeding",
           hard=False, blame="rate", rule="google-rate", attempt=1,
           relay="gmail-smtp-in.l.google.com[142.250.1.26]:25", **google),
        ev("delivered", 9, reply_code=250, attempt=2, delay_seconds=540.5, **google),
        ev("submitted", 0, recipient="bob@outlook.com", size_bytes=10_000_000,
           tags=("category:news", "spring")),
        ev("bounced", 1, recipient="bob@outlook.com", reply_code=550, enhanced_status="5.1.1",
           reason="userunknown", hard=True, blame="recipient", rule="mailbox-unknown",
           diagnostic="550 5.1.1 user unknown", provider="microsoft",
           sending_ip="203.0.113.8"),
        ev("bounced", 2, recipient="noreply@app.example", sender="", queue_id="Q7",
           message_id="dsn1@mx1", tags=("ndr",), reason="userunknown", hard=True,
           blame="recipient"),
        ev("bounced", 3, recipient="dave@yahoo.com", queue_id="Q8"),
        ev("deferred", 4, recipient="erin@gmail.com", queue_id="Q9", message_id=None,
           sender=None, attempt=None),
        ev("expired", 50, recipient="erin@gmail.com", queue_id="Q9", message_id=None,
           reason="expired", hard=False),
        ev("delivered", 6, recipient="fred@gmail.com", queue_id="QA", delay_seconds=90.0),
        ev("complained", 70, source="esp:sendgrid", queue_id=None,
           provider_message_id="sg-1", provider="google"),
        ev("opened", 71, source="esp:sendgrid", queue_id=None, provider_message_id="sg-1"),
        ev("submitted", 8, recipient=None, queue_id="QB"),
    ]  # fmt: skip


def test_batches_give_the_rows_store_write_gives(
    pair: tuple[WriterProcess, Store], db_url: str, twin_url: str
) -> None:
    """Every table holds the same rows, values and types as after Store.write of the same
    batches, and each write returns the same new events: duplicates, repeats, out of order."""
    writer, twin = pair
    batch = _varied()
    batch += [ev("delivered", 9, reply_code=250, attempt=2, delay_seconds=540.5,
                 provider="google", sending_ip="203.0.113.7"), batch[0]]  # fmt: skip
    kw: dict[str, Any] = {"checkpoint": ("postfix:/var/log/mail.log", {"offset": 42}),
                          "state": {"postfix:q:QY": {"n": 1}, "postfix:q:QZ": [1.5, None]}}  # fmt: skip
    expected = twin.write(batch, **kw)
    fresh = writer.write(batch, **kw)
    _same_objects(fresh, expected)
    assert len(fresh) == len(batch) - 2 and fresh[0] is batch[0]
    assert writer.write(batch, **kw) == [] and twin.write(batch, **kw) == []
    at = {"recipient": "carol@gmail.com", "queue_id": "QC"}
    gone = {"state": {"postfix:q:QZ": None}}
    for part in (
        [ev("delivered", 25, reply_code=250, attempt=2, **at)],  # before its submission
        [ev("deferred", 21, reply_code=451, attempt=1, **at), ev("submitted", 20, **at)],
    ):
        _same_objects(writer.write(part, **gone), twin.write(part, **gone))
    found = _same_tables(db_url, twin_url)
    assert all(found[t] for t in TABLES), "a table was left empty: the comparison proves little"
    sources = [dict((c, v) for c, _, v in r)["source"] for r in found["checkpoints"]]
    assert sorted(sources) == ["postfix:/var/log/mail.log", "postfix:q:QY"]


def test_rows_go_as_marshal_data_and_a_slice_marshal_refuses_goes_pickled(
    pair: tuple[WriterProcess, Store], db_url: str, twin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slices of plain rows cross as marshal data; a slice with a value marshal refuses (a
    str subclass: here an enum member where text belongs) is pickled, and both store the
    rows Store.write stores."""
    writer, twin = pair
    encoded: list[str] = []
    real_dumps = process.marshal.dumps

    def dumps(value: Any) -> bytes:
        try:
            data = real_dumps(value)
        except ValueError:
            encoded.append("refused")
            raise
        encoded.append("marshal")
        return data

    monkeypatch.setattr(process.marshal, "dumps", dumps)
    plain = _varied()
    odd = [ev("bounced", 5, recipient="zoe@gmail.com", queue_id="QZ", reply_code=550,
              diagnostic=Provider.GOOGLE, relay=EventType.BOUNCED)]  # fmt: skip
    for batch in (plain, odd):
        _same_objects(writer.write(batch), twin.write(batch))
    assert encoded == ["marshal", "refused"]
    found = _same_tables(db_url, twin_url)
    stored = [dict((c, v) for c, _, v in r) for r in found["events"]]
    assert {(r["relay"], r["diagnostic"]) for r in stored if r["recipient"] == "zoe@gmail.com"} == {
        ("bounced", "google")
    }


def test_an_event_the_database_refuses_is_reported_and_its_neighbours_stored(
    pair: tuple[WriterProcess, Store], db_url: str, twin_url: str
) -> None:
    """Events the database refuses on their own go to on_reject as from Store.write (no time:
    "store_refused", a number out of range: "invalid_value"); the events around them and the
    checkpoint are stored as in-process."""
    writer, twin = pair
    broken = ev("delivered", 3)
    object.__setattr__(broken, "occurred_at", None)  # makes the insert fail
    huge = ev("bounced", 4, recipient="bob@outlook.com", reply_code=2**70)
    batch = [ev("submitted", 0), broken, ev("bounced", 5, recipient="bob@outlook.com"), huge,
             ev("delivered", 6, recipient="carol@gmail.com")]  # fmt: skip
    refused: list[tuple[Event, str]] = []
    expected: list[tuple[Event, str]] = []
    mark = ("postfix:/x", {"offset": 1})
    fresh = writer.write(batch, checkpoint=mark, on_reject=lambda *call: refused.append(call))
    _same_objects(
        fresh, twin.write(batch, checkpoint=mark, on_reject=lambda *c: expected.append(c))
    )
    assert fresh == [batch[0], batch[2], batch[4]] and fresh[1] is batch[2]
    assert len(refused) == 2 and {(e.id, why) for e, why in refused} == {
        (broken.id, "store_refused"), (huge.id, "invalid_value")}  # fmt: skip
    # the caller's objects, as in-process
    assert sorted((id(e), why) for e, why in refused) == sorted((id(e), w) for e, w in expected)
    assert len(_same_tables(db_url, twin_url)["checkpoints"]) == 1


def _listing(target: str, minutes: float = 0) -> DnsblListing:
    return DnsblListing("dnsbl", T0.replace(minute=int(minutes)), target, "zen.spamhaus.org",
                        listed=True, code="127.0.0.2")  # fmt: skip


def test_records_are_stored_and_only_the_new_ones_handed_on(
    pair: tuple[WriterProcess, Store], db_url: str, twin_url: str
) -> None:
    """Records ride with their batch; on_records gets the records (the caller's objects) that
    were not stored before, as from Store.write: none the second time."""
    writer, twin = pair
    a, b, c = _listing("203.0.113.7"), _listing("203.0.113.8"), _listing("203.0.113.9", 5)
    got: list[list[Any]] = []
    expected: list[list[Any]] = []
    for records in ([a, b, _listing("203.0.113.7")], [b, c], [a, c]):
        batch = [ev("delivered", len(got))]
        _same_objects(writer.write(batch, records=records, on_records=got.append),
                      twin.write(batch, records=records, on_records=expected.append))  # fmt: skip
    assert [[id(r) for r in call] for call in got] == [[id(r) for r in call] for call in expected]
    assert [[r.id for r in call] for call in got] == [[a.id, b.id], [c.id], []]
    assert got[0][0] is a and got[1][0] is c
    assert len(_same_tables(db_url, twin_url, "dnsbl_listings")["dnsbl_listings"]) == 3


def test_retractions_give_the_rows_they_give_in_process(
    pair: tuple[WriterProcess, Store], db_url: str, twin_url: str
) -> None:
    """Events retracted and replaced in one write leave the same rows and counters as in-process."""
    writer, twin = pair
    first = _varied()
    for target in (writer, twin):
        target.write(first)
    gone = [first[7].id, first[8].id, first[1].id, "0" * 32]  # the last was never stored
    better = [ev("deferred", 4, recipient="erin@gmail.com", queue_id="Q9", attempt=1),
              ev("expired", 50, recipient="erin@gmail.com", queue_id="Q9", reason="expired",
                 hard=False),
              ev("deferred", 1, reply_code=421, attempt=1, provider="google")]  # fmt: skip
    _same_objects(writer.write(better, retract=gone), twin.write(better, retract=gone))
    found = _same_tables(db_url, twin_url)
    assert first[7].id not in {dict((c, v) for c, _, v in r)["id"] for r in found["events"]}


def _refuse(url: str) -> None:
    with Store.open(url) as store:
        refuse_checkpoints(store)


def test_a_batch_the_database_refuses_whole_raises_its_error_and_stores_nothing(
    pair: tuple[WriterProcess, Store], db_url: str, twin_url: str
) -> None:
    """A database error for the whole batch is raised in the caller with Store.write's class;
    none of the batch is stored, and the next write works."""
    writer, twin = pair
    for url in (db_url, twin_url):
        _refuse(url)
    batch, mark = _varied(), ("postfix:/x", {"offset": 1})
    with pytest.raises(sa.exc.OperationalError) as in_process:
        twin.write(batch, checkpoint=mark)
    with pytest.raises(Exception) as raised:
        writer.write(batch, checkpoint=mark)
    assert type(raised.value) is type(in_process.value)
    assert "disk" in str(raised.value).lower()
    assert not any(_rows(db_url).values())
    for url in (db_url, twin_url):
        with Store.open(url) as store, store.engine.begin() as conn:
            on = " ON checkpoints" if store.engine.dialect.name == "postgresql" else ""
            conn.exec_driver_sql("DROP TRIGGER refuse" + on)
    _same_objects(writer.write(batch, checkpoint=mark), twin.write(batch, checkpoint=mark))
    _same_tables(db_url, twin_url)


def test_a_batch_that_fails_whole_reports_no_event_refused(db_url: str) -> None:
    """As from Store.write, on_reject hears of no event of a batch that failed whole (the
    caller writes it again, and would count a refusal twice): only once it is stored."""
    _refuse(db_url)
    broken = ev("delivered", 3)
    object.__setattr__(broken, "occurred_at", None)
    batch = [ev("submitted", 0), broken]
    refused: list[tuple[str, str]] = []
    with WriterProcess(db_url) as writer, pytest.raises(sa.exc.OperationalError):
        writer.write(batch, checkpoint=("postfix:/x", {"offset": 1}),
                     on_reject=lambda e, why: refused.append((e.id, why)))  # fmt: skip
    assert refused == []


def _dead(pid: int) -> None:
    """Wait until ``pid`` has exited (reaped or a zombie)."""
    stat = Path(f"/proc/{pid}/stat")
    for _ in range(1000):
        if not stat.exists() or stat.read_text().split(") ")[-1].startswith("Z"):
            return
        time.sleep(0.01)
    pytest.fail(f"process {pid} did not exit")


def _messages(start: int, stop: int) -> list[Event]:
    return [ev("delivered", i, recipient=f"r{i}@example.net") for i in range(start, stop)]


def test_a_child_killed_between_writes_fails_the_next_write_and_then_is_replaced(
    db_url: str,
) -> None:
    """The write after the child died raises StoreError and stores nothing; the one after
    starts a new child and stores the batch."""
    with Store.open(db_url) as store, WriterProcess(db_url) as writer:
        assert writer.pid is None  # started by the first write
        first = _messages(0, 10)
        assert writer.write(first) == first
        pid = writer.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        _dead(pid)
        later, mark = _messages(10, 30), ("postfix:/x", {"offset": 30})
        with pytest.raises(StoreError):
            writer.write(later, checkpoint=mark)
        assert store.count("events") == 10 and store.checkpoint("postfix:/x") is None
        fresh = writer.write(later, checkpoint=mark)
        _same_objects(fresh, later)
        assert writer.pid not in (None, pid)
        assert store.count("events") == 30 and store.checkpoint("postfix:/x") == mark[1]


def test_a_child_killed_during_a_write_fails_it_and_stores_none_of_it(db_url: str) -> None:
    """A child killed while its write waits for a lock: that write raises StoreError, none of
    its batch is stored, and writing it again stores it."""
    with Store.open(db_url) as store, WriterProcess(db_url) as writer:
        writer.write(_messages(0, 1))
        batch, outcome = _messages(1, 200), {}

        def write() -> None:
            try:
                outcome["fresh"] = writer.write(batch, checkpoint=("postfix:/x", {"offset": 1}))
            except Exception as exc:
                outcome["error"] = exc

        with store.engine.connect() as blocker:
            if store.engine.dialect.name == "sqlite":
                blocker.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                blocker.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            thread = threading.Thread(target=write)
            thread.start()
            time.sleep(1.0)
            assert thread.is_alive(), outcome  # the child waits for the lock
            pid = writer.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            thread.join(20)
            assert not thread.is_alive()
            blocker.rollback()
        assert isinstance(outcome.get("error"), StoreError), outcome
        assert store.count("events") == 1 and store.checkpoint("postfix:/x") is None
        _same_objects(writer.write(batch, checkpoint=("postfix:/x", {"offset": 1})), batch)
        assert store.count("events") == 200 and store.checkpoint("postfix:/x") == {"offset": 1}


def test_send_and_receive_on_two_threads_keep_one_batch_at_a_time(db_url: str) -> None:
    """send returns once the batch is handed over (the child writes while the caller goes
    on); a second send waits until the first batch is received, from any thread."""
    with Store.open(db_url) as store, WriterProcess(db_url) as writer:
        first, second = _messages(0, 50), _messages(50, 120)
        sent = writer.send(first)
        outcome: dict[str, object] = {}

        def send_second() -> None:
            outcome["fresh"] = writer.receive(writer.send(second))

        thread = threading.Thread(target=send_second)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive() and "fresh" not in outcome  # waits for its turn
        _same_objects(writer.receive(sent), first)
        thread.join(20)
        assert not thread.is_alive()
        _same_objects(outcome["fresh"], second)  # type: ignore[arg-type]
        assert store.count("events") == 120


def test_a_batch_sent_and_then_closed_is_not_acknowledged(db_url: str) -> None:
    """close between send and receive: receive raises StoreError (the batch was stored:
    writing it again stores nothing twice) and the writer takes the next batch."""
    with Store.open(db_url) as store, WriterProcess(db_url) as writer:
        batch = _messages(0, 40)
        sent = writer.send(batch)
        writer.close()
        with pytest.raises(StoreError):
            writer.receive(sent)
        # close let the child finish the batch it had: stored, though not acknowledged
        assert store.count("events") == 40
        assert writer.write(batch) == []  # again: nothing twice
        later = _messages(40, 45)
        _same_objects(writer.write(later), later)
        assert store.count("events") == 45


def test_close_leaves_no_child_process(db_url: str) -> None:
    """close(), and leaving the context manager, stop the child and reap it."""
    with Store.open(db_url):
        pass
    WriterProcess(db_url).close()  # never started: nothing to stop
    writer = WriterProcess(db_url)
    writer.write([ev("delivered", 1)])
    pids = [writer.pid]
    writer.close()
    with WriterProcess(db_url) as other:
        other.write([ev("delivered", 2)])
        pids.append(other.pid)
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # a zombie (not reaped) would still answer
    assert not set(pids) & writer_processes(os.getpid())


def _traffic() -> list[Event]:
    """500 events of 160 messages (submitted, then delivered, deferred or bounced), 90 of
    them read again (60 as the same objects, 30 as copies)."""
    out = []
    for i in range(160):
        at = {"recipient": f"r{i}@{('gmail.com', 'yahoo.com', 'example.net')[i % 3]}",
              "queue_id": f"Q{i:04d}", "sending_ip": f"203.0.113.{i % 4}",
              "tags": (f"category:c{i % 5}",)}  # fmt: skip
        out.append(ev("submitted", i, size_bytes=1000 + i, **at))
        if i % 4 == 0:
            out.append(ev("bounced", i + 1, reply_code=550, enhanced_status="5.1.1",
                          diagnostic="550 5.1.1 user unknown", **at))  # fmt: skip
        elif i % 4 == 1:
            out.append(ev("deferred", i + 1, reply_code=421, enhanced_status="4.7.0", **at))
        else:
            out.append(ev("delivered", i + 2, reply_code=250, delay_seconds=float(i), **at))
    return out + out[:120] + [e.replace() for e in out[120:180]]


def _through_pipeline(url: str, *, writer_process: bool) -> tuple[Pipeline, str]:
    """Ingest the traffic through a pipeline; its counts and its metrics as rendered text."""
    metrics = Metrics(CollectorRegistry())
    with Store.open(url) as store:
        pipeline = Pipeline(store, metrics=metrics, batch_size=50, writer_process=writer_process)
        for n, event in enumerate(_traffic()):
            pipeline.put(event)
            if n == 275:
                pipeline.flush(checkpoint=("postfix:/var/log/mail.log", {"offset": n}))
        pipeline.close()
    text = generate_latest(metrics.registry).decode()
    return pipeline, "\n".join(x for x in text.splitlines() if "_created" not in x)


def test_a_pipeline_through_a_writer_process_stores_and_counts_as_in_process(
    db_url: str, twin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pipeline(writer_process=True) leaves the same rows, counts and metrics as the
    in-process pipeline, writes nothing from this process, and leaves no child after close."""
    expected, expected_metrics = _through_pipeline(twin_url, writer_process=False)
    children = writer_processes(os.getpid())

    def in_this_process(*args: object, **kwargs: object) -> list[Event]:
        raise AssertionError("a batch was written by the parent process")

    monkeypatch.setattr(Store, "write", in_this_process)
    found, found_metrics = _through_pipeline(db_url, writer_process=True)
    monkeypatch.undo()
    counts = ("received", "stored", "duplicates", "rejected")
    assert [getattr(found, c) for c in counts] == [getattr(expected, c) for c in counts]
    assert (expected.received, expected.stored, expected.duplicates) == (500, 320, 180)
    assert found_metrics == expected_metrics
    assert 'mailmon_events_ingested_total{source="postfix"} 320.0' in found_metrics
    assert 'mailmon_events_duplicate_total{source="postfix"} 180.0' in found_metrics
    _same_tables(db_url, twin_url)
    assert writer_processes(os.getpid()) <= children


def test_a_pipeline_on_an_in_memory_database_writes_in_process() -> None:
    """An in-memory SQLite database cannot be shared with a child: writer_process is ignored."""
    children = writer_processes(os.getpid())
    with Store.open("sqlite://") as store:
        pipeline = Pipeline(store, batch_size=50, writer_process=True)
        pipeline.put_many(_messages(0, 120))
        assert writer_processes(os.getpid()) == children
        pipeline.close()
        assert store.count("events") == 120 and pipeline.stored == 120
