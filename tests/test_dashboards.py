"""The Grafana dashboards of ``dashboards/``: generated, well-formed, on the metrics contract.

Their queries are run against a real Prometheus in
``tests/integration/test_dashboards_promql.py``.
"""

from __future__ import annotations

import importlib.util
import json
import re
from types import ModuleType
from typing import Any

import pytest
import yaml
from grafana_boards import (
    BUILTINS,
    DASHBOARDS,
    ROOT,
    label_values,
    load_all,
    panels,
    query_panels,
    used_variables,
    variables,
)

from monitor.classify import REASONS

BOARDS = load_all()
DS = {"type": "prometheus", "uid": "${datasource}"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metric_names() -> set[str]:
    """Metric names of docs/metrics.md (with a counter's _total and a histogram's series)."""
    names: set[str] = set()
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        m = re.match(r"\| `(mailmon_\w+)` \| (\w+) \|", line)
        if m:
            name, kind = m.groups()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def _recorded() -> set[str]:
    rules = yaml.safe_load((ROOT / "alerts" / "recording.rules.yml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def test_expected_dashboards_exist() -> None:
    """The overview, drill-down, bounce, latency, ingestion, placement and DMARC/posture
    dashboards are all there."""
    assert set(BOARDS) == {
        "mailmon-overview.json", "mailmon-domain.json", "mailmon-bounces.json",
        "mailmon-latency.json", "mailmon-ingestion.json", "mailmon-placement.json",
        "mailmon-dmarc-posture.json",
    }  # fmt: skip


def test_json_is_what_the_generator_writes() -> None:
    """Every JSON file equals dashboards/generate.py's output: nobody edited one by hand."""
    rendered = _generator().render()
    assert set(rendered) == set(BOARDS)
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text("utf-8") == text, f"{name}: run dashboards/generate.py"


def test_uids_and_titles_are_unique_and_named_after_the_file() -> None:
    """Each dashboard's uid is its file name; uids and titles are unique (push keys on the uid)."""
    uids = [b["uid"] for b in BOARDS.values()]
    titles = [b["title"] for b in BOARDS.values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    for name, board in BOARDS.items():
        assert name == f"{board['uid']}.json"
        assert len(board["uid"]) <= 40  # Grafana's limit
        assert "id" not in board, "a dashboard id is per Grafana instance; only the uid is ours"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panel_ids_unique_and_every_panel_has_queries(name: str) -> None:
    """Panel ids are unique; every non-row panel has targets, each with a PromQL expression."""
    board = BOARDS[name]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), ids
    shown = list(query_panels(board))
    assert shown, "a dashboard without panels"
    for p in shown:
        assert p.get("title"), p
        targets = p.get("targets") or []
        assert targets, f"panel {p['title']!r} has no targets"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), p["title"]
        for t in targets:
            assert t.get("expr", "").strip(), f"panel {p['title']!r}: empty expression"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_query_uses_the_datasource_variable(name: str) -> None:
    """No datasource uid is hard-coded: panels, targets and variables use ${datasource}."""
    board = BOARDS[name]
    ds_vars = [v for v in variables(board) if v["type"] == "datasource"]
    assert len(ds_vars) == 1 and ds_vars[0]["name"] == "datasource"
    assert ds_vars[0]["query"] == "prometheus"
    for p in query_panels(board):
        assert p["datasource"] == DS, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, p["title"]
    for v in variables(board):
        if v["type"] == "query":
            assert v["datasource"] == DS, v["name"]
    uids = re.findall(r'"uid":\s*"([^"]*)"', json.dumps(board))
    assert set(uids) == {board["uid"], "${datasource}"}, uids


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_template_variables_resolve(name: str) -> None:
    """Every variable a query uses is defined before it (or built in), and every defined one
    is used; query variables are label_values() over a metric of docs/metrics.md."""
    board = BOARDS[name]
    defined: list[str] = []
    for v in variables(board):
        if v["type"] == "query":
            selector, _ = label_values(v["definition"])
            assert selector is not None
            metric = re.match(r"\w+", selector)
            assert metric and metric.group(0) in _metric_names(), v["definition"]
            assert used_variables(v["definition"]) <= set(defined), v["name"]
            assert v["query"]["query"] == v["definition"]
        defined.append(v["name"])
    used: set[str] = set()
    for p in query_panels(board):
        for t in p["targets"]:
            names = used_variables(t["expr"]) | used_variables(t.get("legendFormat", ""))
            missing = names - set(defined) - set(BUILTINS)
            assert not missing, f"panel {p['title']!r} uses undefined {missing}"
            used |= names
    for p in query_panels(board):
        used |= used_variables(json.dumps(p["datasource"]))
    assert set(defined) <= used, f"defined but unused: {set(defined) - used}"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_queries_name_only_known_series(name: str) -> None:
    """Every mailmon series a query reads is in docs/metrics.md or a recording rule."""
    known = _metric_names() | _recorded()
    for p in query_panels(BOARDS[name]):
        for t in p["targets"]:
            names = set(re.findall(r"[a-z_:]*mailmon_[a-z0-9_:]*", t["expr"]))
            assert names <= known, f"panel {p['title']!r}: unknown {names - known}"
            assert names or 'up{job="mailmon"}' in t["expr"], p["title"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_layout_fits_the_grid_without_overlaps(name: str) -> None:
    """Panels sit inside Grafana's 24-column grid and never overlap."""
    taken: set[tuple[int, int]] = set()
    for p in panels(BOARDS[name]):
        g: dict[str, Any] = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                 for y in range(g["y"], g["y"] + g["h"])}  # fmt: skip
        assert not cells & taken, f"panel {p['title']!r} overlaps another"
        taken |= cells


def test_every_rollup_series_is_on_a_dashboard() -> None:
    """Each rollup-engine gauge of docs/metrics.md (mailmon_domain_*, mailmon_provider_*,
    mailmon_sending_ip_*) and the open-incidents recording rule is read by some panel: a new
    detector shows up."""
    levels = ("mailmon_domain_", "mailmon_provider_", "mailmon_sending_ip_")
    rollup = {n for n in _metric_names() if n.startswith(levels)}
    assert {n for n in rollup if n.startswith("mailmon_sending_ip_")}, "docs/metrics.md lost them"
    wanted = rollup | {"kind:mailmon_incidents_open:sum"}
    read: set[str] = set()
    for board in BOARDS.values():
        for p in query_panels(board):
            for t in p["targets"]:
                read |= set(re.findall(r"[a-z_:]*mailmon_[a-z0-9_:]*", t["expr"]))
    assert wanted <= read, f"on no dashboard: {sorted(wanted - read)}"


def test_blame_groups_cover_every_reason_once() -> None:
    """The blame panels' reason groups partition the bounce vocabulary."""
    groups = _generator().BLAME_OF_REASON
    listed = [r for reasons in groups.values() for r in reasons]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(REASONS)
