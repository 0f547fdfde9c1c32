"""The private Dovecot fixture (tests/servers/dovecot.py) does what its docstring promises.

One instance for the module: users with passwords, LMTP delivery through a global and a
per-user Sieve script, SPECIAL-USE folders, APPEND with flags and INTERNALDATE, plain
folders, IMAPS and STARTTLS with the self-signed certificate, a password changed while it
runs, and a stop that leaves nothing running and keeps the log.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from servers.dovecot import DovecotInstance

GLOBAL_SIEVE = """require ["fileinto"];
if header :is "X-Fixture-Junk" "yes" { fileinto "Junk"; stop; }
"""


def _message(n: int, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sender@app.test"
    message["To"] = "alice@seeds.test"
    message["Subject"] = f"fixture {n}"
    message["Message-ID"] = f"<fixture-{n}@app.test>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(f"body {n}\n")
    return message


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotInstance]:
    instance = DovecotInstance(
        tmp_path_factory.mktemp("dovecot"),
        users={"alice": "alicepw", "bob": "bobpw"},
        sieve_before=GLOBAL_SIEVE,
    )
    with instance:
        yield instance


def test_special_use_folders_listed(dovecot: DovecotInstance) -> None:
    """Every user has INBOX, Junk flagged \\Junk and Trash flagged \\Trash (RFC 6154)."""
    with dovecot.client("alice") as imap:
        folders = {name: flags for flags, _, name in imap.list_folders()}
        assert b"\\Junk" in folders["Junk"]
        assert b"\\Trash" in folders["Trash"]
        assert "INBOX" in folders
        assert imap.find_special_folder(b"\\Junk") == "Junk"
        assert b"SPECIAL-USE" in imap.capabilities()


def test_lmtp_and_sieve_file_into_junk_or_discard(dovecot: DovecotInstance) -> None:
    """The global script files a marked message into Junk; bob's own script discards one."""
    dovecot.set_sieve("bob", 'if header :contains "Subject" "drop me" { discard; stop; }\n')
    dovecot.deliver(_message(1), "alice@seeds.test")
    dovecot.deliver(_message(2, X_Fixture_Junk="yes"), "alice@seeds.test")
    dovecot.deliver(_message(3), "bob@elsewhere.test")
    dovecot.deliver(_message(4, Subject_Extra="x"), "bob")
    drop = _message(5)
    drop.replace_header("Subject", "please drop me")
    dovecot.deliver(drop, "bob@seeds.test")
    assert [m["Message-ID"] for m in dovecot.messages("alice")] == ["<fixture-1@app.test>"]
    assert [m["Message-ID"] for m in dovecot.messages("alice", "Junk")] == ["<fixture-2@app.test>"]
    assert [m["Message-ID"] for m in dovecot.messages("bob")] == [
        "<fixture-3@app.test>",
        "<fixture-4@app.test>",
    ]
    assert any("discard" in line for line in dovecot.log_lines())


def test_append_keeps_flags_and_internaldate(dovecot: DovecotInstance) -> None:
    """APPEND puts a message in any folder with the flags and INTERNALDATE given."""
    when = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    uid = dovecot.append("alice", _message(6), "Trash", flags=[b"\\Seen"], internaldate=when)
    assert uid is not None
    assert b"\\Seen" in dovecot.flags("alice", "Trash")[uid]
    with dovecot.client("alice") as imap:
        imap.select_folder("Trash", readonly=True)
        got = imap.fetch([uid], ["INTERNALDATE"])[uid][b"INTERNALDATE"]
    assert got.astimezone(UTC) == when


def test_plain_folder_per_user(dovecot: DovecotInstance) -> None:
    """create_folder makes a folder with no SPECIAL-USE flag for one user only."""
    dovecot.create_folder("bob", "Junk Email")
    with dovecot.client("bob") as imap:
        flags = {name: f for f, _, name in imap.list_folders()}
    assert "Junk Email" in flags and b"\\Junk" not in flags["Junk Email"]
    with dovecot.client("alice") as imap:
        assert "Junk Email" not in {name for _, _, name in imap.list_folders()}


def test_imaps_and_starttls(dovecot: DovecotInstance) -> None:
    """IMAPS and STARTTLS present the self-signed certificate, which verifies as CA."""
    context = ssl.create_default_context(cafile=str(dovecot.cert_file))
    with IMAPClient(dovecot.host, port=dovecot.imaps_port, ssl=True, ssl_context=context) as imap:
        imap.login("alice", "alicepw")
        assert imap.select_folder("INBOX", readonly=True)[b"EXISTS"] >= 1
    with IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False) as imap:
        imap.starttls(context)
        imap.login("bob", "bobpw")
        assert imap.folder_exists("Junk")


def test_password_change_and_wrong_password(dovecot: DovecotInstance) -> None:
    """A wrong password is refused; set_password takes effect without a restart."""
    with pytest.raises(LoginError), dovecot.client("alice", password="nope"):
        pass
    dovecot.add_user("carol", "first")
    with dovecot.client("carol") as imap:
        assert imap.folder_exists("INBOX")
    dovecot.set_password("carol", "second")
    with pytest.raises(LoginError), dovecot.client("carol", password="first"):
        pass
    with dovecot.client("carol") as imap:
        assert imap.folder_exists("Trash")


def test_stop_frees_ports_and_keeps_log(tmp_path: Path) -> None:
    """After stop the ports are closed, the directory is gone and the log is kept."""
    instance = DovecotInstance(tmp_path, users={"u": "p"}, mailboxes={}, tls=False)
    instance.start()
    root, port = instance.root, instance.imap_port
    assert root is not None and root.exists()
    instance.stop()
    assert not root.exists()
    assert (tmp_path / "dovecot" / "dovecot.log").exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    instance.stop()  # twice is harmless
