"""The provider rules: well-known domains and MX host suffixes -> mailbox provider.

The rules are data, ``monitor/data/providers.toml``; a config file in the same format
extends them (:meth:`ProviderRules.load`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from monitor.errors import ConfigError
from monitor.model import Provider

__all__ = ["ProviderRules", "ProviderRulesError", "is_hostname", "packaged_rules"]

_PACKAGED_RULES = "data/providers.toml"
_RULE_KEYS = frozenset({"domains", "mx_suffixes"})
_NOT_A_HOSTNAME = frozenset(" \t[]@/\\:;,()<>\"'")


class ProviderRulesError(ConfigError):
    """A provider rules file is unreadable or malformed; the message names file and entry."""


@dataclass(frozen=True, slots=True)
class ProviderRules:
    """The static domain map and the MX suffix map."""

    domains: Mapping[str, Provider]
    mx_suffixes: Mapping[str, Provider]

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> ProviderRules:
        """The packaged rules, extended and overridden by the file at ``path`` if given."""
        packaged = resources.files("monitor").joinpath(_PACKAGED_RULES)
        rules = cls.from_toml(packaged.read_text("utf-8"), source=f"monitor/{_PACKAGED_RULES}")
        if path is not None:
            try:
                text = Path(path).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ProviderRulesError(f"{os.fspath(path)}: cannot read: {exc}") from exc
            rules = rules.extended(cls.from_toml(text, source=os.fspath(path)))
        return rules

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> ProviderRules:
        """Parse rules in the ``providers.toml`` format."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProviderRulesError(f"{source}: {exc}") from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, source: str = "<dict>") -> ProviderRules:
        """Rules from ``{"providers": {name: {"domains": [...], "mx_suffixes": [...]}}}``."""
        unknown = set(data) - {"providers"}
        if unknown:
            raise ProviderRulesError(f"{source}: unknown keys {sorted(unknown)}")
        providers = data.get("providers", {})
        if not isinstance(providers, Mapping):
            raise ProviderRulesError(f"{source}: 'providers' must be a table")
        domains: dict[str, Provider] = {}
        suffixes: dict[str, Provider] = {}
        for name, table in providers.items():
            where = f"{source}: providers.{name}"
            try:
                provider = Provider(name)
            except ValueError:
                known = ", ".join(p.value for p in Provider)
                raise ProviderRulesError(f"{where}: not a provider (one of {known})") from None
            if not isinstance(table, Mapping) or not set(table) <= _RULE_KEYS:
                raise ProviderRulesError(f"{where}: a table with keys {sorted(_RULE_KEYS)}")
            _collect(domains, table.get("domains", []), provider, f"{where}.domains")
            _collect(suffixes, table.get("mx_suffixes", []), provider, f"{where}.mx_suffixes")
        return cls(domains, suffixes)

    def extended(self, other: ProviderRules) -> ProviderRules:
        """These rules with ``other``'s added; ``other`` wins where both name an entry."""
        return ProviderRules(
            {**self.domains, **other.domains}, {**self.mx_suffixes, **other.mx_suffixes}
        )

    def for_domain(self, domain: str) -> Provider | None:
        """The provider of a well-known domain (exact match), else None."""
        return self.domains.get(domain)

    def for_mx_host(self, host: str) -> tuple[Provider, str] | None:
        """``(provider, matched suffix)`` by longest suffix of ``host``, else None."""
        labels = host.rstrip(".").lower().split(".")
        for start in range(len(labels) - 1):  # longest first; a bare TLD never matches
            suffix = ".".join(labels[start:])
            provider = self.mx_suffixes.get(suffix)
            if provider is not None:
                return provider, suffix
        return None


@lru_cache(maxsize=1)
def packaged_rules() -> ProviderRules:
    """The packaged rules, read once: for callers given no configured set."""
    return ProviderRules.load()


def _collect(into: dict[str, Provider], entries: object, provider: Provider, where: str) -> None:
    if not isinstance(entries, list):
        raise ProviderRulesError(f"{where}: must be a list of domain names")
    for entry in entries:
        name = entry.strip().rstrip(".").lower() if isinstance(entry, str) else ""
        if "." not in name or not is_hostname(name):
            raise ProviderRulesError(f"{where}: {entry!r} is not a domain name with a dot")
        if into.get(name, provider) is not provider:
            raise ProviderRulesError(f"{where}: {name} is already mapped to {into[name]}")
        into[name] = provider


def is_hostname(name: str) -> bool:
    return 0 < len(name) <= 253 and "" not in name.split(".") and not _NOT_A_HOSTNAME & set(name)
