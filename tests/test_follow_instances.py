"""Followers name their checkpoints after their instance; ``serve`` and ``ingest`` share state.

Two ``serve`` on two hosts, each following its own ``/var/log/mail.log`` into one
PostgreSQL, must never read or write each other's position or parser state.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from test_rotation import LINES, _ingest, _snapshot, _split

from monitor.collectors.checkpoints import file_key, state_prefix
from monitor.config import LogSource, default_instance, load_config
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.providers import resolver_for
from monitor.service.follow import Follower
from monitor.store import Store


def _follow(store: Store, path: Path, instance: str) -> Follower:
    metrics = Metrics(CollectorRegistry())
    resolver = resolver_for(load_config(None), store)  # as `serve` and `ingest` resolve
    pipeline = Pipeline(store, resolver=resolver, metrics=metrics)
    return Follower((LogSource(path=str(path)),), pipeline, metrics, instance=instance)


def _host(lines: list[str], host: str) -> str:
    return "".join(x.replace(" mx1 ", f" {host} ", 1) + "\n" for x in lines)


def test_two_instances_on_one_postgresql_keep_their_own_checkpoints(
    tmp_path: Path, postgres_url: str
) -> None:
    """The same path on two hosts: each instance resumes from its own position and state."""
    logs, parked = tmp_path / "log", tmp_path / "parked"
    logs.mkdir()
    parked.mkdir()
    mail_log = logs / "mail.log"  # the path both hosts' logs have
    mx1, mx2 = LINES[:120], LINES[:200]
    (parked / "mx1").write_text(_host(mx1, "mx1"))
    (parked / "mx2").write_text(_host(mx2, "mx2"))
    with Store.open(postgres_url) as store:
        (parked / "mx1").rename(mail_log)  # a rename keeps the file's identity (its inode)
        assert _follow(store, mail_log, "mx1").poll_once() == len(mx1)
        mail_log.rename(parked / "mx1")
        (parked / "mx2").rename(mail_log)  # now the path holds the other host's log
        assert _follow(store, mail_log, "mx2").poll_once() == len(mx2)
        mail_log.rename(parked / "mx2")
        (parked / "mx1").rename(mail_log)
        with mail_log.open("a") as f:
            f.write(_host(LINES[120:130], "mx1"))
        assert _follow(store, mail_log, "mx1").poll_once() == 10  # only what is new
        one = store.checkpoint(file_key("mx1", "postfix", str(mail_log)))
        two = store.checkpoint(file_key("mx2", "postfix", str(mail_log)))
        assert one is not None and two is not None
        assert (one["counts"]["lines"], two["counts"]["lines"]) == (130, 200)
        # Each instance's parser state holds its own host's messages in flight only.
        hosts = {
            name: {
                k.split("\x1f")[0] for k in store.checkpoints_under(state_prefix(name, "postfix"))
            }
            for name in ("mx1", "mx2")
        }
        assert hosts == {"mx1": {"mx1"}, "mx2": {"mx2"}}


def test_a_checkpoint_from_before_instances_is_taken_over(tmp_path: Path) -> None:
    """A store written before checkpoint keys named an instance: the follower resumes from
    the old key's position and parser state, and the old keys are gone after its next write."""
    log = tmp_path / "mail.log"
    log.write_text(_host(LINES[:100], "mx1"))
    db = f"sqlite:///{tmp_path / 'm.db'}"
    with Store.open(db) as store:
        assert _follow(store, log, "old").poll_once() == 100
    legacy = f"postfix:{log}"
    engine = sa.create_engine(db)
    with engine.begin() as conn:  # the keys as the previous version wrote them
        conn.execute(
            sa.text("UPDATE checkpoints SET source = :new WHERE source = :old"),
            {"new": legacy, "old": file_key("old", "postfix", str(log))},
        )
        conn.execute(
            sa.text(
                "UPDATE checkpoints SET source = :legacy || substr(source, :cut)"
                " WHERE source LIKE 'old:postfix' || char(31) || '%'"
            ),
            {"legacy": f"{legacy}\x1fstate\x1f", "cut": len(state_prefix("old", "postfix")) + 1},
        )
        in_flight = conn.execute(
            sa.text("SELECT count(*) FROM checkpoints WHERE source LIKE :p"),
            {"p": f"{legacy}%state%"},
        ).scalar_one()
    engine.dispose()
    assert in_flight > 0
    with log.open("a") as f:
        f.write(_host(LINES[100:], "mx1"))
    whole = tmp_path / "whole.log"
    whole.write_text(_host(LINES, "mx1"))
    with Store.open(db) as store:
        assert _follow(store, log, "mx9").poll_once() == len(LINES) - 100
        assert store.checkpoint(legacy) is None
        assert store.checkpoints_under(f"{legacy}\x1fstate\x1f") == {}
        assert store.checkpoint(file_key("mx9", "postfix", str(log)))["counts"]["lines"] == len(
            LINES
        )
    expected = f"sqlite:///{tmp_path / 'whole.db'}"
    _ingest(expected, whole)
    assert _snapshot(db) == _snapshot(expected)


def test_serve_goes_on_from_the_state_ingest_left(tmp_path: Path) -> None:
    """``ingest`` of the rotated part, then ``serve`` following the current file: the
    messages that cross the rotation come out as from the unsplit log."""
    old, new = _split(tmp_path, len(LINES) // 2)
    db = f"sqlite:///{tmp_path / 'split.db'}"
    _ingest(db, old)
    with Store.open(db) as store:
        assert _follow(store, new, default_instance()).poll_once() == len(LINES) - len(LINES) // 2
    whole = tmp_path / "whole.log"
    whole.write_text("".join(f"{x}\n" for x in LINES))
    expected = f"sqlite:///{tmp_path / 'whole.db'}"
    _ingest(expected, whole)
    assert _snapshot(db) == _snapshot(expected)
