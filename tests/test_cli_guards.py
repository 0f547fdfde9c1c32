"""The command line refuses what it cannot do, clearly: stores that do not exist, bad options,
secrets in URLs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import DEFERRED_THEN_EXPIRED, mailmon

READ_COMMANDS = (("stats",), ("trace", "x@example.com"), ("incidents",), ("rollup",))


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_read_command_does_not_create_a_store(tmp_path: Path, command: tuple[str, ...]) -> None:
    """A read command on a SQLite path that does not exist says so and creates nothing."""
    missing = tmp_path / "nonexistent" / "dir" / "x.db"
    proc = mailmon(*command, "--db", f"sqlite:///{missing}", check=False)
    assert proc.returncode == 2
    assert f"no database at {missing}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "nonexistent").exists()


def test_read_command_on_an_empty_postgres_database(postgres_url: str) -> None:
    """A read command on a PostgreSQL database without Mailmon's tables says so, creates none."""
    proc = mailmon("stats", "--db", postgres_url, check=False)
    assert proc.returncode == 2 and "has no Mailmon tables" in proc.stderr
    proc = mailmon("stats", "--db", postgres_url, check=False)
    assert "has no Mailmon tables" in proc.stderr  # the first run created nothing


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A SQLite store with one short Postfix log in it."""
    log = tmp_path / "mail.log"
    log.write_text(DEFERRED_THEN_EXPIRED)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    mailmon("ingest", "postfix", str(log), "--db", db)
    return db


def test_ingest_with_an_unknown_time_zone(tmp_path: Path) -> None:
    """``ingest --tz`` with a name that is no time zone is a usage error, not a traceback."""
    log = tmp_path / "mail.log"
    log.write_text(DEFERRED_THEN_EXPIRED)
    proc = mailmon("ingest", "postfix", "--tz", "X", str(log),
                   "--db", f"sqlite:///{tmp_path / 'm.db'}", check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown time zone 'X'" in proc.stderr
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("stats", "--until", "soon"), "--until"),
        (("rollup", "--at", "soon"), "--at"),
        (("rollup", "--from", "soon"), "--from"),
        (("rollup", "--from", "2026-03-01", "--to", "soon"), "--to"),
    ],
)
def test_time_option_errors_name_their_option(
    store: str, args: tuple[str, ...], option: str
) -> None:
    """An unreadable time names the option it was given to, not ``--since``."""
    proc = mailmon(*args, "--db", store, check=False)
    assert proc.returncode == 2
    assert f"error: {option} 'soon'" in proc.stderr and "--since" not in proc.stderr


@pytest.mark.parametrize(
    "args",
    [("stats", "--limit", "-1"), ("trace", "x@example.com", "--limit", "-1"),
     ("trace", "x@example.com", "--limit", "0")],
)
def test_negative_limits_are_refused(store: str, args: tuple[str, ...]) -> None:
    """``--limit`` below its least meaningful value is a usage error."""
    proc = mailmon(*args, "--db", store, check=False)
    assert proc.returncode == 2 and "argument --limit" in proc.stderr


def test_unknown_incident_kind_is_refused(store: str) -> None:
    """``incidents --kind`` with no such kind lists the kinds there are."""
    proc = mailmon("incidents", "--kind", "bogus", "--db", store, check=False)
    assert proc.returncode == 2
    assert "--kind 'bogus'" in proc.stderr and "domain_rejecting" in proc.stderr
    ok = mailmon("incidents", "--kind", "bounce_rate", "--json", "--db", store)
    assert json.loads(ok.stdout) == []


def test_rollup_from_after_to(store: str) -> None:
    """``rollup --from`` later than ``--to`` says so instead of "no counters stored"."""
    proc = mailmon("rollup", "--from", "2026-03-09", "--to", "2026-03-04", "--db", store,
                   check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "--from 2026-03-09 is later than --to 2026-03-04" in proc.stderr
    assert "no counters" not in proc.stdout


@pytest.mark.parametrize(
    "url",
    ["postgresql//u:s3cret@h/db", "postgresql://u:s3cret@h:port/db",
     "postgresql+nodriver://u:s3cret@h/db", "postgresql://u:s3cret@127.0.0.1:1/db"],
)
def test_database_url_errors_hide_the_password(tmp_path: Path, url: str) -> None:
    """An unusable database URL is named in the error without its password."""
    proc = mailmon("stats", "--db", url, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "s3cret" not in proc.stderr + proc.stdout and "***" in proc.stderr
