"""Records that are not per-recipient events: their tables, dedupe, checkpoints and metrics."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import pytest
import sqlalchemy as sa
from factories import T0, downgrade, ev, refuse_checkpoints
from prometheus_client import CollectorRegistry, Counter

from monitor.metrics import Metrics, forget_kind, observe_kind
from monitor.pipeline import Pipeline
from monitor.records import Record
from monitor.store import Store
from monitor.store.migrations import LATEST
from monitor.store.records import kind_of, kinds, register_record, unregister_record


class Answer(StrEnum):
    LISTED = "listed"
    CLEAN = "clean"


@dataclass(frozen=True, slots=True)
class Listing(Record):
    """A DNSBL answer for one IP in one zone: the kind these tests register."""

    kind = "test_listings"
    identity_fields = ("ip", "zone")
    indexes = (("ip",),)

    ip: str
    zone: str
    answer: Answer
    listed: bool
    code: int | None = None
    expires_at: datetime | None = None
    answers: tuple[str, ...] = ()


class ListingMetrics:
    """The kind's own metric, ``mailmon_test_listings_total{zone,answer}``."""

    def __init__(self, registry: CollectorRegistry, calls: list[list[Record]]) -> None:
        self.listings = Counter("mailmon_test_listings", "DNSBL answers.", ["zone", "answer"],
                                registry=registry)  # fmt: skip
        self.calls = calls

    def __call__(self, records: Sequence[Record]) -> None:
        self.calls.append(list(records))
        for r in records:
            assert isinstance(r, Listing)
            self.listings.labels(r.zone, r.answer.value).inc()


@pytest.fixture
def observed() -> Iterator[list[list[Record]]]:
    """Registers the test kind and its observer; yields the batches the observer was given."""
    calls: list[list[Record]] = []
    with _registered(calls):
        yield calls


class _registered:
    def __init__(self, calls: list[list[Record]]) -> None:
        self.calls = calls

    def __enter__(self) -> None:
        register_record(Listing)
        observe_kind(Listing.kind, lambda registry: ListingMetrics(registry, self.calls))

    def __exit__(self, *exc: object) -> None:
        forget_kind(Listing.kind)
        unregister_record(Listing.kind)


def listing(ip: str = "203.0.113.7", minutes: float = 0, **fields: object) -> Listing:
    values: dict[str, object] = {
        "source": "dnsbl:probe1", "occurred_at": T0 + timedelta(minutes=minutes), "ip": ip,
        "zone": "zen.example", "answer": Answer.LISTED, "listed": True, "code": 2,
        "expires_at": T0 + timedelta(hours=1), "answers": ("127.0.0.2", "127.0.0.4"),
    }  # fmt: skip
    values.update(fields)
    return Listing(**values)  # type: ignore[arg-type]


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_record_ids_come_from_source_time_and_identifying_fields() -> None:
    """The same record made twice has one id; identifying fields change it, the others do not."""
    a = listing()
    assert a.id == listing().id and len(a.id) == 32
    assert a.id[:8] == f"{int(T0.timestamp()):08x}"  # ids sort by time, as event ids do
    assert listing(code=4, answer=Answer.CLEAN, listed=False).id == a.id
    assert listing(zone="bl.example").id != a.id
    assert listing(ip="203.0.113.8").id != a.id
    assert listing(minutes=1).id != a.id
    assert listing(source="dnsbl:probe2").id != a.id
    naive = listing(occurred_at=T0.replace(tzinfo=None))
    assert naive.occurred_at == T0 and naive.id == a.id


def test_records_are_stored_once_with_the_checkpoint_and_observed_once(
    db_url: str, observed: list[list[Record]]
) -> None:
    """Records go with the batch and its checkpoint; one read twice is one row, observed once."""
    with Store.open(db_url) as store:
        metrics = Metrics(CollectorRegistry())
        told: list[Record] = []
        pipeline = Pipeline(store, metrics=metrics, on_records=told.extend)
        pipeline.put(ev("delivered", 1))
        for record in (listing(), listing(), listing(ip="203.0.113.8", code=None, answers=())):
            pipeline.put_record(record)
        pipeline.flush(checkpoint=("dnsbl:probe1", {"round": 1}))
        assert store.count("events") == 1 and store.checkpoint("dnsbl:probe1") == {"round": 1}
        stored = store.records(Listing.kind)
        assert stored == [listing(), listing(ip="203.0.113.8", code=None, answers=())]
        assert [r.id for r in stored] == [listing().id, listing(ip="203.0.113.8").id]
        assert told == stored and observed == [stored]
        assert dict(pipeline.record_counts) == {"received": 3, "stored": 2}

        again = Pipeline(store, metrics=metrics, on_records=told.extend)
        again.put_record(listing())
        again.flush(checkpoint=("dnsbl:probe1", {"round": 2}))
        assert len(store.records(Listing.kind)) == 2 and len(observed) == 1 and len(told) == 2
        assert dict(again.record_counts) == {"received": 1, "stored": 0}
        assert store.checkpoint("dnsbl:probe1") == {"round": 2}
    assert _sample(metrics, "mailmon_records_stored_total",
                   kind="test_listings", source="dnsbl") == 2  # fmt: skip
    assert _sample(metrics, "mailmon_test_listings_total", zone="zen.example", answer="listed") == 2
    assert _sample(metrics, "mailmon_events_ingested_total", source="postfix") == 1


def test_records_ride_with_background_batches(db_url: str, observed: list[list[Record]]) -> None:
    """Records put among events are written by the background writer too, each observed once."""
    with Store.open(db_url) as store:
        pipeline = Pipeline(store, batch_size=10, metrics=Metrics(CollectorRegistry()))
        for i in range(45):
            pipeline.put(ev("delivered", i, recipient=f"r{i}@example.net"))
            pipeline.put_record(listing(ip=f"198.51.100.{i}", minutes=i))
            pipeline.put_record(listing(ip=f"198.51.100.{i}", minutes=i))
        pipeline.flush(wait=False)
        pipeline.close()
        assert store.count("events") == 45
        assert len(store.records(Listing.kind)) == 45
    seen = [r.id for batch in observed for r in batch]
    assert len(observed) > 1 and sorted(seen) == sorted({r.id for batch in observed for r in batch})
    assert len(seen) == 45 and dict(pipeline.record_counts) == {"received": 90, "stored": 45}


def test_a_failed_write_stores_neither_records_nor_checkpoint(
    db_url: str, observed: list[list[Record]]
) -> None:
    """When the checkpoint cannot be written, the events and records of its batch are not either."""
    with Store.open(db_url) as store:
        store.write([], records=[listing(ip="192.0.2.1")])  # the table exists beforehand
        refuse_checkpoints(store)
        pipeline = Pipeline(store, metrics=Metrics(CollectorRegistry()))
        pipeline.put(ev("delivered", 1))
        pipeline.put_record(listing())
        with pytest.raises(sa.exc.OperationalError):
            pipeline.flush(checkpoint=("dnsbl:probe1", {"round": 1}))
        assert store.count("events") == 0 and store.checkpoint("dnsbl:probe1") is None
        assert [r.ip for r in store.records(Listing.kind)] == ["192.0.2.1"] and observed == []
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse" + ("" if "sqlite" in db_url else
                                                          " ON checkpoints"))  # fmt: skip
        pipeline.put(ev("delivered", 1))  # read again from the checkpoint that was kept
        pipeline.put_record(listing())
        pipeline.flush(checkpoint=("dnsbl:probe1", {"round": 1}))
        assert store.count("events") == 1 and store.checkpoint("dnsbl:probe1") == {"round": 1}
        assert len(store.records(Listing.kind)) == 2 and observed == [[listing()]]


def test_a_record_the_database_refuses_is_left_out_and_counted(
    db_url: str, observed: list[list[Record]]
) -> None:
    """A record no column holds is left out of its batch; its neighbours and the checkpoint are stored."""
    with Store.open(db_url) as store:
        metrics = Metrics(CollectorRegistry())
        pipeline = Pipeline(store, metrics=metrics)
        pipeline.put(ev("delivered", 1))
        pipeline.put_record(listing())
        pipeline.put_record(listing(ip="203.0.113.9", code=2**70))  # no INTEGER holds it
        pipeline.flush(checkpoint=("dnsbl:probe1", {"round": 1}))
        assert [r.ip for r in store.records(Listing.kind)] == ["203.0.113.7"]
        assert store.count("events") == 1 and store.checkpoint("dnsbl:probe1") == {"round": 1}
        assert (pipeline.rejected, pipeline.duplicates) == (0, 0)  # events' counts untouched
        assert pipeline.record_counts["rejected"] == 1 and observed == [[listing()]]
    assert _sample(metrics, "mailmon_events_rejected_total",
                   source="dnsbl", reason="invalid_value") == 1  # fmt: skip


def test_a_kind_that_is_not_registered_is_refused_before_anything_is_written(
    sqlite_url: str,
) -> None:
    """Writing records of an unregistered kind raises, and the batch's events are not stored."""
    with Store.open(sqlite_url) as store, pytest.raises(KeyError, match="not registered"):
        store.write([ev("delivered", 1)], records=[listing()])
    with Store.open(sqlite_url) as store:
        assert store.count("events") == 0


def test_an_old_store_gets_a_new_kind_table_on_first_write(db_url: str) -> None:
    """A store from before records (schema 1) migrates, then takes the kind's table when written."""
    with Store.open(db_url) as store:
        store.write([ev("submitted", 0), ev("delivered", 1)])
    downgrade(db_url, 1)
    calls: list[list[Record]] = []
    with _registered(calls), Store.open(db_url) as store:
        assert store.schema_version == LATEST and store.count("events") == 2
        assert store.records(Listing.kind) == []  # no table yet: no records, no error
        pipeline = Pipeline(store, metrics=Metrics(CollectorRegistry()))
        pipeline.put(ev("bounced", 2, recipient="bob@gmail.com", reason="userunknown"))
        pipeline.put_record(listing())
        pipeline.flush(checkpoint=("dnsbl:probe1", {"round": 1}))
        assert store.count("events") == 3 and store.records(Listing.kind) == [listing()]
        assert [r["bounced"] for r in store.stats("domain") if r["domain"] == "gmail.com"] == [1]
        inspector = sa.inspect(store.engine)
        columns = [c["name"] for c in inspector.get_columns(Listing.kind)]
        assert tuple(columns) == kind_of(Listing.kind).columns
        assert {i["name"] for i in inspector.get_indexes(Listing.kind)} == {
            "ix_test_listings_occurred_at",
            "ix_test_listings_ip",
        }
        assert calls == [[listing()]]
    with _registered(calls), Store.open(db_url, create=False) as store:
        assert store.records(Listing.kind, since=T0.timestamp()) == [listing()]
        assert store.records(Listing.kind, until=T0.timestamp()) == []


def test_a_fresh_store_has_the_tables_of_the_registered_kinds(
    sqlite_url: str, observed: list[list[Record]]
) -> None:
    """A store created while a kind is registered has its table from the start."""
    with Store.open(sqlite_url) as store:
        assert Listing.kind in sa.inspect(store.engine).get_table_names()


def test_kinds_that_cannot_have_a_table_are_refused() -> None:
    """A kind must name a new table in [a-z0-9_] and identify itself by fields it has."""

    @dataclass(frozen=True, slots=True)
    class Clash(Record):
        kind = "events"

    @dataclass(frozen=True, slots=True)
    class Spaced(Record):
        kind = "dnsbl listings"

    @dataclass(frozen=True, slots=True)
    class Vague(Record):
        kind = "vague_records"
        identity_fields = ("zone",)
        ip: str

    for cls, why in ((Clash, "store's table"), (Spaced, "table name"), (Vague, "zone")):
        with pytest.raises(ValueError, match=why):
            register_record(cls)
    assert not {"events", "dnsbl listings", "vague_records"} & set(kinds())


def test_the_builtin_kinds_round_trip_through_the_store(db_url: str) -> None:
    """The kinds posture checks, DNSBL lookups and seed probes store come back as written."""
    from monitor.collectors.seeds.records import SeedPlacement, SeedProbe
    from monitor.dnscheck.records import DnsblListing, DnsCheck

    made = [
        DnsCheck("dns", T0, "example.com", "spf", "warn", "~all ends the record", "v=spf1 ~all"),
        DnsblListing("dnsbl", T0, "203.0.113.7", "zen.spamhaus.org", True, "127.0.0.2", "SBL"),
        SeedProbe("seeds", T0, "r1", "a@gmail.example", "gmail", "tok1", "<1@x>", "sent"),
        SeedPlacement(
            "seeds", T0 + timedelta(seconds=9), "r1", "a@gmail.example", "gmail", "tok1",
            "<1@x>", "spam", folder="Junk", seconds_to_inbox=8.5, spf="pass", one_click=True,
        ),
    ]
    with Store.open(db_url) as store:
        pipeline = Pipeline(store, metrics=Metrics(CollectorRegistry()))
        for record in made:
            pipeline.put_record(record)
        pipeline.flush()
        for record in made:
            assert store.records(record.kind) == [record]
