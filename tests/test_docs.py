"""The README, docs/ and mailmon.example.toml say what the code does."""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path

from pydantic import BaseModel
from starlette.routing import Route

from monitor.cli import build_parser
from monitor.config import Config, load_config
from monitor.metrics import Metrics
from monitor.service.app import create_app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "mailmon.example.toml"


def _config_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted names of every key the config accepts (`logs.kind` for the array of tables)."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        table = field.annotation
        if isinstance(table, type) and issubclass(table, BaseModel):
            keys |= _config_keys(table, f"{dotted}.")  # a [table]: its keys, not its name
            continue
        keys.add(dotted)
        for item in typing.get_args(table):  # [[logs]]: the array and its keys
            if isinstance(item, type) and issubclass(item, BaseModel):
                keys |= _config_keys(item, f"{dotted}.")
    return keys


def _documented_keys() -> set[str]:
    """Keys in the first column of the reference table of docs/configuration.md."""
    return set(re.findall(r"^\| `([a-z0-9_.]+)` \|", CONFIG_DOC.read_text(), flags=re.M))


def test_configuration_doc_lists_every_key() -> None:
    """docs/configuration.md names every key the config accepts, and no key it rejects."""
    assert _documented_keys() == _config_keys(Config)


def test_example_configs_are_valid() -> None:
    """mailmon.example.toml and the compose stack's config pass the validation of --config."""
    config = load_config(EXAMPLE)
    assert config.logs and config.logs[0].path == "/var/log/mail.log"
    stack = load_config(ROOT / "deploy" / "mailmon" / "mailmon.toml")
    assert stack.service.listen_port == 8465


def test_example_config_shows_every_key() -> None:
    """mailmon.example.toml sets every key, or shows it commented out (optional ones)."""
    text = EXAMPLE.read_text()
    raw = tomllib.loads(text)
    shown: set[str] = set()

    def walk(table: dict[str, object], prefix: str) -> None:
        for key, value in table.items():
            shown.add(prefix + key)
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict):
                    walk(item, f"{prefix}{key}.")

    walk(raw, "")
    section = ""
    for line in text.splitlines():
        # [jobs.NAME], [webhooks.NAME]: the keys of a table of tables are shown as jobs.KEY
        if m := re.match(r"^\[\[?([a-z_]+)(?:\.[a-z_]+)?\]\]?", line):
            section = m.group(1) + "."
        # an optional table shown commented out ([dmarc.imap]): its keys under its full name
        elif m := re.match(r"^# \[([a-z_]+(?:\.[a-z_]+)+)\]", line):
            shown.add(m.group(1))
            section = m.group(1) + "."
        elif m := re.match(r"^# ([a-z_]+) = ", line):
            shown.add(section + m.group(1))
    assert _config_keys(Config) - shown == set()


def test_global_options_before_the_subcommand_count() -> None:
    """`mailmon --db URL CMD` uses URL: the subcommand's own --db must not reset it."""
    parser = build_parser()
    args = parser.parse_args(["--db", "sqlite:////tmp/a.db", "--config", "a.toml", "-v", "stats"])
    assert (args.db, args.config, args.verbose) == ("sqlite:////tmp/a.db", "a.toml", True)
    args = parser.parse_args(["stats", "--db", "sqlite:////tmp/b.db"])
    assert (args.db, args.config, args.verbose) == ("sqlite:////tmp/b.db", None, False)
    args = parser.parse_args(["--db", "sqlite:////tmp/a.db", "stats", "--db", "sqlite:////tmp/b.db"])
    assert args.db == "sqlite:////tmp/b.db"


def _subcommands() -> set[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(typing.cast(dict[str, object], action.choices))


def test_readme_shows_every_subcommand() -> None:
    """Every subcommand of `mailmon --help` is in the README's usage block, and no other."""
    readme = README.read_text()
    block = readme.split("## Using it", 1)[1].split("```")[1]
    shown = set(re.findall(r"^mailmon ([a-z]+)", block, flags=re.M))
    assert shown == _subcommands()
    everywhere = set(re.findall(r"`mailmon ([a-z]+)", readme))
    assert everywhere <= _subcommands()


def _subparser(*command: str) -> typing.Any:
    parser = build_parser()
    for name in command:
        action = next(a for a in parser._actions if isinstance(a.choices, dict) and name in a.choices)
        parser = typing.cast(dict[str, typing.Any], action.choices)[name]
    return parser


def _help(*command: str) -> str:
    return " ".join(_subparser(*command).format_help().split())


def test_serve_help_names_every_endpoint() -> None:
    """`mailmon serve --help` names every path the service answers, as the README does."""
    app = create_app(Metrics())
    paths = {route.path for route in app.routes if isinstance(route, Route)} - {"/"}
    text = _help("serve")
    assert {p for p in paths if p not in text} == set()


def test_dashboards_export_usage_is_unambiguous() -> None:
    """`dashboards export` shows where it reads and where it writes under different names."""
    usage = _subparser("dashboards", "export").format_usage()
    metavars = re.findall(r"\b[A-Z]{3,}\b", usage)
    assert len(metavars) == len(set(metavars)), usage
