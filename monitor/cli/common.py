"""What every subcommand shares: config, database and provider resolution."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.config import Config, find_config_file, load_config, resolve_db_url
from monitor.errors import ConfigError
from monitor.store import Store

if TYPE_CHECKING:
    pass

__all__ = [
    "config_of",
    "count",
    "open_store",
    "parse_since",
    "print_json",
    "time_zone",
]


def config_of(args: argparse.Namespace) -> Config:
    return load_config(find_config_file(getattr(args, "config", None)))


def open_store(args: argparse.Namespace, config: Config, *, create: bool = True) -> Store:
    """The store of ``--db`` / the config; ``create=False`` (read commands): it must exist."""
    return Store.open(resolve_db_url(getattr(args, "db", None), config), create=create)


def count(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: at least {minimum}")
        return value

    return parse


def time_zone(text: str) -> str:
    """An argparse ``type``: an IANA time zone name (``Europe/Berlin``, ``UTC``)."""
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown time zone {text!r} (an IANA name such as UTC or Europe/Berlin)"
        ) from None
    return text


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(
    text: str | None, *, now: datetime | None = None, option: str = "--since"
) -> float | None:
    """``--since`` (or ``option``): a duration back from now (``90m``, ``24h``, ``7d``) or an
    ISO 8601 time."""
    if not text:
        return None
    value = text.strip()
    unit = value[-1:].lower()
    if unit in _UNITS and value[:-1].replace(".", "", 1).isdigit():
        moment = (now or datetime.now(UTC)) - timedelta(seconds=float(value[:-1]) * _UNITS[unit])
        return moment.timestamp()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{option} {text!r}: expected a duration like 24h / 7d or an ISO 8601 time"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def iso(ts: float | None) -> str | None:
    """UNIX seconds as ISO 8601 in UTC (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
