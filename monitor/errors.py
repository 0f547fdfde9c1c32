"""Mailmon's exceptions.

    MailmonError
    ├── ConfigError        the config file or an option is invalid
    ├── StoreError         the database cannot be opened or is of an unknown schema
    └── InputError         an input file cannot be read (missing, permission denied)

The CLI turns any ``MailmonError`` into one clear line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "InputError", "MailmonError", "StoreError"]


class MailmonError(Exception):
    """Base class of every error Mailmon reports to the user."""


class ConfigError(MailmonError):
    """The configuration is invalid."""


class StoreError(MailmonError):
    """The store cannot be used."""


class InputError(MailmonError):
    """An input cannot be read."""
