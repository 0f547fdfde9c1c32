"""The Postfix parser tells the pipeline when its events cannot hold a NUL, sparing the scan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.collectors.mta.postfix import PostfixParser
from monitor.collectors.mta.postfix_state import QueueTable
from monitor.driver import Driver
from monitor.pipeline import Pipeline
from monitor.store import Store

SENT = (
    "Mar  5 09:00:0{n} mx-out1 postfix/smtp[1]: 0A1B2C3D4{n}: to=<a{n}@x.example>, relay=r, "
    "delay=1, dsn=2.0.0, status=sent (250 ok{text})"
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'nul.db'}") as s:
        yield s


def test_a_nul_line_ends_the_parsers_promise() -> None:
    parser = PostfixParser()
    assert parser.nul_free
    parser.feed(SENT.format(n=1, text=""))
    assert parser.nul_free
    parser.feed("Mar  5 09:00:02 mx-out1 postfix/qmgr[2]: 0A1B2C3D42: from=<s\x00@x>, size=1, "
                "nrcpt=1 (queue active)")  # fmt: skip
    assert not parser.nul_free  # the sender is remembered for the recipients to come
    assert not PostfixParser(queues=parser.queues).nul_free  # the writer's next file


def test_restored_state_with_a_nul_ends_it_too() -> None:
    parser = PostfixParser()
    parser.queues.changes()  # starts tracking them
    parser.feed("Mar  5 09:00:02 mx-out1 postfix/qmgr[2]: 0A1B2C3D42: from=<s\x00@x>, size=1, "
                "nrcpt=1 (queue active)")  # fmt: skip
    saved = {k: v for k, v in parser.queues.changes().items() if v is not None}
    table = QueueTable(1000, 86400)
    table.restore(saved)
    assert saved and not PostfixParser(queues=table).nul_free
    clean = QueueTable(1000, 86400)
    clean.restore({k: {**v, "sender": "s@x", "lines": []} for k, v in saved.items()})
    assert PostfixParser(queues=clean).nul_free


def test_events_stored_alike_with_and_without_the_scan(store: Store) -> None:
    """Once a NUL shows, every later event goes through the scan: its text is cleaned."""
    lines = [
        SENT.format(n=1, text=""),
        SENT.format(n=2, text=" \x00 dirty"),
        "Mar  5 09:00:03 mx-out1 postfix/qmgr[2]: 0A1B2C3D44: from=<s\x00@x>, size=1, "
        "nrcpt=1 (queue active)",
        SENT.format(n=4, text=""),
    ]
    pipeline = Pipeline(store)
    Driver(pipeline).run(PostfixParser(), lines, "mail.log")
    pipeline.close()
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT recipient, sender, diagnostic FROM events WHERE type = 'delivered' "
            "ORDER BY recipient"
        ).all()
    assert [tuple(r) for r in rows] == [
        ("a1@x.example", None, "250 ok"),
        ("a2@x.example", None, "250 ok \ufffd dirty"),
        ("a4@x.example", "s\ufffd@x", "250 ok"),
    ]
