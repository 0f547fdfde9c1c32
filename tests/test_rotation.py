"""A rotated Postfix log ingests to the same numbers as the log it was split from.

The log is split into ``mail.log.1.gz`` (first part) and ``mail.log`` (the rest) and
ingested in one command or two, oldest or newest first; ``stats`` by every grouping,
``trace`` of every message, the delivery rows and the events must equal those of the
unsplit log (the events' ``raw_ref`` names the file each line came from, so it differs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from postfix_log import generate

from monitor.cli import main
from monitor.store import Store
from monitor.store.queries import STATS_BY

LINES, MESSAGES = generate()
REPO = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


def _ingest(db: str, *paths: Path) -> dict[str, Any]:
    return dict(_run("ingest", "postfix", *map(str, paths), "--db", db, "--json", "--no-progress"))


def _snapshot(db: str, message_ids: Iterable[str] = ()) -> dict[str, Any]:
    """What a user sees: stats by every grouping, every message's trace, the delivery rows.

    Read through the store's API, as ``stats --json`` and ``trace --json`` do (one open
    store instead of a process per question keeps 80 comparisons fast).
    """
    snap: dict[str, Any] = {}
    with Store.open(db) as store:
        for by in STATS_BY:
            for ndr in (False, True):
                snap[f"stats {by} {ndr}"] = store.stats(by=by, include_ndr=ndr)
        for message_id in message_ids or [m.message_id for m in MESSAGES]:
            trace = store.trace(f"<{message_id}>")
            for found in trace:
                found["events"] = [dataclasses.replace(e, raw_ref=None) for e in found["events"]]
            snap[f"trace {message_id}"] = trace
        with store.engine.connect() as conn:
            for table, order in (
                ("deliveries", "key"),
                ("events", "id"),
                ("counters", "bucket, recipient_domain, provider, outcome, reason, stream"),
                (
                    "sender_counters",
                    "bucket, dimension, value, provider, outcome, reason, hard, blame, ndr",
                ),
            ):
                rows = conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {order}"))
                snap[table] = [r._asdict() for r in rows]
    for row in snap["events"]:
        row.pop("raw_ref")
    return snap


def _split(tmp: Path, at: int) -> tuple[Path, Path]:
    old, new = tmp / "mail.log.1.gz", tmp / "mail.log"
    old.write_bytes(gzip.compress("".join(f"{x}\n" for x in LINES[:at]).encode()))
    new.write_text("".join(f"{x}\n" for x in LINES[at:]))
    return old, new


def _index(text: str) -> int:
    return next(i for i, x in enumerate(LINES) if text in x)


def _split_points() -> list[int]:
    """Evenly spread points, and the ones that cut a message where it hurts most."""
    retried = next(m for m in MESSAGES if sum("status=deferred" in x for _, x in m.lines) >= 2)
    deferrals = [x for _, x in retried.lines if "status=deferred" in x]
    notice = next(m for m in MESSAGES if "@mx1.example" in m.message_id)
    smtp = MESSAGES[0]
    points = {
        _index(deferrals[1]),  # between two deferrals of one recipient
        _index(deferrals[0]) + 1,
        _index(f"{smtp.qid}: message-id="),  # after the client= line only
        _index(f"sender non-delivery notification: {notice.qid}"),  # after the notice's first
        _index("status=expired"),
        _index(f"{retried.qid}: removed"),
    }
    points |= set(range(7, len(LINES), max(1, len(LINES) // 12)))
    return sorted(points)


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("whole")
    log = tmp / "mail.log"
    log.write_text("".join(f"{x}\n" for x in LINES))
    db = f"sqlite:///{tmp / 'whole.db'}"
    summary = _ingest(db, log)
    assert summary["unparsed_lines"] == 0 and summary["events"] > 100
    return _snapshot(db)


def test_generated_log_has_the_shapes_that_matter(whole: dict[str, Any]) -> None:
    """The log has multi-recipient messages, retries, bounces, expiries and notices."""
    assert (
        sum(
            len({x.split("to=<")[1].split(">")[0] for _, x in m.lines if "to=<" in x}) >= 3
            for m in MESSAGES
        )
        >= 3
    )
    assert any("status=expired" in x for x in LINES)
    assert any("status=bounced" in x for x in LINES)
    assert any(m.message_id.endswith("@mx1.example") for m in MESSAGES)
    assert len(whole["stats sender_domain False"]) == 3  # one row per sender domain, no "(none)"


@pytest.mark.parametrize("at", _split_points())
def test_split_log_equals_the_whole(tmp_path: Path, whole: dict[str, Any], at: int) -> None:
    """Split at ``at``: one command or two, oldest or newest first, all equal the whole log."""
    old, new = _split(tmp_path, at)
    orders = {
        "one command, oldest first": [(old, new)],
        "one command, newest first": [(new, old)],
        "two commands, oldest first": [(old,), (new,)],
        "two commands, newest first": [(new,), (old,)],
    }
    for name, commands in orders.items():
        db = f"sqlite:///{tmp_path / (name.replace(' ', '_') + '.db')}"
        for paths in commands:
            _ingest(db, *paths)
        assert _snapshot(db) == whole, f"split at line {at}, {name}"


def test_reingest_after_a_join_changes_nothing(tmp_path: Path, whole: dict[str, Any]) -> None:
    """Newest first in two commands, then both files again in any order: nothing changes."""
    old, new = _split(tmp_path, _split_points()[0] + len(LINES) // 2)
    db = f"sqlite:///{tmp_path / 'again.db'}"
    _ingest(db, new)
    joined = _ingest(db, old)
    assert joined["rejoined_messages"] > 0
    assert _snapshot(db) == whole
    for paths in ((new,), (old,), (new, old), (old, new)):
        again = _ingest(db, *paths)
        assert again["stored"] == 0, paths
        assert _snapshot(db) == whole, paths


def test_split_log_on_both_back_ends(tmp_path: Path, db_url: str, whole: dict[str, Any]) -> None:
    """The join replaces stored events and delivery rows on PostgreSQL as on SQLite."""
    old, new = _split(tmp_path, _index(_first_deferral_retry()))
    _ingest(db_url, new)
    _ingest(db_url, old)
    assert _snapshot(db_url) == whole


def _first_deferral_retry() -> str:
    retried = next(m for m in MESSAGES if sum("status=deferred" in x for _, x in m.lines) >= 2)
    return [x for _, x in retried.lines if "status=deferred" in x][1]


EXIM_LOG = "".join(
    p.read_text() for p in sorted((REPO / "tests" / "data" / "exim").glob("*.log"))
).splitlines()


def test_exim_log_split_and_read_newest_first_equals_the_whole(tmp_path: Path) -> None:
    """Exim's delivery lines also take their Message-ID and sender from the ``<=`` line:
    a mainlog split anywhere and read newest first equals the whole."""
    ids = sorted({m.group(1) for m in re.finditer(r" id=(\S+@\S+)", "\n".join(EXIM_LOG))})
    whole = tmp_path / "mainlog"
    whole.write_text("".join(f"{x}\n" for x in EXIM_LOG))
    expected_db = f"sqlite:///{tmp_path / 'whole.db'}"
    _run("ingest", "exim", str(whole), "--db", expected_db, "--json")
    expected = _snapshot(expected_db, ids)
    for at in range(1, len(EXIM_LOG), 2):
        old, new = tmp_path / f"mainlog.{at}.1.gz", tmp_path / f"mainlog.{at}"
        old.write_bytes(gzip.compress("".join(f"{x}\n" for x in EXIM_LOG[:at]).encode()))
        new.write_text("".join(f"{x}\n" for x in EXIM_LOG[at:]))
        for name, commands in (("one", [(new, old)]), ("two", [(new,), (old,)])):
            db = f"sqlite:///{tmp_path / f'{at}-{name}.db'}"
            for paths in commands:
                _run("ingest", "exim", *map(str, paths), "--db", db, "--json")
            assert _snapshot(db, ids) == expected, f"split at line {at}, {name} command(s)"
