"""Load and validate the classification rules in ``monitor/data/classify/*.toml``.

One file per family (a provider, a filter vendor, DNSBL texts, generic MTA texts) holds
``[[rule]]`` tables; ``rfc3463.toml`` holds the code tables used when no text rule
decides.  A family file reads::

    family = "google"            # the file's stem; every rule id starts with "google."
    priority = 10                # families run in ascending priority (ties: by name)
    providers = ["google"]       # run first when the receiving provider is one of these
    source = "https://..."       # default source of the rules below

    [[rule]]
    id = "google.unsolicited"
    match = ["likely unsolicited", "x+"]   # regex(es) on the lower-cased, space-folded text
    status = ["5.7.1", "x.7.28", "4.7."] # optional: exact, any class ("x."), prefix (".")
    code = [550]                 # optional reply codes
    provider = ["google"]        # optional: only for these receiving providers
    command = ["DATA"]           # optional SMTP commands
    unless = "user unknown"      # optional regex that vetoes the rule
    reason = "spamdetected"
    blame = "reputation"
    hard = false                 # optional: overrides the reason's hard/soft default
    source = "https://support.google.com/a/answer/3726730"

Unknown keys, unknown reasons or blames, duplicate ids and regexes that do not compile
raise :class:`RuleError` when the rules load: a bad rule file fails loudly, never silently.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from monitor.errors import ConfigError

__all__ = [
    "BLAMES",
    "REASONS",
    "CodeTable",
    "Rule",
    "RuleError",
    "RuleSet",
    "load_rules",
]

#: The reason vocabulary (Sisimai 5.2; DESIGN.md "Bounce classes").
REASONS = frozenset(
    (
        "userunknown hostunknown hasmoved notaccept mailboxfull suspend filtered rejected"
        " blocked badreputation spamdetected virusdetected policyviolation authfailure"
        " requireptr notcompliantrfc contenterror securityerror failedstarttls norelaying"
        " syntaxerror systemerror systemfull networkerror expired mailererror exceedlimit"
        " mesgtoobig toomanyconn speeding ratelimited suppressed onhold undefined delivered"
        " feedback vacation"
    ).split()
)

#: Who has to act (issue 4): the blame label's bounded set.
BLAMES = frozenset(
    "recipient reputation authentication content policy rate infrastructure unknown".split()
)

_FILE_KEYS = frozenset({"family", "priority", "providers", "source", "description", "rule"})
_RULE_KEYS = frozenset(
    {
        "id", "match", "status", "code", "provider", "command", "unless",
        "reason", "blame", "hard", "source", "note",
    }
)  # fmt: skip
_TABLE_KEYS = frozenset(
    {"family", "priority", "source", "description", "status", "reply_code", "vague_reply_codes"}
)
_STATUS_FORM = re.compile(r"(?:[245x]\.)(?:\d{1,3}\.?(?:\d{1,3})?)?|[245x]\.")
_COMMANDS = frozenset({"CONNECT", "HELO", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA"})


class RuleError(ConfigError):
    """A classification rule file is invalid."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One text rule: when its conditions hold and ``match`` is found, it decides."""

    id: str
    family: str
    reason: str
    blame: str
    source: str
    match: re.Pattern[str] | None = None
    alternatives: tuple[str, ...] = ()
    unless: re.Pattern[str] | None = None
    status: tuple[str, ...] = ()
    codes: frozenset[int] = frozenset()
    providers: frozenset[str] = frozenset()
    commands: frozenset[str] = frozenset()
    hard: bool | None = None

    def accepts(
        self, code: int | None, status: str | None, provider: str | None, command: str | None
    ) -> bool:
        """Whether the rule's non-text conditions hold for this reply."""
        if self.codes and code not in self.codes:
            return False
        if self.status and not (status and any(_status_is(status, s) for s in self.status)):
            return False
        if self.providers and provider not in self.providers:
            return False
        return not (self.commands and command not in self.commands)


def _status_is(status: str, pattern: str) -> bool:
    """``pattern`` is exact (5.7.1), any class (x.7.1) or a prefix ending in a dot (5.7.)."""
    if pattern.startswith("x."):
        status, pattern = status[2:], pattern[2:]
    if pattern.endswith("."):
        return status.startswith(pattern)
    return status == pattern


@dataclass(frozen=True, slots=True)
class CodeTable:
    """The RFC 3463 / RFC 5321 fallback: enhanced status, its subject, the reply code."""

    source: str
    status: Mapping[str, tuple[str, str]]
    reply_code: Mapping[str, tuple[str, str]]
    #: reply codes that say nothing more than an "x.0.0" status beside them
    vague: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    priority: int
    providers: frozenset[str]
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every family's rules, in evaluation order, and the code table."""

    families: tuple[Family, ...]
    table: CodeTable

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(r for f in self.families for r in f.rules)

    def ordered(self, provider: str | None) -> tuple[Rule, ...]:
        """The rules in the order they are tried: the provider's own families first."""
        own = [f for f in self.families if provider and provider in f.providers]
        rest = [f for f in self.families if f not in own]
        return tuple(r for f in (*own, *rest) for r in f.rules)


def _strings(value: object, where: str, *, upper: bool = False) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{where}: expected a string or a list of strings")
    return tuple(v.upper() if upper else v for v in value)


def _alternatives(value: object, where: str) -> tuple[str, ...]:
    """A regex or a list of regexes (alternatives), each checked to compile."""
    items = _strings(value, where)
    for item in items:
        if re.sub(r"\\.", "", item) != re.sub(r"\\.", "", item).lower():
            raise RuleError(f"{where}: write {item!r} in lower case (the text is lower-cased)")
        try:
            re.compile(item)
        except re.error as exc:
            raise RuleError(f"{where}: {item!r} does not compile: {exc}") from None
    return items


def _regex(value: object, where: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in _alternatives(value, where)))


def _verdict(reason: object, blame: object, where: str) -> tuple[str, str]:
    if reason not in REASONS:
        raise RuleError(f"{where}: unknown reason {reason!r}")
    if blame not in BLAMES:
        raise RuleError(f"{where}: unknown blame {blame!r} (one of {', '.join(sorted(BLAMES))})")
    assert isinstance(reason, str) and isinstance(blame, str)
    return reason, blame


def _rule(raw: object, family: str, default_source: str | None, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: a rule is a table")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid.startswith(f"{family}.") or rid == f"{family}.":
        raise RuleError(f"{where}: id must be a string starting with {family!r}.")
    where = f"{where} ({rid})"
    reason, blame = _verdict(raw.get("reason"), raw.get("blame"), where)
    source = raw.get("source", default_source)
    if not isinstance(source, str) or not source.strip():
        raise RuleError(f"{where}: every rule needs a source (a URL or a library file)")
    status = _strings(raw.get("status", []), f"{where}.status")
    for s in status:
        if not _STATUS_FORM.fullmatch(s):
            raise RuleError(f"{where}.status: {s!r} is not 5.7.1, x.7.1 or a prefix like 4.7.")
    codes = raw.get("code", [])
    if isinstance(codes, int):
        codes = [codes]
    if not isinstance(codes, list) or not all(isinstance(c, int) and 200 <= c < 600 for c in codes):
        raise RuleError(f"{where}.code: expected reply codes (integers 200-599)")
    commands = _strings(raw.get("command", []), f"{where}.command", upper=True)
    if set(commands) - _COMMANDS:
        raise RuleError(f"{where}.command: one of {', '.join(sorted(_COMMANDS))}")
    hard = raw.get("hard")
    if hard is not None and not isinstance(hard, bool):
        raise RuleError(f"{where}.hard: expected true or false")
    alternatives = _alternatives(raw["match"], f"{where}.match") if "match" in raw else ()
    match = re.compile("|".join(f"(?:{a})" for a in alternatives)) if alternatives else None
    if match is None and not (status or codes):
        raise RuleError(f"{where}: a rule without match needs a status or code condition")
    return Rule(
        id=rid,
        family=family,
        reason=reason,
        blame=blame,
        source=source,
        match=match,
        alternatives=alternatives,
        unless=_regex(raw["unless"], f"{where}.unless") if "unless" in raw else None,
        status=status,
        codes=frozenset(codes),
        providers=frozenset(_strings(raw.get("provider", []), f"{where}.provider")),
        commands=frozenset(commands),
        hard=hard,
    )


def _family(name: str, data: Mapping[str, object], where: str) -> Family:
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if data.get("family") != name:
        raise RuleError(f"{where}: family must be {name!r} (the file name)")
    priority = data.get("priority", 50)
    if not isinstance(priority, int):
        raise RuleError(f"{where}: priority must be an integer")
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise RuleError(f"{where}: source must be a string")
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list) or not raw_rules:
        raise RuleError(f"{where}: expected [[rule]] tables")
    rules = tuple(_rule(r, name, source, f"{where} rule {i + 1}") for i, r in enumerate(raw_rules))
    providers = frozenset(_strings(data.get("providers", []), f"{where}.providers"))
    return Family(name, priority, providers, rules)


def _table(data: Mapping[str, object], where: str) -> CodeTable:
    unknown = set(data) - _TABLE_KEYS
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    source = data.get("source")
    if not isinstance(source, str) or not source.strip():
        raise RuleError(f"{where}: the code table needs a source")
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for key in ("status", "reply_code"):
        section = data.get(key)
        if not isinstance(section, dict):
            raise RuleError(f"{where}: missing [{key}] table")
        entries = {}
        for code, value in section.items():
            if not (isinstance(value, list) and len(value) == 2):
                raise RuleError(f"{where}.{key}.{code}: expected [reason, blame]")
            entries[code] = _verdict(value[0], value[1], f"{where}.{key}.{code}")
        out[key] = entries
    vague = data.get("vague_reply_codes", [])
    if not isinstance(vague, list) or not all(v in out["reply_code"] for v in vague):
        raise RuleError(f"{where}: vague_reply_codes must list codes of [reply_code]")
    return CodeTable(source, out["status"], out["reply_code"], frozenset(vague))


def parse_files(files: Iterable[tuple[str, str]]) -> RuleSet:
    """A rule set from ``(name, toml text)`` pairs; ``rfc3463`` is the code table."""
    families: list[Family] = []
    table: CodeTable | None = None
    seen: dict[str, str] = {}
    for name, text in files:
        where = f"classify/{name}.toml"
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RuleError(f"{where}: {exc}") from None
        if name == "rfc3463":
            table = _table(data, where)
            continue
        family = _family(name, data, where)
        for rule in family.rules:
            if rule.id in seen:
                raise RuleError(f"{where}: duplicate rule id {rule.id} (also in {seen[rule.id]})")
            seen[rule.id] = where
        families.append(family)
    if table is None:
        raise RuleError("classify/rfc3463.toml: the code table is missing")
    families.sort(key=lambda f: (f.priority, f.name))
    return RuleSet(tuple(families), table)


def load_rules(directory: str | Path | None = None) -> RuleSet:
    """Load the rules from ``directory`` (default: the packaged ``monitor/data/classify``)."""
    if directory is not None:
        paths = sorted(Path(directory).glob("*.toml"))
        return parse_files((p.stem, p.read_text("utf-8")) for p in paths)
    return _packaged()


@lru_cache(maxsize=1)
def _packaged() -> RuleSet:
    base = resources.files("monitor.data").joinpath("classify")
    files = sorted(
        (entry.name.removesuffix(".toml"), entry.read_text("utf-8"))
        for entry in base.iterdir()
        if entry.name.endswith(".toml")
    )
    return parse_files(files)
