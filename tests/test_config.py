"""Configuration: validation, unknown keys, precedence of flag, environment and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli.common import parse_since
from monitor.config import Config, find_config_file, load_config, resolve_db_url
from monitor.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailmon.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid() -> None:
    """The shipped example file validates."""
    config = load_config(REPO / "mailmon.example.toml")
    assert config.logs[0].path == "/var/log/mail.log"


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    """A misspelt key is an error naming the key."""
    path = _write(tmp_path, "[service]\nlisten_prot = 1\n")
    with pytest.raises(ConfigError, match="listen_prot"):
        load_config(path)


def test_wrong_type_and_range_are_rejected(tmp_path: Path) -> None:
    """A value of the wrong type or out of range is an error."""
    with pytest.raises(ConfigError, match="listen_port"):
        load_config(_write(tmp_path, "[service]\nlisten_port = 70000\n"))
    with pytest.raises(ConfigError, match="start_at"):
        load_config(_write(tmp_path, '[[logs]]\npath = "/x"\nstart_at = "middle"\n'))


def test_unknown_time_zone_of_a_log_is_rejected(tmp_path: Path) -> None:
    """A [[logs]] tz that is no time zone is a config error naming the entry, not a parser crash later."""
    text = '[[logs]]\npath = "/a"\n[[logs]]\npath = "/b"\ntz = "Mars/Olympus_Mons"\n'
    with pytest.raises(ConfigError, match=r"logs\.1\.tz: .*unknown time zone 'Mars/Olympus_Mons'"):
        load_config(_write(tmp_path, text))
    ok = load_config(_write(tmp_path, '[[logs]]\npath = "/a"\ntz = "Europe/Berlin"\n'))
    assert ok.logs[0].tz == "Europe/Berlin"


def test_invalid_toml_is_a_clear_error(tmp_path: Path) -> None:
    """Broken TOML is reported with the file name."""
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(_write(tmp_path, "[service\n"))


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    """--config naming a missing file is an error, not silently ignored."""
    with pytest.raises(ConfigError, match="not found"):
        find_config_file(str(tmp_path / "absent.toml"))


def test_db_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--db beats MAILMON_DB_URL beats the file beats the data-directory default."""
    monkeypatch.delenv("MAILMON_DB_URL", raising=False)
    monkeypatch.setenv("MAILMON_DATA_DIR", str(tmp_path / "data"))
    from_file = load_config(_write(tmp_path, '[database]\nurl = "sqlite:///file.db"\n'))
    assert resolve_db_url(None, Config()) == f"sqlite:///{tmp_path / 'data' / 'mailmon.db'}"
    assert resolve_db_url(None, from_file) == "sqlite:///file.db"
    monkeypatch.setenv("MAILMON_DB_URL", "sqlite:///env.db")
    assert resolve_db_url(None, from_file) == "sqlite:///env.db"
    assert resolve_db_url("sqlite:///flag.db", from_file) == "sqlite:///flag.db"


def test_resolve_mx_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAILMON_RESOLVE_MX=0 turns DNS lookups off whatever the file says."""
    path = _write(tmp_path, "[providers]\nresolve_mx = true\n")
    monkeypatch.setenv("MAILMON_RESOLVE_MX", "0")
    assert load_config(path).providers.resolve_mx is False
    monkeypatch.setenv("MAILMON_RESOLVE_MX", "1")
    assert load_config(path).providers.resolve_mx is True


def test_since_accepts_durations_and_times() -> None:
    """--since takes 24h / 7d / 90m or an ISO 8601 time; anything else is a clear error."""
    from datetime import UTC, datetime

    now = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now=now) == datetime(2026, 3, 4, 10, 0, tzinfo=UTC).timestamp()
    assert parse_since("1d", now=now) == datetime(2026, 3, 3, 12, 0, tzinfo=UTC).timestamp()
    assert parse_since("2026-03-04T10:00:00Z") == datetime(2026, 3, 4, 10, tzinfo=UTC).timestamp()
    with pytest.raises(ConfigError):
        parse_since("yesterday")


def test_rollup_tunables_reach_every_detector(tmp_path: Path) -> None:
    """Every [rollup] key reaches every detector it tunes, sender-side ones included, through
    the engine `serve` and `rollup` build."""
    from monitor.rollup.configured import engine_for
    from monitor.rollup.detectors import BounceRateDetector, RejectingDetector
    from monitor.store import Store

    path = _write(
        tmp_path,
        "[rollup]\nweekly_min_volume = 37\nweekly_weeks = 3\nmin_attempts = 21\nfactor = 2.5\n"
        "floor = 0.2\nbounce_min_finished = 101\nbounce_floor = 0.07\nmin_attempts_15m = 16\n"
        "min_attempts_1h = 31\n",
    )
    config = load_config(path)
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        engine = engine_for(config, store)
    assert engine.weeks == 3
    weekly = [d for d in engine.detectors if "weekly_min" in d.tunables()]
    # The domain's three share tests, the provider's rejecting one and the sender side's six.
    assert len(weekly) == 10
    assert {d.kind: d.tunables()["weekly_min"] for d in weekly} == {d.kind: 37 for d in weekly}
    for d in engine.detectors:
        if isinstance(d, RejectingDetector):
            assert (d.min_attempts, d.min_attempts_15m, d.min_attempts_1h) == (21, 16, 31), d.kind
            assert (d.factor, d.floor) == (2.5, 0.2), d.kind
        if isinstance(d, BounceRateDetector):
            assert (d.min_finished, d.floor) == (101, 0.07), d.kind


def test_webhook_secrets_come_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.config import WebhookSettings

    key = tmp_path / "key"
    key.write_text("s3cret\n")
    assert WebhookSettings(secret_file=str(key)).secret("mailgun") == "s3cret"
    monkeypatch.setenv("MG_KEY", "from-env")
    assert WebhookSettings(secret_env="MG_KEY").secret("mailgun") == "from-env"
    assert WebhookSettings().secret("mailgun") is None
    monkeypatch.delenv("MG_KEY")
    with pytest.raises(ConfigError, match=r"webhooks\.mailgun\.secret_env: MG_KEY is not set"):
        WebhookSettings(secret_env="MG_KEY").secret("mailgun")
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        WebhookSettings(secret_file=str(tmp_path / "empty")).secret("mailgun")


def test_secrets_come_from_the_variable_then_the_file_and_errors_show_no_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule for every `*_env` / `*_file` pair: the variable when set, else the file;
    errors name the key and the variable or file, never a value."""
    from monitor.secrets import read_secret

    path = tmp_path / "secret"
    path.write_text("from-the-file\n")
    monkeypatch.setenv("MM_SECRET", "  from-the-env ")
    assert read_secret("send", "password", "MM_SECRET", str(path)) == "from-the-env"
    monkeypatch.delenv("MM_SECRET")
    assert read_secret("send", "password", "MM_SECRET", str(path)) == "from-the-file"
    assert read_secret("send", "password", None, None) is None
    with pytest.raises(ConfigError, match=r"^send\.password_env: MM_SECRET is not set$"):
        read_secret("send", "password", "MM_SECRET", None)
    path.write_text("\n")
    with pytest.raises(ConfigError, match=r"^webhooks\.ses\.secret_file .* is empty$"):
        read_secret("webhooks.ses", "secret", None, str(path))
    with pytest.raises(ConfigError, match=r"^report\.password_file .*: No such file") as caught:
        read_secret("report", "password", None, str(tmp_path / "missing"))
    assert "from-the" not in str(caught.value)
