"""Golden files: compare output with a committed expectation, or rewrite it on request.

Run with ``MAILMON_REGEN_GOLDEN=1`` to write the expected files from the current output,
then review the diff like any other change::

    MAILMON_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_postfix_parser.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["REGEN", "check_json", "check_jsonl"]

REGEN = os.environ.get("MAILMON_REGEN_GOLDEN") == "1"
_HOW = "run with MAILMON_REGEN_GOLDEN=1 to (re)write it, then review the diff"


def _normal(value: object) -> object:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def check_jsonl(path: Path, records: list[dict[str, object]]) -> None:
    """Assert ``records`` equal the JSON lines in ``path`` (or write them when regenerating)."""
    if REGEN:
        path.write_text(
            "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records),
            encoding="utf-8",
        )
        return
    assert path.exists(), f"{path} is missing: {_HOW}"
    lines = path.read_text(encoding="utf-8").splitlines()
    expected = [json.loads(line) for line in lines if line.strip()]
    actual = _normal(records)
    assert isinstance(actual, list)
    for number, (got, want) in enumerate(zip(actual, expected, strict=False), start=1):
        assert got == want, f"{path.name} record {number} differs ({_HOW} if intended)"
    assert len(actual) == len(expected), (
        f"{path.name}: {len(actual)} records, expected {len(expected)} ({_HOW} if intended)"
    )


def check_json(path: Path, value: object) -> None:
    """Assert ``value`` equals the JSON document in ``path`` (or write it when regenerating)."""
    if REGEN:
        path.write_text(
            json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
        return
    assert path.exists(), f"{path} is missing: {_HOW}"
    assert _normal(value) == json.loads(path.read_text(encoding="utf-8")), (
        f"{path.name} differs ({_HOW} if intended)"
    )
