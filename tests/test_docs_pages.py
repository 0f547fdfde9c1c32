"""docs/: the generated configuration reference, the runbook against the alerts, the links."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from monitor import config_doc
from monitor.collectors.registry import line_kinds
from monitor.config import Config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUNBOOK = DOCS / "runbook.md"
RULES = ROOT / "alerts" / "mailmon.rules.yml"


def test_configuration_reference_is_what_the_generator_writes() -> None:
    """The generated part of docs/configuration.md is `make docs`' output for this schema."""
    text = config_doc.DOC.read_text(encoding="utf-8")
    assert config_doc.generated(text) == text, "docs/configuration.md is stale: run `make docs`"
    assert config_doc.main(["--check"]) == 0


def test_generated_reference_has_a_row_per_key_with_its_default_and_bounds() -> None:
    """One row per key, in the schema's order, with defaults and bounds from the models."""
    rows = {key: (kind, default, bounds) for key, kind, default, bounds in config_doc.table()}
    assert rows["service.listen_port"] == ("integer", "`8465`", "≥ 0, ≤ 65535")
    assert rows["logs.start_at"][0] == "`beginning` or `end`"
    assert rows["logs.path"][1] == "required"
    assert rows["api.token_file"][:2] == ("string, optional", "none")
    assert rows["rollup.floor"][2] == "> 0, < 1"
    assert Config().rollup.floor == 0.10 and rows["rollup.floor"][1] == "`0.1`"


def _alerts() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def test_runbook_has_one_section_per_alert_and_no_other() -> None:
    """Every alert of alerts/mailmon.rules.yml has a section, and every alert-named section
    (`## Mailmon...`) an alert."""
    sections = re.findall(r"^## (Mailmon\w+)\s*$", RUNBOOK.read_text(), flags=re.M)
    assert len(sections) == len(set(sections)), "a section twice"
    assert sorted(sections) == sorted(set(_alerts()))


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_in_the_docs_lead_somewhere() -> None:
    """Every relative link of README.md and docs/*.md names a file that exists, and its
    #anchor a heading of that file."""
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    broken = []
    for page in pages:
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and not line.startswith("#!"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


def test_every_collector_has_its_page() -> None:
    """Each log kind has docs/KIND.md, linked from docs/collectors.md with the other sources."""
    index = (DOCS / "collectors.md").read_text()
    for kind in line_kinds():
        assert (DOCS / f"{kind}.md").exists(), kind
        assert f"({kind}.md)" in index, kind
    for page in ("webhooks.md", "mail.md", "dmarc.md"):
        assert f"({page})" in index, page
