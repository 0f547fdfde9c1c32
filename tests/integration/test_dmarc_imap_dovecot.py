"""The report mailbox against a real Dovecot (tests/servers/dovecot.py): the corpus mailed
and read over IMAPS lands in the store and on /metrics once, however often it is read;
read-only mode changes nothing on the server; bad messages go to the failed folder with
their reason; a refused login, TLS that cannot be verified and a server that went away are
clear, counted errors that lose nothing."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from dmarc_data import BILLION_LAUGHS, CORPUS_DOMAINS, DMARC, Row, aggregate, tls_report
from servers.dovecot import DovecotInstance, find_command
from test_cli import mailmon
from test_dmarc import Reader

from monitor.collectors.reports.files import FileResult
from monitor.collectors.reports.imap import ImapError, ReportMailbox
from monitor.collectors.reports.records import DmarcFailure, DmarcRow, TlsrptPolicy
from monitor.config import DmarcImapConfig, load_config
from monitor.jobs import builtin

pytestmark = pytest.mark.integration

PASSWORD_ENV = "MAILMON_TEST_DMARC_IMAP_PW"
USERS = {name: f"{name}-Pw-9" for name in ("corpus", "paths", "ro", "bad", "auth", "tls", "cut", "cli")}
KINDS = (DmarcRow.kind, DmarcFailure.kind, TlsrptPolicy.kind)
_SUBTYPES = {".gz": "gzip", ".zip": "zip", ".json": "tlsrpt+json", ".xml": "xml"}


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotInstance]:
    with DovecotInstance(tmp_path_factory.mktemp("dovecot"), users=USERS) as instance:
        yield instance


def _corpus() -> list[Path]:
    return sorted(p for p in DMARC.rglob("*") if p.is_file()
                  and p.parent.name != "parsed_output_examples" and p.name != "SOURCES.md")  # fmt: skip


def _mailed(name: str, data: bytes, subtype: str = "xml") -> bytes:
    """A report email as reporters send them: the report attached (xml, gzip, zip, json)."""
    mail = EmailMessage()
    mail["From"], mail["To"] = "noreply-dmarc@reporter.test", "dmarc@example.com"
    mail["Subject"] = f"Report domain: example.com Submitter: reporter.test Report-ID: {name}"
    mail["Date"] = "Sat, 06 Dec 2025 10:00:00 +0000"
    mail.set_content("The report is attached.")
    mail.add_attachment(data, maintype="application", subtype=subtype, filename=name)
    return bytes(mail)


def _corpus_mail(path: Path) -> bytes:
    """A corpus file as mail: an ``.eml`` as it is, any other attached by its type."""
    data = path.read_bytes()
    return data if path.suffix == ".eml" else _mailed(path.name, data, _SUBTYPES[path.suffix])


def _settings(dovecot: DovecotInstance, user: str, monkeypatch: pytest.MonkeyPatch,
              **kw: object) -> DmarcImapConfig:  # fmt: skip
    """Implicit TLS verified against the instance's own certificate, unless told otherwise."""
    monkeypatch.setenv(PASSWORD_ENV, USERS[user])
    values: dict[str, object] = {
        "host": dovecot.host, "port": dovecot.imaps_port, "tls": "tls",
        "ca_file": str(dovecot.cert_file), "user": user, "password_env": PASSWORD_ENV,
    }  # fmt: skip
    return DmarcImapConfig.model_validate(values | kw)


def _folders(dovecot: DovecotInstance, user: str) -> set[str]:
    with dovecot.client(user) as imap:
        return {name for _flags, _sep, name in imap.list_folders()}


def _counts(dovecot: DovecotInstance, user: str) -> dict[str, int]:
    return {f: len(dovecot.messages(user, f)) for f in sorted(_folders(dovecot, user))}


def _stored(reader: Reader) -> dict[str, int]:
    return {kind: len(reader.store.records(kind)) for kind in KINDS}


def _messages_metric(reader: Reader) -> float:
    """Every ``mailmon_dmarc_messages_total`` sample, summed."""
    family = next(f for f in reader.metrics.registry.collect()
                  if f.name == "mailmon_dmarc_messages")  # fmt: skip
    return sum(s.value for s in family.samples if s.name.endswith("_total"))


def test_mailed_corpus_lands_once_and_is_archived(
    dovecot: DovecotInstance, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 34 corpus reports, mailed (xml, gzip, zip, json attached, or the real .eml),
    read over IMAPS: stored as the directory path stores the same files, counted once,
    archived (the refused ones in the failed folder, a keyword naming the reason); a second
    run finds nothing, and the same reports mailed again store and count nothing."""
    for path in _corpus():
        dovecot.append("corpus", _corpus_mail(path))
    reader = Reader(sqlite_url, CORPUS_DOMAINS)
    settings = _settings(dovecot, "corpus", monkeypatch)
    first = ReportMailbox(reader.reports, settings).run()
    assert first["messages"] == first["reports"] == 34
    # A bare empty file mailed is an email without a report; the same two foreign reports.
    assert first["refused"] == {"foreign_domain": 2, "invalid_report": 1}
    assert first["by_type"] == {"aggregate": 24, "failure": 4, "smtp_tls": 3}
    assert first["moved"] == {"archived": 31, "failed": 3}
    assert _counts(dovecot, "corpus") == {"DMARC-Archive": 31, "DMARC-Failed": 3, "INBOX": 0,
                                          "Junk": 0, "Trash": 0}  # fmt: skip
    keywords = sorted(f for flags in dovecot.flags("corpus", "DMARC-Failed").values()
                      for f in flags if f.startswith(b"mailmon-"))  # fmt: skip
    assert keywords == [b"mailmon-refused-foreign_domain", b"mailmon-refused-foreign_domain",
                        b"mailmon-refused-invalid_report"]  # fmt: skip

    files = Reader(f"sqlite:///{tmp_path / 'files.db'}", CORPUS_DOMAINS)
    files.reports.ingest_path(str(DMARC))
    stored = _stored(reader)
    assert stored == _stored(files) and stored[DmarcRow.kind] > 2286
    assert first["stored"] == sum(stored.values())
    for kind in KINDS:
        assert reader.sample("mailmon_records_stored_total", kind=kind, source="dmarc") == stored[kind]
    volume = sum(r.count for r in reader.store.records(DmarcRow.kind))  # type: ignore[attr-defined]
    assert _messages_metric(reader) == volume
    assert reader.sample("mailmon_dmarc_imap_messages_total", outcome="archived") == 31
    assert reader.sample("mailmon_dmarc_imap_messages_total", outcome="failed") == 3
    assert reader.sample("mailmon_events_rejected_total", source="dmarc", reason="foreign_domain") == 2

    second = ReportMailbox(reader.reports, settings).run()
    assert second["messages"] == 0 and second["moved"] == {}

    for path in _corpus():  # a reporter sends them all again
        dovecot.append("corpus", _corpus_mail(path))
    again = ReportMailbox(reader.reports, settings).run()
    assert again["messages"] == 34 and again["moved"] == {"archived": 31, "failed": 3}
    assert _stored(reader) == stored
    for kind in KINDS:
        assert reader.sample("mailmon_records_stored_total", kind=kind, source="dmarc") == stored[kind]
    assert _messages_metric(reader) == volume
    assert _counts(dovecot, "corpus")["DMARC-Archive"] == 62


def test_a_report_read_from_a_file_then_mailed_counts_once(
    dovecot: DovecotInstance, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same reports as files first, then from the mailbox: nothing more stored or counted."""
    reports = {"a.xml": aggregate([Row("192.0.2.1", 40), Row("203.0.113.5", 2, dkim="fail",
                                                              spf="fail")], report_id="a"),
               "b.xml.gz": gzip.compress(aggregate([Row("192.0.2.2", 5)], report_id="b")),
               "t.json": tls_report(ok=9, failed=1)}  # fmt: skip
    reader = Reader(sqlite_url)
    for name, data in reports.items():
        reader.reports.ingest_file(str(reader.file(tmp_path / name, data)))
        subtype = {"xml": "xml", "gz": "gzip", "json": "tlsrpt+json"}[name.rsplit(".", 1)[1]]
        dovecot.append("paths", _mailed(name, data, subtype))
    stored = _stored(reader)
    before = _messages_metric(reader), reader.sample("mailmon_tlsrpt_sessions_total",
                                                     policy_domain="example.com", result="success")  # fmt: skip
    summary = ReportMailbox(reader.reports, _settings(dovecot, "paths", monkeypatch)).run()
    assert (summary["messages"], summary["stored"], summary["refused"]) == (3, 0, {})
    assert summary["duplicates"] == sum(stored.values()) == 4
    assert _stored(reader) == stored
    assert (_messages_metric(reader), reader.sample("mailmon_tlsrpt_sessions_total",
            policy_domain="example.com", result="success")) == before == (47, 9)  # fmt: skip


def test_read_only_mode_changes_nothing_on_the_server(
    dovecot: DovecotInstance, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-only: flags stay as they were (no \\Seen), nothing moves, no folder is made; the
    UID checkpoint reads only new messages next time; the store's dedupe keeps a later
    normal run over the same messages from counting them twice."""
    dovecot.append("ro", _mailed("1.xml", aggregate([Row("192.0.2.1", 3)], report_id="r1")))
    dovecot.append("ro", _mailed("2.xml", aggregate([Row("192.0.2.2", 4)], report_id="r2")),
                   flags=[b"\\Flagged"])  # fmt: skip
    dovecot.append("ro", _mailed("3.xml", BILLION_LAUGHS), flags=[b"\\Seen"])

    def flags() -> dict[int, set[bytes]]:
        return {uid: set(f) - {b"\\Recent"} for uid, f in dovecot.flags("ro").items()}

    before, folders = flags(), _folders(dovecot, "ro")
    assert before == {1: set(), 2: {b"\\Flagged"}, 3: {b"\\Seen"}}
    reader = Reader(sqlite_url)
    settings = _settings(dovecot, "ro", monkeypatch, read_only=True)
    first = ReportMailbox(reader.reports, settings).run()
    assert (first["messages"], first["stored"], first["refused"]) == (3, 2, {"doctype": 1})
    assert first["moved"] == {"kept": 3} and first["read_only"] is True
    assert flags() == before and _folders(dovecot, "ro") == folders
    assert reader.sample("mailmon_dmarc_imap_messages_total", outcome="kept") == 3

    assert ReportMailbox(reader.reports, settings).run()["messages"] == 0
    dovecot.append("ro", _mailed("4.xml", aggregate([Row("192.0.2.4", 5)], report_id="r4")))
    third = ReportMailbox(reader.reports, settings).run()
    assert (third["messages"], third["stored"]) == (1, 1)
    assert flags() == {**before, 4: set()}
    assert _messages_metric(reader) == 12

    normal = ReportMailbox(reader.reports, settings.model_copy(update={"read_only": False})).run()
    assert (normal["messages"], normal["stored"], normal["duplicates"]) == (4, 0, 3)
    assert normal["moved"] == {"archived": 3, "failed": 1}
    assert _messages_metric(reader) == 12 and len(reader.store.records(DmarcRow.kind)) == 3


def test_bad_messages_go_to_the_failed_folder_with_their_reason(
    dovecot: DovecotInstance, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entity bomb, a gzip bomb, a mail without a report, a foreign report and a message
    over max_report_bytes (refused from its size, never fetched) between good reports: each
    refused with its reason, counted, moved aside with a keyword; the good ones archived."""
    good = [_mailed(f"g{n}.xml", aggregate([Row(f"192.0.2.{n}", n)], report_id=f"g{n}"))
            for n in (1, 2, 3)]  # fmt: skip
    bad = {
        "doctype": _mailed("laughs.xml.gz", gzip.compress(BILLION_LAUGHS), "gzip"),
        "decompression_bomb": _mailed("bomb.xml.gz", gzip.compress(b"\0" * (8 << 20)), "gzip"),
        "invalid_report": b"From: someone@else.test\r\nSubject: hello\r\n\r\njust a note\r\n",
        "foreign_domain": _mailed("f.xml", aggregate([Row("192.0.2.9", 1)], domain="victim.test")),
        "too_large": _mailed("big.xml", b"<feedback>" + b" " * (2 << 20) + b"</feedback>"),
    }
    for data in (good[0], *bad.values(), good[1], good[2]):
        dovecot.append("bad", data)
    reader = Reader(sqlite_url, max_bytes=1 << 20)
    summary = ReportMailbox(reader.reports, _settings(dovecot, "bad", monkeypatch)).run()
    assert summary["messages"] == 8 and summary["stored"] == 3
    assert summary["refused"] == {reason: 1 for reason in bad}
    assert summary["moved"] == {"archived": 3, "failed": 5}
    assert len(summary["failed_messages"]) == 5
    assert sorted(r.source_ip for r in reader.store.records(DmarcRow.kind)) == [  # type: ignore[attr-defined]
        "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    for reason in bad:
        assert reader.sample("mailmon_events_rejected_total", source="dmarc", reason=reason) == 1
    keywords = {f.decode() for flags in dovecot.flags("bad", "DMARC-Failed").values()
                for f in flags if f.startswith(b"mailmon-")}  # fmt: skip
    assert keywords == {f"mailmon-refused-{reason}" for reason in bad}
    assert _counts(dovecot, "bad")["INBOX"] == 0


def test_a_refused_login_is_a_clear_counted_error_that_loses_nothing(
    dovecot: DovecotInstance, sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong password: ImapError('auth'), counted, the password in no log line (debug
    logging on); the message stays unread in the inbox and is read once the password is
    right."""
    caplog.set_level(logging.DEBUG)
    dovecot.append("auth", _mailed("a.xml", aggregate([Row("192.0.2.1", 6)], report_id="x")))
    reader = Reader(sqlite_url)
    settings = _settings(dovecot, "auth", monkeypatch)
    wrong = "Wrong-Pw-for-auth-77"
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    with pytest.raises(ImapError) as caught:
        ReportMailbox(reader.reports, settings).run()
    assert caught.value.reason == "auth"
    assert "the server refused the login of 'auth'" in str(caught.value)
    assert "AUTHENTICATIONFAILED" in str(caught.value)
    assert reader.sample("mailmon_dmarc_imap_errors_total", reason="auth") == 1
    assert wrong not in caplog.text and USERS["auth"] not in caplog.text
    assert {uid: set(f) - {b"\\Recent"} for uid, f in dovecot.flags("auth").items()} == {1: set()}
    assert _stored(reader)[DmarcRow.kind] == 0
    monkeypatch.setenv(PASSWORD_ENV, USERS["auth"])
    summary = ReportMailbox(reader.reports, settings).run()
    assert (summary["messages"], summary["stored"]) == (1, 1)
    assert USERS["auth"] not in caplog.text


def test_tls_modes_and_a_certificate_that_cannot_be_verified(
    dovecot: DovecotInstance, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STARTTLS on the plain port works with the CA given; implicit TLS against the system's
    CAs (a self-signed server) and TLS spoken to the plain port fail as 'tls', counted."""
    dovecot.append("tls", _mailed("t.xml", aggregate([Row("192.0.2.7", 2)], report_id="t")))
    reader = Reader(sqlite_url)
    untrusted = _settings(dovecot, "tls", monkeypatch, ca_file=None)
    with pytest.raises(ImapError, match=r"TLS handshake failed.*certificate verify failed") as caught:
        ReportMailbox(reader.reports, untrusted).run()
    assert caught.value.reason == "tls"
    plain_port = _settings(dovecot, "tls", monkeypatch, port=dovecot.imap_port)
    with pytest.raises(ImapError, match="TLS handshake failed"):
        ReportMailbox(reader.reports, plain_port).run()
    assert reader.sample("mailmon_dmarc_imap_errors_total", reason="tls") == 2
    starttls = _settings(dovecot, "tls", monkeypatch, tls="starttls", port=dovecot.imap_port)
    summary = ReportMailbox(reader.reports, starttls).run()
    assert (summary["messages"], summary["stored"]) == (1, 1)


def test_a_connection_cut_mid_run_loses_nothing(
    dovecot: DovecotInstance, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server drops the session while the job reads (``doveadm kick``): ImapError
    ('fetch'), counted; what was read is stored, nothing unread was moved, and the next run
    reads the rest, the message read before the cut counting once."""
    for n in range(1, 7):
        dovecot.append("cut", _mailed(f"{n}.xml", aggregate([Row(f"192.0.2.{n}", n)],
                                                            report_id=f"cut{n}")))  # fmt: skip
    reader = Reader(sqlite_url)
    settings = _settings(dovecot, "cut", monkeypatch, batch_messages=2)
    read_report = reader.reports.read_report
    calls: list[str] = []

    def cut_after_three(data: bytes, ref: str) -> FileResult:
        calls.append(ref)
        if len(calls) == 3:  # the third message is in hand; the session is cut under it
            subprocess.run([find_command("doveadm"), "-c", str(dovecot.config_file), "kick",
                            "cut"], check=True, capture_output=True)  # fmt: skip
        return read_report(data, ref)

    monkeypatch.setattr(reader.reports, "read_report", cut_after_three)
    with pytest.raises(ImapError) as caught:
        ReportMailbox(reader.reports, settings).run()
    assert caught.value.reason == "fetch" and "read next run" in str(caught.value)
    assert reader.sample("mailmon_dmarc_imap_errors_total", reason="fetch") == 1
    ips = sorted(r.source_ip for r in reader.store.records(DmarcRow.kind))  # type: ignore[attr-defined]
    assert ips == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert _counts(dovecot, "cut")["INBOX"] == 4  # the first batch moved, the rest not
    monkeypatch.undo()
    monkeypatch.setenv(PASSWORD_ENV, USERS["cut"])
    summary = ReportMailbox(reader.reports, settings).run()
    assert (summary["messages"], summary["stored"], summary["duplicates"]) == (4, 3, 1)
    assert len(reader.store.records(DmarcRow.kind)) == 6
    assert _messages_metric(reader) == 21 and _counts(dovecot, "cut")["DMARC-Archive"] == 6


def test_fetch_command_and_the_job(dovecot: DovecotInstance, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`mailmon dmarc fetch --json` reads the configured mailbox (password from a file),
    exits 1 when a report was refused and 0 when all were stored, and its reports feed
    `dmarc summary`; the dmarc_imap job of serve reads the same way; --read-only moves nothing."""
    secret = tmp_path / "imap.pw"
    secret.write_text(USERS["cli"] + "\n")
    config = tmp_path / "mailmon.toml"
    config.write_text(f'''[database]
url = "sqlite:///{tmp_path / "m.db"}"
[dmarc]
domains = ["example.com"]
[dmarc.imap]
host = "{dovecot.host}"
port = {dovecot.imaps_port}
ca_file = "{dovecot.cert_file}"
user = "cli"
password_file = "{secret}"
''')
    dovecot.append("cli", _mailed("a.xml", aggregate([Row("192.0.2.1", 30),
                                                      Row("203.0.113.8", 3, dkim="fail", spf="fail")],
                                                     report_id="cli-a")))  # fmt: skip
    dovecot.append("cli", _mailed("b.xml", BILLION_LAUGHS))
    dovecot.append("cli", _mailed("c.xml", aggregate([Row("192.0.2.3", 1)], report_id="cli-c")))
    looked = mailmon("dmarc", "fetch", "--read-only", "--json", "--config", str(config), check=False)
    assert looked.returncode == 1, looked.stderr
    assert json.loads(looked.stdout)["moved"] == {"kept": 3}
    assert _counts(dovecot, "cli")["INBOX"] == 3
    out = mailmon("dmarc", "fetch", "--json", "--config", str(config), check=False)
    assert out.returncode == 1, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["messages"], summary["stored"], summary["duplicates"]) == (3, 0, 3)
    assert summary["refused"] == {"doctype": 1}
    assert summary["moved"] == {"archived": 2, "failed": 1}
    assert USERS["cli"] not in out.stdout + out.stderr + looked.stderr
    report = json.loads(mailmon("dmarc", "summary", "--json", "--config", str(config)).stdout)
    assert [(d["domain"], d["messages"]) for d in report] == [("example.com", 34)]

    dovecot.append("cli", _mailed("d.xml", aggregate([Row("192.0.2.4", 4)], report_id="cli-d")))
    reader = Reader(f"sqlite:///{tmp_path / 'm.db'}")
    builtin.dmarc_imap(load_config(config), reader.reports.driver)()
    assert len(reader.store.records(DmarcRow.kind)) == 4
    assert _counts(dovecot, "cli")["DMARC-Archive"] == 3
    assert reader.sample("mailmon_dmarc_imap_messages_total", outcome="archived") == 1
    nothing = mailmon("dmarc", "fetch", "--config", str(config))
    assert "messages: 0" in nothing.stdout
