"""``[seeds]``: the seed mailboxes, the submission path and the probe messages (docs/seeds.md).

Secrets (IMAP passwords or XOAUTH2 tokens, the SMTP password) are named here by an
environment variable (``*_env``) or a file (``*_file``) and read when a run needs them,
never stored in the config or shown in an error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from monitor.errors import ConfigError
from monitor.model import Provider
from monitor.secrets import read_secret

__all__ = ["PROVIDER_ALIASES", "SeedConfig", "SeedsConfig", "SmtpConfig", "TemplateConfig"]

#: What users call the providers, to the bounded ``provider`` label.
PROVIDER_ALIASES = {
    "gmail": "google", "googlemail": "google", "workspace": "google",
    "outlook": "microsoft", "hotmail": "microsoft", "live": "microsoft", "office365": "microsoft",
    "m365": "microsoft", "aol": "yahoo", "icloud": "apple", "me": "apple", "web.de": "gmx",
    "own": "other", "self": "other",
}  # fmt: skip

Security = Literal["tls", "starttls", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedConfig(_Strict):
    """One seed mailbox (``[[seeds.mailboxes]]``)."""

    address: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    provider: str = "other"
    imap_host: str
    imap_port: int | None = Field(None, ge=1, le=65535)  # default: 993 for tls, else 143
    imap_security: Security = "tls"
    username: str | None = None  # default: the address
    auth: Literal["password", "xoauth2"] = "password"
    #: the password (or, with xoauth2, the access token): from this variable if set, else
    #: from this file
    password_env: str | None = None
    password_file: str | None = None
    ca_file: str | None = None  # trust this CA (PEM) instead of the system's
    #: a spam folder to read instead of finding one (\\Junk flag, then known names)
    junk_folder: str | None = None

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        name = PROVIDER_ALIASES.get(value.strip().lower(), value.strip().lower())
        known = {p.value for p in Provider}
        if name not in known:
            raise ValueError(f"unknown provider {value!r}; one of {', '.join(sorted(known))} "
                             f"or {', '.join(sorted(PROVIDER_ALIASES))}")  # fmt: skip
        return name

    @model_validator(mode="after")
    def _one_secret(self) -> SeedConfig:
        if not (self.password_env or self.password_file):
            raise ValueError(f"{self.address}: set password_env or password_file")
        return self

    @property
    def port(self) -> int:
        return self.imap_port or (993 if self.imap_security == "tls" else 143)

    @property
    def login(self) -> str:
        return self.username or self.address

    def secret(self) -> str:
        where = f"seeds.mailboxes {self.address}"
        secret = read_secret(where, "password", self.password_env, self.password_file)
        if secret is None:  # the model requires one of the two
            raise ConfigError(f"{where}: set password_env or password_file")
        return secret


class SmtpConfig(_Strict):
    """``[seeds.smtp]``: where probes are submitted (the path production mail takes)."""

    host: str = "127.0.0.1"
    #: default: 465 for tls, 587 for starttls, else 25
    port: int | None = Field(None, ge=1, le=65535)
    security: Security = "starttls"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    timeout_seconds: float = Field(30.0, gt=0, le=600)

    @property
    def submission_port(self) -> int:
        if self.port:
            return self.port
        return {"tls": 465, "starttls": 587, "none": 25}[self.security]

    def password(self) -> str | None:
        if self.username is None:
            return None
        secret = read_secret("seeds.smtp", "password", self.password_env, self.password_file)
        if secret is None:
            raise ConfigError("seeds.smtp: set password_env or password_file with a username")
        return secret


class TemplateConfig(_Strict):
    """One probe message (``[[seeds.templates]]``): a real-looking subject and body."""

    subject: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1)
    html: str | None = None


_DEFAULT_TEMPLATE = TemplateConfig(
    subject="Your weekly account summary",
    text="Hello,\n\nhere is a short summary of your account this week. Nothing needs your "
    "attention.\n\nThank you for being with us.\n",
)


class SeedsConfig(_Strict):
    """``[seeds]``: seed-inbox probes (the ``seed_probes`` job, ``mailmon probe``)."""

    sender: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")
    #: the From: display name; Message-IDs are made at the sender's domain
    sender_name: str | None = None
    #: List-Unsubscribe targets the probe carries (RFC 2369); an https one adds
    #: List-Unsubscribe-Post (RFC 8058 one-click)
    list_unsubscribe: tuple[str, ...] = ()
    smtp: SmtpConfig = SmtpConfig()
    mailboxes: tuple[SeedConfig, ...] = ()
    templates: tuple[TemplateConfig, ...] = ()
    #: a probe not found this long after it was sent is ``missing``
    timeout_seconds: float = Field(900.0, ge=1, le=86400)
    poll_interval_seconds: float = Field(30.0, gt=0, le=3600)
    imap_timeout_seconds: float = Field(30.0, gt=0, le=600)
    #: delete each probe once read (only the probes: matched by their own token)
    delete_after_read: bool = False

    @model_validator(mode="after")
    def _complete(self) -> SeedsConfig:
        if self.mailboxes and self.sender is None:
            raise ValueError("[seeds] mailboxes need a sender")
        seen: set[str] = set()
        for seed in self.mailboxes:
            if seed.address.lower() in seen:
                raise ValueError(f"seed {seed.address} is listed twice")
            seen.add(seed.address.lower())
        return self

    def probe_templates(self) -> tuple[TemplateConfig, ...]:
        return self.templates or (_DEFAULT_TEMPLATE,)
