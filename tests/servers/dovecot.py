"""A private Dovecot (IMAP + LMTP + Sieve) on 127.0.0.1 for integration tests.

It runs the system's Dovecot 2.3 (Debian ``dovecot-imapd``, ``dovecot-lmtpd``,
``dovecot-sieve``, installed by scripts/install-test-deps.sh) with its own configuration,
users, mail and state in a directory of its own under the system's temp directory
(:func:`servers.mta.private_root`: Dovecot's auth and mail processes drop root and must
reach inside), on loopback ports chosen free.  Nothing of the system's Dovecot is read
or touched (``-c CONF``, own ``base_dir`` and ``instance_name``).  It must run as root.

What it offers:

- users with passwords (a ``passwd-file``, re-read on change: :meth:`add_user` and
  :meth:`set_password` work while it runs); mail in ``maildir:~/Maildir`` owned by
  ``nobody``; LMTP recipients ``user`` or ``user@any.domain`` reach the same user;
- IMAP in plain text on ``imap_port`` (LOGIN/PLAIN allowed, STARTTLS offered) and IMAPS on
  ``imaps_port``, with a self-signed certificate for ``localhost`` (``cert_file``; clients
  must not verify it, or load it as their CA);
- LMTP on ``lmtp_port`` (:meth:`deliver` sends one message to one recipient);
- mailboxes every user has, with their RFC 6154 SPECIAL-USE flag or none (``mailboxes``,
  default ``Junk`` ``\\Junk`` and ``Trash`` ``\\Trash``), and plain folders per user
  (:meth:`create_folder`);
- Sieve at delivery: a global script run before the user's (``sieve_before``) and a
  per-user active script (:meth:`set_sieve`), e.g. ``fileinto "Junk"`` or ``discard``;
- :meth:`append` (IMAP APPEND with flags and INTERNALDATE), :meth:`client` (an
  ``imapclient.IMAPClient`` logged in as a user), :meth:`messages` (a folder's messages),
  :meth:`log_lines` (Dovecot's log, kept in the test's directory after :meth:`stop`).

Use::

    with DovecotInstance(tmp_path, users={"alice": "alicepw"}) as dovecot:
        dovecot.set_sieve("alice", 'require "fileinto"; if header :is "X-J" "1" { fileinto "Junk"; }')
        dovecot.deliver(message, "alice@seeds.test")
        dovecot.append("alice", other, folder="Trash", flags=[b"\\\\Seen"])
        assert [m["Subject"] for m in dovecot.messages("alice", "Junk")] == [...]

Start to ready is well under a second (the IMAP banner is read to know it is up).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from email.message import EmailMessage, Message
from pathlib import Path
from types import TracebackType
from typing import Self

from imapclient import IMAPClient

from servers.mta import let_others_traverse, private_root

__all__ = ["INSTALL_HINT", "DovecotInstance", "DovecotMissing", "free_port"]

INSTALL_HINT = (
    "Dovecot is not installed: run `sudo scripts/install-test-deps.sh` "
    "(Debian packages dovecot-imapd, dovecot-lmtpd, dovecot-sieve), then run the tests again"
)

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin")

#: The mailboxes every user has unless told otherwise: name -> RFC 6154 flag (or None).
DEFAULT_MAILBOXES: dict[str, str | None] = {"Junk": "\\Junk", "Trash": "\\Trash"}

_CONF = """\
# private test instance (tests/servers/dovecot.py)
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailmon-dovecot-{port}
protocols = imap lmtp
listen = 127.0.0.1
log_path = {root}/log/dovecot.log
auth_username_format = %Ln
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
mail_location = maildir:~/Maildir
{ssl}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {root}/users
  default_fields = home={root}/mail/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
  postmaster_address = postmaster@dovecot.test
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
{sieve_before}
}}
"""


class DovecotMissing(RuntimeError):
    """Dovecot's commands are not installed on this machine."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_command(command: str) -> str:
    """The path of one of Dovecot's commands, or :class:`DovecotMissing` with the fix."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    path = shutil.which(command, path=search)
    if path is None:
        raise DovecotMissing(f"`{command}` not found. {INSTALL_HINT}")
    return path


class DovecotInstance:
    """A Dovecot on 127.0.0.1 (``imap_port``, ``imaps_port``, ``lmtp_port``) of its own.

    ``users`` maps login names to passwords; ``mailboxes`` the folders every user has to
    their SPECIAL-USE flag (None for none); ``sieve_before`` is a global Sieve script run
    for every delivery before the user's own; ``tls`` adds the IMAPS listener and STARTTLS.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        tmpdir: Path | str,
        users: Mapping[str, str] | None = None,
        *,
        mailboxes: Mapping[str, str | None] | None = None,
        sieve_before: str | None = None,
        tls: bool = True,
    ) -> None:
        self.keep_dir = Path(tmpdir).resolve() / "dovecot"
        self.users = dict(users or {})
        self.mailboxes = dict(DEFAULT_MAILBOXES if mailboxes is None else mailboxes)
        self.sieve_before = sieve_before
        self.tls = tls
        self.root: Path | None = None
        self.imap_port = 0
        self.imaps_port = 0
        self.lmtp_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._users_stamp = 0

    # -- lifecycle -------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self._root() / "dovecot.conf"

    @property
    def cert_file(self) -> Path:
        """The self-signed certificate (PEM) the IMAPS and STARTTLS listeners present."""
        return self._root() / "tls" / "cert.pem"

    @property
    def log_file(self) -> Path:
        return self._root() / "log" / "dovecot.log"

    def start(self, timeout: float = 20.0) -> Self:
        """Write the configuration, start the master and wait for the IMAP banner."""
        dovecot = find_command("dovecot")
        if os.geteuid() != 0:
            raise PermissionError("a private Dovecot must be started as root")
        self.root = private_root("dovecot")
        self.root.chmod(0o711)
        let_others_traverse(self.root)
        self.imap_port, self.imaps_port, self.lmtp_port = _free_ports(3)
        self._write_config()
        check = subprocess.run(
            [find_command("doveconf"), "-c", str(self.config_file), "-n"],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise RuntimeError(f"doveconf refused the configuration: {check.stderr}")
        self._process = subprocess.Popen(
            [dovecot, "-F", "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=(self._root() / "log" / "master.err").open("wb"),
        )
        self._await_banner(timeout)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the master (and its children); keep the log; remove the directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self.root is not None:
            self.keep_dir.mkdir(parents=True, exist_ok=True)
            for log in (self.root / "log").glob("*"):
                with contextlib.suppress(OSError):
                    shutil.copy(log, self.keep_dir / log.name)
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- users, folders, Sieve -------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Add (or change) a user; Dovecot re-reads the passwd-file, no restart needed.

        Takes up to a second while running: Dovecot looks at the file once a second.
        """
        self.users[name] = password
        if self.root is not None:
            self._write_users()

    set_password = add_user

    def home(self, user: str) -> Path:
        return self._root() / "mail" / user

    def set_sieve(self, user: str, script: str) -> None:
        """Make ``script`` the user's active Sieve script for the next deliveries."""
        home = self.home(user)
        home.mkdir(parents=True, exist_ok=True)
        path = home / ".dovecot.sieve"
        path.write_text(script, encoding="utf-8")
        # Compiled here, so a script error fails the test now rather than being logged
        # at delivery; the mail process (nobody) owns the home and rewrites the binary.
        out = subprocess.run(
            [find_command("sievec"), "-c", str(self.config_file), "-u", user, str(path)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise ValueError(f"sievec refused the script for {user}: {out.stdout}{out.stderr}")
        _chown_tree(home, "nobody")

    def create_folder(self, user: str, name: str) -> None:
        """Create a plain folder (no SPECIAL-USE flag) for one user."""
        with self.client(user) as imap:
            imap.create_folder(name)

    # -- mail in ---------------------------------------------------------------------

    def deliver(
        self, message: Message | bytes, recipient: str, sender: str = "sender@dovecot.test"
    ) -> None:
        """Deliver over LMTP to one recipient (Sieve runs); raise if it is refused."""
        raw = message if isinstance(message, bytes) else message.as_bytes()
        with smtplib.LMTP(self.host, self.lmtp_port, timeout=10) as lmtp:
            refused = lmtp.sendmail(sender, [recipient], raw)
        if refused:
            raise RuntimeError(f"LMTP refused {recipient}: {refused}")

    def append(
        self,
        user: str,
        message: Message | bytes,
        folder: str = "INBOX",
        *,
        flags: Sequence[bytes | str] = (),
        internaldate: dt.datetime | None = None,
    ) -> int | None:
        """IMAP APPEND to one of the user's folders; returns the new UID (UIDPLUS)."""
        raw = message if isinstance(message, bytes) else message.as_bytes()
        with self.client(user) as imap:
            reply = imap.append(folder, raw, flags=tuple(flags), msg_time=internaldate)
        # "[APPENDUID <validity> <uid>] Append completed."
        parts = reply.decode(errors="replace").split()
        if len(parts) >= 3 and parts[0] == "[APPENDUID":
            return int(parts[2].rstrip("]"))
        return None

    # -- mail out --------------------------------------------------------------------

    @contextlib.contextmanager
    def client(self, user: str, *, password: str | None = None) -> Iterator[IMAPClient]:
        """An ``imapclient.IMAPClient`` on the plain port, logged in as ``user``."""
        imap = IMAPClient(self.host, port=self.imap_port, ssl=False, timeout=10)
        try:
            imap.login(user, self.users[user] if password is None else password)
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def messages(self, user: str, folder: str = "INBOX") -> list[EmailMessage]:
        """The messages of one folder, oldest first, read without changing a flag."""
        with self.client(user) as imap:
            imap.select_folder(folder, readonly=True)
            uids = imap.search("ALL")
            data = imap.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
        return [
            email.message_from_bytes(data[uid][b"BODY[]"], policy=email.policy.default)
            for uid in sorted(data)
        ]

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        """Each message's flags in one folder, by UID (read-only)."""
        with self.client(user) as imap:
            imap.select_folder(folder, readonly=True)
            uids = imap.search("ALL")
            data = imap.fetch(uids, ["FLAGS"]) if uids else {}
        return {uid: tuple(d[b"FLAGS"]) for uid, d in data.items()}

    def log_lines(self) -> list[str]:
        path = self.log_file if self.root is not None else self.keep_dir / "dovecot.log"
        try:
            return path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    # -- internals -------------------------------------------------------------------

    def _root(self) -> Path:
        if self.root is None:
            raise RuntimeError("the Dovecot instance is not started")
        return self.root

    def _write_config(self) -> None:
        root = self._root()
        for sub in ("run", "state", "log", "mail", "sieve", "tls"):
            (root / sub).mkdir()
        _chown_tree(root / "mail", "nobody")
        ssl = "ssl = no"
        if self.tls:
            _self_signed(root / "tls" / "cert.pem", root / "tls" / "key.pem")
            ssl = (
                "ssl = yes\n"
                f"ssl_cert = <{root}/tls/cert.pem\n"
                f"ssl_key = <{root}/tls/key.pem\n"
                "ssl_dh = </usr/share/dovecot/dh.pem"
            )
        boxes = []
        for name, flag in self.mailboxes.items():
            use = f"\n    special_use = {flag}" if flag else ""
            boxes.append(f'  mailbox "{name}" {{\n    auto = subscribe{use}\n  }}')
        before = ""
        if self.sieve_before is not None:
            script = root / "sieve" / "before.sieve"
            script.write_text(self.sieve_before, encoding="utf-8")
            before = f"  sieve_before = {script}"
        self.config_file.write_text(
            _CONF.format(
                root=root,
                port=self.imap_port,
                imap_port=self.imap_port,
                imaps_port=self.imaps_port if self.tls else 0,
                lmtp_port=self.lmtp_port,
                ssl=ssl,
                mailboxes="\n".join(boxes),
                sieve_before=before,
            ),
            encoding="utf-8",
        )
        self._write_users()
        if self.sieve_before is not None:
            # Global scripts must be compiled ahead: the mail process may not write here.
            out = subprocess.run(
                [find_command("sievec"), "-c", str(self.config_file), str(root / "sieve")],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise ValueError(f"sievec refused sieve_before: {out.stdout}{out.stderr}")

    def _write_users(self) -> None:
        lines = [f"{name}:{{PLAIN}}{password}::::::\n" for name, password in self.users.items()]
        path = self._root() / "users"
        tmp = path.with_suffix(".new")
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.chmod(0o644)
        # Dovecot re-reads the file when its mtime changes, in whole seconds.
        self._users_stamp = max(int(time.time()), self._users_stamp + 1)
        os.utime(tmp, (self._users_stamp, self._users_stamp))
        tmp.replace(path)
        if self.running():
            # ... and stats it at most once a second: let a second pass.
            time.sleep(1.05 - time.time() % 1)

    def _await_banner(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"Dovecot exited at start: {self._tail()}")
            try:
                with socket.create_connection((self.host, self.imap_port), timeout=2) as sock:
                    if sock.recv(256).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Dovecot did not answer on IMAP: {self._tail()}")
            time.sleep(0.05)

    def _tail(self) -> str:
        err = self._root() / "log" / "master.err"
        text = err.read_text(errors="replace") if err.exists() else ""
        return text + "\n".join(self.log_lines()[-20:])


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together so none is handed out twice)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for item in [path, *path.rglob("*")]:
        os.chown(item, entry.pw_uid, entry.pw_gid)


def _self_signed(cert_path: Path, key_path: Path) -> None:
    """A self-signed certificate for ``localhost`` / 127.0.0.1, valid for a day."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
