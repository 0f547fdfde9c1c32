"""The soak in small: serve killed and its log rotated every way while written, nothing lost or counted twice."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from factories import generated_log

REPO = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_soak", REPO / "bench" / "bench_soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_soak"] = module
    spec.loader.exec_module(module)
    return module


def test_kills_and_rotations_lose_nothing_and_count_nothing_twice(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Three SIGKILLs, a rename (restarted inside its window), a copytruncate regrown past its offset and a gzip while stopped: the store equals one clean ingest."""
    work = tmp_path_factory.mktemp("soak")
    source = generated_log(work / "generated.log", 8000, seed=11)
    report = _bench().soak(
        work / "run", source.read_bytes().splitlines(keepends=True),
        mailmon=[sys.executable, "-m", "monitor"], rate=2000, kills=3, late_seconds=2.0,
        poll_interval=0.2, seed=5,
    )  # fmt: skip
    assert report["caught_up"], report
    assert report["events_truth"] > 3000
    assert (report["events_lost"], report["events_spurious"]) == (0, 0), report
    assert (report["cells_wrong"], report["double_counted"], report["deliveries_wrong"]) == (
        0, 0, 0), report  # fmt: skip
    assert report["lines_counted"] == report["lines_written"], report
    assert report["kills"] == 3 and report["lost_warnings"] == 0 and report["tracebacks"] == 0
