"""The pipeline: batches written in the background, flushes that wait for them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from factories import ev

from monitor.model import Event
from monitor.pipeline import Pipeline
from monitor.store import Store


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store.open(db_url) as s:
        yield s


def _events(n: int) -> list[Event]:
    return [ev("delivered", i, recipient=f"r{i}@example.net") for i in range(n)]


def test_background_batches_are_all_stored_and_counted(store: Store) -> None:
    """Batches handed to the writer thread all land in the store, each event counted once."""
    seen: list[Event] = []
    pipeline = Pipeline(store, batch_size=10, on_write=seen.extend)
    pipeline.put_many(_events(95))
    pipeline.put_many(_events(95))  # the same events again: duplicates, not new
    pipeline.close()
    assert store.count("events") == 95
    assert (pipeline.received, pipeline.stored, pipeline.duplicates) == (190, 95, 95)
    assert sorted(e.id for e in seen) == sorted(e.id for e in _events(95))


def test_flush_with_checkpoint_stores_the_batch_in_flight_first(store: Store) -> None:
    """When a flush with a checkpoint returns, every event put before it is stored."""
    pipeline = Pipeline(store, batch_size=10)
    pipeline.put_many(_events(25))
    pipeline.flush(checkpoint=("postfix:/var/log/mail.log", {"position": 25}))
    assert store.count("events") == 25
    assert store.checkpoint("postfix:/var/log/mail.log") == {"position": 25}
    pipeline.close()


def test_flush_without_wait_starts_writing_and_returns(store: Store) -> None:
    """``flush(wait=False)`` hands the pending events on; the next waiting flush stores them."""
    pipeline = Pipeline(store, batch_size=1000)
    pipeline.put_many(_events(5))
    assert pipeline.flush(wait=False) == []
    pipeline.flush()
    assert store.count("events") == 5
    assert pipeline.stored == 5
    pipeline.close()


def _refuse_writes(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store refuses every batch (disk full) until ``monkeypatch.undo()``."""

    def refuse(*args: object, **kwargs: object) -> list[Event]:
        raise OSError("disk full")

    monkeypatch.setattr(store, "write", refuse)


def test_a_failed_background_write_is_raised_by_the_next_flush(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the store refused in the background is not lost silently."""
    pipeline = Pipeline(store, batch_size=10)
    _refuse_writes(store, monkeypatch)
    pipeline.put_many(_events(10))
    with pytest.raises(OSError, match="disk full"):
        pipeline.flush()
    monkeypatch.undo()
    pipeline.put_many(_events(3))
    pipeline.close()
    assert store.count("events") == 3


def test_a_failed_background_write_does_not_take_the_next_batch_with_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch being handed on when the one before turns out refused stays pending."""
    pipeline = Pipeline(store, batch_size=10)
    _refuse_writes(store, monkeypatch)
    pipeline.put_many(_events(10))
    later = [ev("deferred", 100 + i, recipient=f"s{i}@example.org") for i in range(10)]
    with pytest.raises(OSError, match="disk full"):
        pipeline.put_many(later)
    monkeypatch.undo()
    pipeline.close()
    assert sorted(store.event_ids()) == sorted(e.id for e in later)
