"""A private Exim 4 daemon on 127.0.0.1 for integration tests.

Debian's ``exim4-daemon-light`` conflicts with Postfix, so ``scripts/install-test-deps.sh``
unpacks its .deb into a cache directory (:data:`EXIM_ROOT`) instead of installing it,
installs the one library it lacks (libidn12) and creates the ``Debian-exim`` user it runs
as.  Each instance has its own configuration, spool and mainlog in a directory of its own
(:func:`servers.mta.private_root`; the mainlog is kept in the test's temporary directory
once it has stopped) and routes every test domain to one SMTP peer (``manualroute`` to 127.0.0.1),
so no DNS is asked.  It must run as root; its configuration is listed in
``/etc/exim4/trusted_configs`` while it runs (so Exim keeps its privileges for ``-C``)
and the entry is removed on :meth:`EximInstance.stop`.

Use::

    with EximInstance(tmp_path, port, sink.port, ["ok.test"]) as mta:
        queue_id = mta.submit(message, "sender@app.test", ["a@ok.test"])
        mta.wait_for_log(lambda lines: any(" => a@ok.test " in line for line in lines))
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Self

from servers.mta import MtaInstance, let_others_traverse, private_root

__all__ = ["EXIM_ROOT", "INSTALL_HINT", "EximInstance", "EximMissing", "find_exim"]

#: Where install-test-deps.sh unpacks exim4-daemon-light (fetched once per machine).
EXIM_ROOT = Path(os.environ.get("MAILMON_EXIM_ROOT", "/var/cache/mailmon-test/exim"))
INSTALL_HINT = (
    f"Exim is not available under {EXIM_ROOT}: run `sudo scripts/install-test-deps.sh` "
    "(it unpacks Debian's exim4-daemon-light there, installs libidn12 and creates the "
    "Debian-exim user), then run the tests again"
)
TRUSTED_CONFIGS = Path("/etc/exim4/trusted_configs")

_CONFIG = """\
exim_path = {binary}
spool_directory = {spool}
log_file_path = {log_dir}/%slog
primary_hostname = exim.test
qualify_domain = app.test
exim_user = Debian-exim
exim_group = Debian-exim
local_interfaces = 127.0.0.1
daemon_smtp_ports = {port}
log_selector = +smtp_confirmation +deliver_time +queue_time +received_recipients +millisec
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
keep_environment =
domainlist test_domains = {domains}
acl_smtp_rcpt = acl_check_rcpt

begin acl
acl_check_rcpt:
  accept hosts = 127.0.0.1
  deny   message = relay not permitted

begin routers
to_sink:
  driver = manualroute
  domains = +test_domains
  transport = sink_smtp
  route_list = * 127.0.0.1
  self = send
  no_more

begin transports
sink_smtp:
  driver = smtp
  port = {sink_port}
  hosts_avoid_tls = *

begin retry
*  *  {retry_rule}
"""


class EximMissing(RuntimeError):
    """Exim's binary is not where install-test-deps.sh puts it, or cannot run."""


def find_exim() -> Path:
    """The unpacked Exim binary, or :class:`EximMissing` with the command that fixes it."""
    binary = EXIM_ROOT / "usr" / "sbin" / "exim4"
    if not os.access(binary, os.X_OK):
        raise EximMissing(f"{binary} not found. {INSTALL_HINT}")
    try:
        pwd.getpwnam("Debian-exim")
    except KeyError as missing:
        raise EximMissing(f"user Debian-exim does not exist. {INSTALL_HINT}") from missing
    return binary


def _edit_trusted(config: Path, add: bool) -> None:
    """Add or remove ``config`` in Exim's list of trusted ``-C`` files, under a lock."""
    lock_path = Path(tempfile.gettempdir()) / "mailmon-exim-trusted_configs.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            lines = TRUSTED_CONFIGS.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        lines = [line for line in lines if line != str(config)]
        if add:
            lines.append(str(config))
        if lines:
            TRUSTED_CONFIGS.parent.mkdir(parents=True, exist_ok=True)
            TRUSTED_CONFIGS.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
            TRUSTED_CONFIGS.chmod(0o644)
        else:
            TRUSTED_CONFIGS.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # only when empty: nothing else lives there
                TRUSTED_CONFIGS.parent.rmdir()


class EximInstance(MtaInstance):
    """An Exim daemon on ``127.0.0.1:port`` relaying ``domains`` to ``127.0.0.1:sink_port``.

    ``retry_rule`` is the one line of the retry section; the default gives up on an address
    5 s after its first temporary failure and never retries on its own (no queue runner:
    :meth:`run_queue` runs one, forced).
    """

    name = "Exim"
    log_name = "mainlog"

    def __init__(
        self,
        tmpdir: Path | str,
        port: int,
        sink_port: int,
        domains: Sequence[str],
        *,
        retry_rule: str = "F,5s,1s",
    ) -> None:
        self.keep_dir = Path(tmpdir).resolve() / "exim"
        self.root = private_root("exim")
        self.port = port
        self.sink_port = sink_port
        self.domains = list(domains)
        self.retry_rule = retry_rule
        self.config = self.root / "exim.conf"
        self.spool = self.root / "spool"
        self.log_dir = self.root / "log"
        self.log_file = self.log_dir / "mainlog"
        self._daemon: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        """Write the configuration, start the daemon in the foreground and wait for SMTP."""
        binary = find_exim()
        if os.geteuid() != 0:
            raise PermissionError("a private Exim must be started as root")
        self._write_config(binary)
        _edit_trusted(self.config, add=True)
        self._daemon = subprocess.Popen(
            [str(binary), "-C", str(self.config), "-bdf"],
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._await_smtp(timeout)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the daemon and drop the trusted-config entry; safe to call twice."""
        daemon, self._daemon = self._daemon, None
        if daemon is not None:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait(timeout)
            if daemon.stderr is not None:
                daemon.stderr.close()
        with contextlib.suppress(OSError):
            _edit_trusted(self.config, add=False)
        self._release_root()

    # -- queue control ---------------------------------------------------------------

    def run_queue(self) -> None:
        """One forced queue run (``-qff``): every queued address is tried now; returns when done."""
        self._run("-qff")

    def queue_count(self) -> int:
        """How many messages are queued (``-bpc``)."""
        return int(self._run("-bpc").stdout.strip() or 0)

    def submit(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> str:
        """Send one message over SMTP to this instance; return the message id Exim gave it."""
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test") as client:
            client.ehlo()
            refused = client.sendmail(sender, list(recipients), message.as_bytes())
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
        # sendmail() keeps no reply text: the id is on the log's arrival line.
        message_id = str(message["Message-ID"]).strip("<>")
        lines = self.wait_for_log(
            lambda lines: [line for line in lines if f" id={message_id}" in line]
        )
        found = re.search(r" ([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) <= ", lines[0])
        assert found is not None, lines[0]
        return found.group(1)

    # -- internals -------------------------------------------------------------------

    def _exit_output(self) -> str | None:
        daemon = self._daemon
        if daemon is None or daemon.poll() is None:
            return None
        return daemon.stderr.read().decode() if daemon.stderr else ""

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC"}

    def _write_config(self, binary: Path) -> None:
        for directory in (self.root, self.spool, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        let_others_traverse(self.root)
        for directory in (self.spool, self.log_dir):
            shutil.chown(directory, "Debian-exim", "Debian-exim")
        text = _CONFIG.format(
            binary=binary,
            spool=self.spool,
            log_dir=self.log_dir,
            port=self.port,
            sink_port=self.sink_port,
            domains=" : ".join(self.domains),
            retry_rule=self.retry_rule,
        )
        self.config.write_text(text, encoding="utf-8")
        self.config.chmod(0o644)  # root-owned and not writable by others: Exim trusts it

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        argv = [str(find_exim()), "-C", str(self.config), *args]
        return self._command(argv, self._env(), timeout=timeout)
