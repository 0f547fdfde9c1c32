"""Secrets named in the config by an environment variable or a file, read when needed."""

from __future__ import annotations

import os
from pathlib import Path

from monitor.errors import ConfigError

__all__ = ["read_secret", "required"]


def read_secret(prefix: str, kind: str, env: str | None, file: str | None) -> str | None:
    """A secret named by ``<kind>_env`` (an environment variable) or ``<kind>_file``.

    The variable wins when it is set; a variable that is named but not set falls back to
    the file, else is an error. None when neither is named.  Errors name the key and the
    variable or file, never a value (``prefix`` is where the keys are, e.g. ``send``).
    """
    if env:
        if value := os.environ.get(env, "").strip():
            return value
        if not file:
            raise ConfigError(f"{prefix}.{kind}_env: {env} is not set")
    if not file:
        return None
    try:
        value = Path(file).read_text("utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{prefix}.{kind}_file {file}: {exc.strerror or exc}") from None
    if not value:
        raise ConfigError(f"{prefix}.{kind}_file {file} is empty")
    return value


def required(prefix: str, kind: str, value: str | None) -> str:
    if value is None:
        raise ConfigError(f"{prefix}: set {kind}_env or {kind}_file")
    return value
