"""The report mailbox without a server: its settings, its secret, its job, a server that is down."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from servers.dovecot import free_port
from test_cli import mailmon
from test_dmarc import Reader

from monitor.collectors.reports.imap import ImapError, ReportMailbox
from monitor.config import DmarcImapConfig, load_config
from monitor.errors import ConfigError
from monitor.jobs import builtin
from monitor.jobs.catalog import effective
from monitor.store import Store

SECRET = "s3cret-Pa55"


def _settings(**kw: object) -> DmarcImapConfig:
    values: dict[str, object] = {"host": "127.0.0.1", "user": "dmarc",
                                 "password_env": "MAILMON_TEST_IMAP_PW"}  # fmt: skip
    return DmarcImapConfig.model_validate(values | kw)


def _toml(tmp_path: Path, imap: str, jobs: str = "") -> Path:
    path = tmp_path / "mailmon.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "m.db"}"\n'
                    f'[dmarc]\ndomains = ["example.com"]\n{imap}\n{jobs}')  # fmt: skip
    return path


def test_settings_defaults_and_ports() -> None:
    """Implicit TLS on 993 by default; STARTTLS and plain text on 143; a port given wins."""
    s = _settings()
    assert (s.tls, s.effective_port, s.folder, s.read_only) == ("tls", 993, "INBOX", False)
    assert (s.archive_folder, s.failed_folder) == ("DMARC-Archive", "DMARC-Failed")
    assert _settings(tls="starttls").effective_port == 143
    assert _settings(tls="none", port=10143).effective_port == 10143


@pytest.mark.parametrize(("table", "says"), [
    ('[dmarc.imap]\nhost = "h"\nuser = "u"\n', "set password_env or password_file"),
    ('[dmarc.imap]\nhost = "h"\nuser = "u"\npassword_env = "E"\npassword_file = "f"\n',
     "set password_env or password_file"),
    ('[dmarc.imap]\nhost = "h"\nuser = "u"\npassword = "x"\n', "dmarc.imap.password: Extra inputs"),
    ('[dmarc.imap]\nhost = "h"\nuser = "u"\npassword_env = "E"\ntls = "ssl"\n', "dmarc.imap.tls"),
    ('[dmarc.imap]\nuser = "u"\npassword_env = "E"\n', "dmarc.imap.host: Field required"),
    ('[dmarc.imap]\nhost = "h"\nuser = "u"\npassword_env = "E"\narchive_folder = "INBOX"\n',
     "must be three folders"),
])  # fmt: skip
def test_bad_mailbox_settings_are_one_clear_error(tmp_path: Path, table: str, says: str) -> None:
    """No password source or two, a password in the file, an unknown TLS mode, no host,
    an archive that is the folder read."""
    with pytest.raises(ConfigError) as caught:
        load_config(_toml(tmp_path, table))
    assert says in str(caught.value)


def test_password_from_env_or_file_never_in_errors(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The password comes from the variable or the file (its line end dropped); a missing
    one is an error naming where it was looked for, never a value."""
    monkeypatch.setenv("MAILMON_TEST_IMAP_PW", SECRET)
    assert _settings().password() == SECRET
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    assert _settings(password_env=None, password_file=str(secret_file)).password() == SECRET
    monkeypatch.delenv("MAILMON_TEST_IMAP_PW")
    with pytest.raises(ConfigError, match="MAILMON_TEST_IMAP_PW is not set"):
        _settings().password()
    secret_file.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        _settings(password_env=None, password_file=str(secret_file)).password()
    with pytest.raises(ConfigError, match="No such file"):
        _settings(password_env=None, password_file=str(tmp_path / "none")).password()


def test_the_job_follows_the_mailbox_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           sqlite_url: str) -> None:  # fmt: skip
    """dmarc_imap runs every 300 s once [dmarc.imap] is set, is off without it, and a job
    turned on without a mailbox, or a mailbox without its password, stops serve at start."""
    imap = '[dmarc.imap]\nhost = "127.0.0.1"\nuser = "u"\npassword_env = "MAILMON_TEST_IMAP_PW"\n'
    assert not effective(load_config(_toml(tmp_path, "")), "dmarc_imap").enabled
    config = load_config(_toml(tmp_path, imap))
    job = effective(config, "dmarc_imap")
    assert job.enabled and job.interval_seconds == 300
    reader = Reader(sqlite_url)
    driver = reader.reports.driver
    monkeypatch.delenv("MAILMON_TEST_IMAP_PW", raising=False)
    with pytest.raises(ConfigError, match="MAILMON_TEST_IMAP_PW is not set"):
        builtin.dmarc_imap(config, driver)
    monkeypatch.setenv("MAILMON_TEST_IMAP_PW", SECRET)
    assert callable(builtin.dmarc_imap(config, driver))
    on = load_config(_toml(tmp_path, "", "[jobs.dmarc_imap]\nenabled = true\n"))
    with pytest.raises(ConfigError, match=r"\[jobs.dmarc_imap\] is enabled without \[dmarc.imap\]"):
        builtin.dmarc_imap(on, driver)


def test_a_server_that_is_down_is_a_clear_counted_error(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on the port: ImapError('connect') naming the mailbox, counted on
    /metrics, logged without the password; nothing stored, no checkpoint."""
    monkeypatch.setenv("MAILMON_TEST_IMAP_PW", SECRET)
    caplog.set_level(logging.DEBUG)
    reader = Reader(sqlite_url)
    port = free_port()
    mailbox = ReportMailbox(reader.reports, _settings(tls="none", port=port))
    with pytest.raises(ImapError) as caught:
        mailbox.run()
    assert caught.value.reason == "connect"
    assert f"DMARC mailbox imap://dmarc@127.0.0.1:{port}: cannot connect" in str(caught.value)
    assert reader.sample("mailmon_dmarc_imap_errors_total", reason="connect") == 1
    assert SECRET not in caplog.text
    store: Store = reader.store
    assert store.checkpoint(mailbox.key) is None


def test_fetch_command_says_why_the_mailbox_cannot_be_read(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`mailmon dmarc fetch` with the server down: exit status 2 and one line naming the
    mailbox and the reason; without [dmarc.imap]: exit status 2 saying the table is missing."""
    port = free_port()
    config = _toml(tmp_path, f'[dmarc.imap]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\n'
                   'user = "dmarc"\npassword_env = "MAILMON_TEST_IMAP_PW"\n')  # fmt: skip
    monkeypatch.setenv("MAILMON_TEST_IMAP_PW", SECRET)
    down = mailmon("dmarc", "fetch", "--config", str(config), check=False)
    assert down.returncode == 2 and down.stdout == ""
    assert f"DMARC mailbox imap://dmarc@127.0.0.1:{port}: cannot connect" in down.stderr
    assert SECRET not in down.stderr
    none = mailmon("dmarc", "fetch", "--config", str(_toml(tmp_path, "")), check=False)
    assert none.returncode == 2 and "needs a [dmarc.imap] table" in none.stderr
