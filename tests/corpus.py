"""The third-party corpus tests' shared steps: read each file's outcomes, hold them to the
committed expectations, and find the outcome lines a parser left unparsed.

Each MTA's test module says which files it reads, how it frames their lines and which
lines must always become events; these helpers are the parts that are the same for all.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from golden import REGEN, check_json
from parsing import outcome

__all__ = ["MTA_LOGS", "check_expectations", "corpus_outcomes", "missed_outcomes"]

MTA_LOGS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "mta-logs"


def corpus_outcomes(
    names: Iterable[str],
    lines_of: Callable[[str], Iterator[tuple[int, str]]],
    new_parser: Callable[[], Any],
) -> tuple[dict[str, str], dict[str, str]]:
    """Outcome per "file:line", and the lines themselves (for messages only)."""
    if not MTA_LOGS.is_dir():
        pytest.fail(
            f"corpus missing: {MTA_LOGS} (the repository's parent directory must hold "
            "shared/corpora, as in CI); this test never skips"
        )
    outcomes: dict[str, str] = {}
    texts: dict[str, str] = {}
    for name in names:
        parser = new_parser()  # one per file: a file's messages correlate, files do not
        for number, line in lines_of(name):
            key = f"{name}:{number}"
            outcomes[key] = outcome(parser, line)
            texts[key] = line
    return outcomes, texts


def check_expectations(
    expectations: Path, outcomes: dict[str, str], texts: dict[str, str], kind: str
) -> None:
    """Each line has its committed outcome; prints the unsupported lines grouped by ``kind``."""
    unsupported: dict[str, list[str]] = defaultdict(list)
    for key, result in outcomes.items():
        if result.startswith("unparsed:"):
            unsupported[result[9:]].append(f"  {key}: {texts[key][:160]}")
    report = "\n".join(
        f"{group} ({len(items)}):\n" + "\n".join(items)
        for group, items in sorted(unsupported.items())
    )
    print(f"unsupported corpus lines by {kind}:\n{report}")
    if REGEN:
        check_json(expectations, outcomes)
        return
    assert expectations.exists(), f"{expectations} missing: run with MAILMON_REGEN_GOLDEN=1"
    expected = json.loads(expectations.read_text(encoding="utf-8"))
    assert isinstance(expected, dict)
    diffs = [
        f"  {key}: expected {expected.get(key)}, got {outcomes.get(key)}: {texts.get(key, '')[:120]}"
        for key in sorted(set(expected) | set(outcomes))
        if expected.get(key) != outcomes.get(key)
    ]
    assert not diffs, "corpus outcomes changed (MAILMON_REGEN_GOLDEN=1 to accept):\n" + "\n".join(
        diffs
    )


def missed_outcomes(
    outcomes: dict[str, str], texts: dict[str, str], should_be_events: re.Pattern[str]
) -> list[str]:
    """The unparsed lines that match ``should_be_events``, each with its text."""
    return [
        f"{key}: {texts[key][:160]}"
        for key, result in outcomes.items()
        if result.startswith("unparsed:") and should_be_events.search(texts[key])
    ]
