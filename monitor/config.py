"""The one configuration file (TOML), validated, unknown keys rejected.

Precedence for every command: command-line flag > environment > config file >
built-in default.  The database URL in particular comes from ``--db``, else
``MAILMON_DB_URL``, else ``[database] url``, else a SQLite file in the data
directory.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.collectors.seeds.settings import SeedsConfig
from monitor.errors import ConfigError
from monitor.secrets import read_secret, required

__all__ = [
    "API_TOKEN_ENV", "HOOK_TOKEN_ENV", "ApiConfig", "Config", "api_token", "data_dir",
    "find_config_file", "hook_token", "load_config", "resolve_db_url", "time_zone",
]  # fmt: skip

DEFAULT_PORT = 8465
HOOK_TOKEN_ENV = "MAILMON_HOOK_TOKEN"
API_TOKEN_ENV = "MAILMON_API_TOKEN"
DEFAULT_CONFIG_PATHS = (Path("mailmon.toml"), Path("/etc/mailmon/mailmon.toml"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Strict):
    url: str | None = None
    batch_size: int = Field(20_000, ge=1, le=100_000)


def default_instance() -> str:
    """This host's name (its first label), as an instance name may spell it."""
    name = socket.gethostname().partition(".")[0]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip("-._")[:64]
    return name or "mailmon"



class ServiceConfig(_Strict):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    # A request's headers and body must be in within this time of the connection being ready
    # for it; slower clients are disconnected (a slowloris holds connections open otherwise).
    request_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    max_body_bytes: int = Field(10 << 20, ge=1024, le=1 << 30)
    max_connections: int = Field(512, ge=1, le=100_000)
    hook_token_file: str | None = None  # the log hook's bearer token (MAILMON_HOOK_TOKEN wins)
    #: with it, the log hook also takes HTTP Basic auth: this user, the hook token as password
    hook_username: str | None = Field(None, min_length=1, pattern=r"^[^:]+$")
    # Names what this process reads (its followed files' checkpoints, its log parsers'
    # state): several instances share one database without sharing a key.
    instance: str = Field(
        default_factory=default_instance, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    )


class ApiConfig(_Strict):
    """``[api]``: the read API (``/api/...``, ``docs/api.md``)."""

    token_file: str | None = None  # the API's bearer token (MAILMON_API_TOKEN wins)
    #: ``/metrics`` asks for the API token too (Prometheus then sends it: ``authorization``)
    protect_metrics: bool = False


class LogSource(_Strict):
    """One MTA log to follow (``path`` may be a glob)."""

    kind: str = "postfix"
    path: str
    start_at: Literal["beginning", "end"] = "beginning"
    tz: str = "UTC"
    poll_interval_seconds: float = Field(0.5, gt=0, le=3600)
    max_bytes_per_poll: int = Field(8 << 20, ge=4096)  # a catch-up is checkpointed in steps

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from monitor.collectors.registry import line_kinds  # the parsers load with it

        if value not in line_kinds():
            raise ValueError(f"unknown log kind {value!r}; known: {', '.join(line_kinds())}")
        return value

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        # Refused here, with the file's name, not by the parser of one log at run time.
        return time_zone(tz)


def time_zone(name: str) -> str:
    """``name`` if it is a time zone this machine knows; ValueError saying so otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name such as 'Europe/Berlin', or 'UTC')"
        ) from exc
    return name


class IngestConfig(_Strict):
    """What every source's events must satisfy before they are stored."""

    #: events dated further ahead of the wall clock are refused (``future_timestamp``)
    max_future_seconds: float = Field(86400.0, ge=60)


class ProvidersConfig(_Strict):
    resolve_mx: bool = True
    rules_file: str | None = None
    cache_ttl_seconds: float = Field(7 * 86400, gt=0)
    dns_timeout_seconds: float = Field(2.0, gt=0, le=60)
    dns_concurrency: int = Field(16, ge=1, le=256)
    negative_ttl_seconds: float = Field(3600, gt=0)
    failure_ttl_seconds: float = Field(300, gt=0)
    nameservers: tuple[str, ...] = ()
    smarthosts: tuple[str, ...] = ()


class DmarcImapConfig(_Strict):
    """``[dmarc.imap]``: the mailbox reports are mailed to (docs/dmarc.md, *From an IMAP mailbox*).

    The password comes from the environment variable ``password_env`` or the file
    ``password_file``, never from this file, and is never logged.
    """

    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)  # default: 993 (tls), 143 (starttls, none)
    #: tls: implicit TLS; starttls: upgraded plain connection; none: plain text (loopback only)
    tls: Literal["tls", "starttls", "none"] = "tls"
    ca_file: str | None = None  # a private CA to verify the server with (default: the system's)
    user: str = Field(min_length=1)
    password_env: str | None = None
    password_file: str | None = None
    folder: str = "INBOX"
    archive_folder: str = "DMARC-Archive"  # where a message goes once its report is stored
    failed_folder: str = "DMARC-Failed"  # where a refused message goes (keyword: the reason)
    #: no flag, no move, folders not created: a UID checkpoint and the dedupe key keep
    #: a message from counting twice
    read_only: bool = False
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    batch_messages: int = Field(100, ge=1, le=10_000)  # committed, then moved, together

    @model_validator(mode="after")
    def _one_password(self) -> DmarcImapConfig:
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("set password_env or password_file (one of them)")
        if len({self.folder, self.archive_folder, self.failed_folder}) < 3:
            raise ValueError("folder, archive_folder and failed_folder must be three folders")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "tls" else 143)

    def password(self) -> str:
        """The password, from ``password_env`` or ``password_file`` (read at each call)."""
        secret = read_secret("dmarc.imap", "password", self.password_env, self.password_file)
        return required("dmarc.imap", "password", secret)


class DmarcConfig(_Strict):
    """DMARC aggregate/failure and SMTP TLS reports (docs/dmarc.md)."""

    #: our domains: reports about others are refused, metrics label only these
    domains: tuple[str, ...] = ()
    #: where reports are dropped; the ``dmarc_reports`` job reads and moves them
    directory: str | None = None
    done_directory: str | None = None  # default: DIRECTORY/done
    failed_directory: str | None = None  # default: DIRECTORY/failed
    min_age_seconds: float = Field(10.0, ge=0)  # a younger file may still be written
    max_report_bytes: int = Field(64 << 20, ge=1024, le=1 << 30)  # also after decompression
    #: ``dmarc summary --resolve``: reverse DNS of source IPs
    nameservers: tuple[str, ...] = ()
    dns_port: int = Field(53, ge=1, le=65535)
    dns_timeout_seconds: float = Field(2.0, gt=0, le=60)
    dns_concurrency: int = Field(16, ge=1, le=256)
    resolve_max_ips: int = Field(200, ge=0, le=100_000)
    resolve_cache_ttl_seconds: float = Field(86400.0, gt=0)
    #: ``[dmarc.imap]``: a mailbox the ``dmarc_imap`` job reads
    imap: DmarcImapConfig | None = None

    @field_validator("domains")
    @classmethod
    def _lower(cls, domains: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.strip().strip(".").lower() for d in domains if d.strip())


class DnsConfig(_Strict):
    """``[dns]``: posture checks of our domains and DNSBL lookups (docs/dns.md)."""

    #: our domains to check (default: ``[dmarc] domains``)
    domains: tuple[str, ...] = ()
    #: DKIM selectors to check on every domain (``s1`` checks ``s1._domainkey.DOMAIN``)
    dkim_selectors: tuple[str, ...] = ()
    bimi_selector: str = Field("default", pattern=r"^[A-Za-z0-9_-]+$")
    #: our sending IPs, asked of the IP blocklists (default: ``[metrics] sending_ips``)
    sending_ips: tuple[str, ...] = ()
    #: domains asked of the domain blocklists (default: the checked domains)
    dnsbl_domains: tuple[str, ...] = ()
    #: blocklists by name, from ``blocklists_file`` (default: the packaged list)
    lists: tuple[str, ...] = (
        "spamhaus-zen", "spamhaus-dbl", "barracuda", "spamcop", "uceprotect-l1",
    )  # fmt: skip
    blocklists_file: str | None = None
    #: the resolver asked (default: the system's); DNSBLs refuse public resolvers
    nameservers: tuple[str, ...] = ()
    dns_port: int = Field(53, ge=1, le=65535)
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    #: how far back a check's history is read to tell a regression
    history_days: int = Field(30, ge=1, le=3650)
    #: fetch each domain's MTA-STS policy (https://mta-sts.DOMAIN/.well-known/mta-sts.txt)
    mta_sts_fetch_policy: bool = True
    mta_sts_port: int = Field(443, ge=1, le=65535)  # another port: a test's server
    mta_sts_ca_file: str | None = None  # CA bundle for the policy hosts (default: the system's)

    @field_validator("domains", "dnsbl_domains")
    @classmethod
    def _lower(cls, domains: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.strip().strip(".").lower() for d in domains if d.strip())

    @field_validator("sending_ips")
    @classmethod
    def _addresses(cls, ips: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        return tuple(str(ipaddress.ip_address(ip.strip())) for ip in ips)


class MailboxSettings(_Strict):
    """``[[mailboxes]]``: one IMAP mailbox the inbound collector watches (docs/mailbox.md).

    The password comes from the environment variable ``password_env`` or the file
    ``password_file``, never from this file.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    #: bounces (return path), fbl (complaints), replies (reply-to, support), noreply
    role: Literal["bounces", "fbl", "replies", "noreply"] = "replies"
    host: str
    port: int = Field(993, ge=1, le=65535)
    #: implicit TLS (993); ``starttls`` upgrades a plain connection; ``none`` for loopback
    security: Literal["tls", "starttls", "none"] = "tls"
    username: str
    password_env: str | None = None
    password_file: str | None = None
    folder: str = "INBOX"
    #: move each message read here (created if missing); None: leave it
    processed_folder: str | None = None
    #: wait with IMAP IDLE where the server offers it, else poll every poll_interval_seconds
    idle: bool = True
    poll_interval_seconds: float = Field(60.0, ge=1, le=86400)
    idle_timeout_seconds: float = Field(300.0, ge=5, le=1740)  # RFC 2177: re-issue < 29 min
    max_message_bytes: int = Field(10 << 20, ge=4096, le=1 << 30)
    timeout_seconds: float = Field(30.0, gt=0, le=600)

    def password(self) -> str:
        """The password, from ``password_env`` or ``password_file``."""
        where = f"mailboxes.{self.name}"
        return required(where, "password",
                         read_secret(where, "password", self.password_env, self.password_file))


class SendConfig(_Strict):
    """``[send]``: tracked sending through an SMTP relay (``mailmon send``, docs/send.md)."""

    relay_host: str = "127.0.0.1"
    relay_port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    #: the From of a message that names none
    from_address: str | None = None
    #: the VERP return path's base: bounces@example.net -> bounces+<token>@example.net
    return_path: str | None = None
    #: the right-hand side of the Message-IDs made (default: the From's domain)
    message_id_domain: str | None = None
    #: List-Unsubscribe URL (``{token}`` is replaced) and RFC 8058 one-click
    list_unsubscribe_url: str | None = None
    list_unsubscribe_mailto: str | None = None
    one_click: bool = False
    #: DKIM signing with dkimpy: selector, domain and the private key's file
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_file: str | None = None
    timeout_seconds: float = Field(30.0, gt=0, le=600)

    def password(self) -> str | None:
        return read_secret("send", "password", self.password_env, self.password_file)


class ForwardConfig(_Strict):
    """``[forward]``: inbound events sent on to the application's webhook (docs/mailbox.md)."""

    url: str | None = None
    #: the HMAC-SHA256 key, from the environment or a file, never from this file
    secret_env: str | None = None
    secret_file: str | None = None
    #: the event types forwarded (those the mailboxes make)
    types: tuple[str, ...] = ("bounced", "complained", "auto_replied", "replied")
    max_attempts: int = Field(5, ge=1, le=20)
    backoff_seconds: float = Field(2.0, ge=0, le=3600)  # doubled after each failed attempt
    timeout_seconds: float = Field(10.0, gt=0, le=300)

    def secret(self) -> bytes:
        secret = read_secret("forward", "secret", self.secret_env, self.secret_file)
        if secret is None:
            raise ConfigError("forward: set secret_env or secret_file (the signing key)")
        return secret.encode()


class MetricsConfig(_Strict):
    domains: tuple[str, ...] = ()
    top_domains: int = Field(20, ge=0, le=500)
    sending_ips: tuple[str, ...] = ()
    top_sending_ips: int = Field(20, ge=0, le=500)
    sender_domains: tuple[str, ...] = ()
    top_sender_domains: int = Field(20, ge=0, le=500)
    streams: tuple[str, ...] = ()
    top_streams: int = Field(20, ge=0, le=500)


class RollupConfig(_Strict):
    """The rollup engine in ``serve`` and its detectors (``monitor.rollup.detectors``).

    ``min_attempts`` (5 minutes), ``min_attempts_15m``, ``min_attempts_1h``, ``factor`` and
    ``floor`` tune *domain starts rejecting* (per domain, per provider, per sending IP,
    sending domain and stream); the others are named after their detector.
    """

    interval_seconds: float = Field(60.0, ge=1, le=86400)
    min_attempts: int = Field(20, ge=1)
    min_attempts_15m: int = Field(15, ge=1)
    min_attempts_1h: int = Field(30, ge=1)
    factor: float = Field(3.0, gt=0)
    floor: float = Field(0.10, gt=0, lt=1)
    bounce_min_finished: int = Field(100, ge=1)
    bounce_floor: float = Field(0.05, gt=0, lt=1)
    deferral_min_attempts: int = Field(50, ge=1)
    deferral_floor: float = Field(0.25, gt=0, lt=1)
    complaint_min_delivered: int = Field(5000, ge=1)
    complaint_warning: float = Field(0.001, gt=0, lt=1)
    complaint_critical: float = Field(0.003, gt=0, lt=1)
    silent_min_expected: int = Field(20, ge=1)
    latency_min_deliveries: int = Field(100, ge=1)
    latency_floor_seconds: float = Field(1800.0, gt=0)
    queue_max_age_seconds: float = Field(4 * 3600.0, gt=0)
    queue_min_stuck: int = Field(20, ge=1)
    weekly_weeks: int = Field(4, ge=0, le=12)
    weekly_min_volume: int = Field(200, ge=0)
    max_domains: int = Field(1000, ge=0)


class ReportConfig(_Strict):
    """``[report]``: the weekly deliverability report (docs/report.md) and where it is mailed."""

    time_zone: str = "UTC"  # the weeks (Monday to Monday) and the job's Monday 08:00
    top_n: int = Field(10, ge=1, le=100)  # domains, reasons, sources shown per table
    out_directory: str | None = None  # the job also writes its files here (one folder a week)
    relay_host: str | None = None  # the SMTP relay ``--send`` and the job mail through
    relay_port: int = Field(587, ge=1, le=65535)
    starttls: bool = True  # STARTTLS after connecting (port 587)
    tls: bool = False  # TLS from the start (port 465); starttls is then not used
    timeout_seconds: float = Field(30.0, gt=0, le=600)
    username: str | None = None
    password_env: str | None = None  # the relay password: this environment variable ...
    password_file: str | None = None  # ... or this file (never in the config itself)
    from_address: str | None = None
    to: tuple[str, ...] = ()

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        return time_zone(tz)

    def password(self) -> str | None:
        """The relay password, from ``password_env`` or ``password_file``; None when neither."""
        return read_secret("report", "password", self.password_env, self.password_file)


class WebhookSettings(_Strict):
    """``[webhooks.NAME]``: how one provider's webhook requests are trusted.

    The secret (a signing key, a public key in PEM, a password or token) is read from the
    environment variable ``secret_env`` or the file ``secret_file``, never from this file.
    """

    enabled: bool = True
    secret_env: str | None = None
    secret_file: str | None = None
    #: HTTP Basic auth user, for providers that authenticate that way
    username: str | None = None
    #: how far a signed timestamp may lie from the clock (replays outside it are refused)
    tolerance_seconds: float = Field(300.0, gt=0, le=86400)
    #: SES through SNS: the topics whose notifications are taken (others are refused)
    topic_arns: tuple[str, ...] = ()
    #: SES through SNS: confirm a subscription by fetching its SubscribeURL
    confirm_subscriptions: bool = False
    #: SES through SNS: a PEM file pinning the signing certificate (never fetched then)
    certificate_file: str | None = None

    def secret(self, name: str) -> str | None:
        """The secret, from ``secret_env`` or ``secret_file``; None when neither is set."""
        return read_secret(f"webhooks.{name}", "secret", self.secret_env, self.secret_file)


class JobConfig(_Strict):
    """One scheduled job (``[jobs.NAME]``, ``monitor.jobs.catalog``): when it runs, if at all.

    Neither ``cron`` nor ``interval_seconds``: the job's default (the rollup's is
    ``[rollup] interval_seconds``).
    """

    cron: str | None = None  # minute hour day month day-of-week, read in time_zone
    interval_seconds: float | None = Field(None, ge=1, le=31 * 86400)
    time_zone: str = "UTC"
    enabled: bool = True

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        return time_zone(tz)

    @model_validator(mode="after")
    def _one_trigger(self) -> JobConfig:
        if self.cron is not None and self.interval_seconds is not None:
            raise ValueError("set cron or interval_seconds, not both")
        if self.cron is not None:
            from monitor.jobs.triggers import cron_trigger

            cron_trigger(self.cron, self.time_zone)  # ValueError saying what is wrong
        return self


class Config(_Strict):
    database: DatabaseConfig = DatabaseConfig()
    service: ServiceConfig = ServiceConfig()
    api: ApiConfig = ApiConfig()
    logs: tuple[LogSource, ...] = ()
    ingest: IngestConfig = IngestConfig()
    providers: ProvidersConfig = ProvidersConfig()
    metrics: MetricsConfig = MetricsConfig()
    dmarc: DmarcConfig = DmarcConfig()
    dns: DnsConfig = DnsConfig()
    rollup: RollupConfig = RollupConfig()
    report: ReportConfig = ReportConfig()
    seeds: SeedsConfig = SeedsConfig()
    webhooks: dict[str, WebhookSettings] = {}
    mailboxes: tuple[MailboxSettings, ...] = ()
    send: SendConfig = SendConfig()
    forward: ForwardConfig = ForwardConfig()
    jobs: dict[str, JobConfig] = Field(default_factory=dict)
    data_dir: str | None = None

    @field_validator("mailboxes")
    @classmethod
    def _unique_mailboxes(cls, boxes: tuple[MailboxSettings, ...]) -> tuple[MailboxSettings, ...]:
        names = [b.name for b in boxes]
        if len(set(names)) != len(names):
            raise ValueError("mailbox names must be unique")
        return boxes

    @field_validator("jobs")
    @classmethod
    def _known_jobs(cls, jobs: dict[str, JobConfig]) -> dict[str, JobConfig]:
        from monitor.jobs.catalog import CATALOG

        unknown = sorted(set(jobs) - set(CATALOG))
        if unknown:
            raise ValueError(
                f"unknown job {', '.join(unknown)}; the jobs are {', '.join(sorted(CATALOG))}"
            )
        return jobs


def data_dir(config: Config | None = None) -> Path:
    """Where Mailmon keeps its SQLite database and state."""
    if env := os.environ.get("MAILMON_DATA_DIR"):
        return Path(env)
    if config is not None and config.data_dir:
        return Path(config.data_dir)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mailmon"


def find_config_file(explicit: str | None = None) -> Path | None:
    """The config file to read: ``--config``, ``MAILMON_CONFIG``, or a default path that exists."""
    chosen = explicit or os.environ.get("MAILMON_CONFIG")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    for path in DEFAULT_CONFIG_PATHS:
        if path.is_file():
            return path
    return None


def load_config(path: Path | None) -> Config:
    """Read and validate ``path`` (None: built-in defaults), then apply the environment."""
    raw: dict[str, object] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{where}invalid configuration: {problems}") from exc
    resolve = os.environ.get("MAILMON_RESOLVE_MX")
    if resolve is not None:
        flag = resolve.strip().lower() not in {"0", "false", "no", "off", ""}
        config = config.model_copy(
            update={"providers": config.providers.model_copy(update={"resolve_mx": flag})}
        )
    return config


def resolve_db_url(flag: str | None, config: Config) -> str:
    """The database URL by the documented precedence."""
    if flag:
        return flag
    if env := os.environ.get("MAILMON_DB_URL"):
        return env
    if config.database.url:
        return config.database.url
    return f"sqlite:///{data_dir(config) / 'mailmon.db'}"


def hook_token(config: Config) -> str | None:
    """The log hook's bearer token: ``MAILMON_HOOK_TOKEN``, else ``service.hook_token_file``."""
    return _token(HOOK_TOKEN_ENV, "service.hook_token_file", config.service.hook_token_file)


def api_token(config: Config) -> str | None:
    """The API's bearer token: ``MAILMON_API_TOKEN``, else ``api.token_file``."""
    return _token(API_TOKEN_ENV, "api.token_file", config.api.token_file)


def _token(env: str, key: str, path: str | None) -> str | None:
    if token := os.environ.get(env, "").strip():
        return token
    if path is None:
        return None
    try:
        token = Path(path).read_text("utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key} {path}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"{key} {path} is empty")
    return token
