"""Opening a store: many processes at once on a fresh database, and read-only opens."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.errors import StoreError
from monitor.store import Store
from monitor.store.migrations import LATEST

#: Waits for the start signal (a file), then opens the store: all start within milliseconds.
_OPEN = """
import os, sys, time
from monitor.store import Store
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
with Store.open(sys.argv[1]) as store:
    print(store.count("events"))
"""


def test_ten_processes_open_a_fresh_store_at_once(db_url: str, tmp_path: Path) -> None:
    """Ten processes opening the same new database together all succeed; one creates it."""
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _OPEN, db_url, str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(10)
    ]
    time.sleep(1.5)  # every interpreter has started and waits for the signal
    go.touch()
    results = [(p.wait(120), *p.communicate()) for p in procs]
    failures = [err for code, _out, err in results if code != 0]
    assert failures == [], failures[0]
    assert [out.strip() for _code, out, _err in results] == ["0"] * 10
    with Store.open(db_url, create=False) as store:
        assert store.schema_version == LATEST and store.count("events") == 0


def test_open_without_create_leaves_a_missing_sqlite_file_missing(tmp_path: Path) -> None:
    """``Store.open(create=False)`` on a path that does not exist raises and creates nothing."""
    path = tmp_path / "no" / "such.db"
    with pytest.raises(StoreError, match="no database at"):
        Store.open(f"sqlite:///{path}", create=False)
    assert not (tmp_path / "no").exists()


def test_open_without_create_reads_an_existing_store(db_url: str) -> None:
    """A store created once opens read-only afterwards, on both back ends."""
    Store.open(db_url).close()
    with Store.open(db_url, create=False) as store:
        assert store.count("events") == 0
