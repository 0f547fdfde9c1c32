"""Reading the Grafana dashboards of ``dashboards/`` in tests: panels, queries, variables."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"

#: Grafana's built-in variables, as a dashboard over the last hour would expand them.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$", re.S)


def load_all() -> dict[str, dict[str, Any]]:
    """File name -> dashboard, for every JSON file in ``dashboards/``."""
    return {p.name: json.loads(p.read_text("utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for p in board.get("panels", []):
        yield p
        yield from p.get("panels", [])


def query_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The panels that show data (all but rows)."""
    return (p for p in panels(board) if p.get("type") != "row")


def variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    return list(board.get("templating", {}).get("list", []))


def used_variables(text: str) -> set[str]:
    """Names of the variables referred to in ``text`` ($x, ${x}, ${x:fmt}, [[x]])."""
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def label_values(definition: str) -> tuple[str | None, str]:
    """(series selector or None, label) of a ``label_values(...)`` variable query."""
    m = _LABEL_VALUES.match(definition.strip())
    if m is None:
        raise ValueError(f"not a label_values() query: {definition!r}")
    return m["selector"], m["label"]


def substitute(text: str, values: dict[str, str]) -> str:
    """``text`` with every variable replaced by ``values`` (builtins included)."""
    table = BUILTINS | values

    def one(m: re.Match[str]) -> str:
        name = next(g for g in m.groups() if g)
        return table[name]

    return _VARIABLE.sub(one, text)
