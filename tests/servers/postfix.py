"""A private Postfix instance on 127.0.0.1 for integration tests.

It runs the system's Postfix binaries (``postfix -c DIR``) with its own configuration,
queue, data directory and log file (``maillog_file``, written by postlogd, no syslog)
in a directory of its own (:func:`servers.mta.private_root`), so it needs no system
configuration and leaves none behind; once stopped, its log is kept in the test's
temporary directory.  It must run as root: the master runs as root and its daemons as ``postfix``.
Debian's package installed with "No configuration" (scripts/install-test-deps.sh) is enough.

Use::

    mta = PostfixInstance(tmp_path, port, {"ok.test": f"smtp:[127.0.0.1]:{sink.port}"})
    mta.start()
    try:
        queue_id = mta.submit(message, "sender@app.test", ["a@ok.test"])
        mta.wait_for_log(lambda lines: any("status=sent" in line for line in lines))
    finally:
        mta.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import time
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Self

from servers.mta import MtaInstance, let_others_traverse, private_root

__all__ = ["INSTALL_HINT", "PostfixInstance", "PostfixMissing", "find_postfix"]

INSTALL_HINT = (
    "Postfix is not installed: run `sudo scripts/install-test-deps.sh` "
    "(Debian packages postfix and pflogsumm), then run the tests again"
)

#: Where Debian keeps Postfix's commands; a non-root PATH often lacks /usr/sbin.
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")

#: main.cf for a private, loopback-only instance; the test's own settings override these.
_MAIN_CF: dict[str, str] = {
    "compatibility_level": "3.6",
    "myhostname": "mta.test",
    "mydestination": "",
    "local_recipient_maps": "",
    "alias_maps": "",
    "alias_database": "",
    "inet_interfaces": "loopback-only",
    "inet_protocols": "ipv4",
    "mynetworks": "127.0.0.0/8",
    "relay_domains": "",
    "default_transport": "error:no route for this test domain",
    # Transports name IP literals, so no DNS is ever asked.
    "smtp_dns_support_level": "disabled",
    "smtp_host_lookup": "native",
    "smtpd_peername_lookup": "no",
    "smtp_tls_security_level": "none",
    "smtpd_tls_security_level": "none",
    "biff": "no",
    "queue_run_delay": "5s",
    "minimal_backoff_time": "5s",
    "maximal_backoff_time": "10s",
    "maximal_queue_lifetime": "60s",
    "bounce_queue_lifetime": "60s",
    "delay_warning_time": "0h",
}

#: master.cf: chroot `n` everywhere (the queue is private) and one loopback listener.
_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""

_QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")


class PostfixMissing(RuntimeError):
    """Postfix's commands are not installed on this machine."""


def find_postfix(command: str = "postfix") -> str:
    """The path of one of Postfix's commands, or :class:`PostfixMissing` with the fix."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
    path = shutil.which(command, path=search)
    if path is None:
        raise PostfixMissing(f"`{command}` not found. {INSTALL_HINT}")
    return path


class PostfixInstance(MtaInstance):
    """A Postfix listening on ``127.0.0.1:port`` with its own config, queue and maillog.

    The maillog is kept under ``tmpdir`` once the instance has stopped.

    ``transport_map`` maps a recipient domain to a transport, e.g.
    ``{"ok.test": "smtp:[127.0.0.1]:2526"}``; other domains bounce (``default_transport``).
    ``settings`` override main.cf parameters (backoff times, queue lifetimes, ...).
    """

    name = "Postfix"
    log_name = "maillog"
    log_timeout = 20.0

    def __init__(
        self,
        tmpdir: Path | str,
        port: int,
        transport_map: Mapping[str, str],
        *,
        settings: Mapping[str, str] | None = None,
        syslog_name: str = "postfix",
    ) -> None:
        self.keep_dir = Path(tmpdir).resolve() / "postfix"
        self.root = private_root("postfix")
        self.port = port
        self.transport_map = dict(transport_map)
        self.settings = dict(settings or {})
        self.syslog_name = syslog_name
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "queue"
        self.data_dir = self.root / "data"
        self.log_file = self.root / "log" / "maillog"
        self._started = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        """Write the configuration, start the master and wait until smtpd answers."""
        find_postfix("postfix")
        if os.geteuid() != 0:
            raise PermissionError("a private Postfix must be started as root")
        self._write_config()
        self._started = True
        self._run("postfix", "start")
        self._await_smtp(timeout)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the master and its daemons; safe to call twice or after a failed start."""
        if not self._started:
            self._release_root()
            return
        self._started = False
        pid = self._master_pid()
        # `postfix stop` waits until the master has gone; the kill is for a wedged master.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._run("postfix", "stop", check=False, timeout=timeout)
        deadline = time.monotonic() + timeout
        while pid is not None and _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        self._release_root()

    # -- queue control ---------------------------------------------------------------

    def flush(self) -> None:
        """Retry every queued message now (``postqueue -f``), dead destinations included."""
        self._run("postqueue", "-f")

    def expire_all(self) -> None:
        """Force-expire every queued message and flush, so each is returned to its sender."""
        self._run("postsuper", "-e", "ALL")
        self.flush()

    def queue(self) -> list[dict[str, Any]]:
        """``postqueue -j``: one mapping per queued message (``queue_name``, ``recipients``...)."""
        out = self._run("postqueue", "-j").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queue_listing(self) -> str:
        """``postqueue -p``: the human listing of what is still queued."""
        return self._run("postqueue", "-p", check=False).stdout

    def submit(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> str:
        """Send one message over SMTP to this instance; return the queue id Postfix gave it."""
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test") as client:
            client.ehlo()
            code, reply = client.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            for rcpt in recipients:
                code, reply = client.rcpt(rcpt)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({rcpt: (code, reply)})
            code, reply = client.data(message.as_bytes())
        match = _QUEUED_AS.search(reply.decode("ascii", "replace"))
        if code != 250 or match is None:
            raise smtplib.SMTPDataError(code, reply)
        return match.group(1)

    # -- internals -------------------------------------------------------------------

    def _queue_report(self) -> str:
        return f"\n--- postqueue -p ---\n{self.queue_listing()}"

    def main_cf(self) -> dict[str, str]:
        """The main.cf parameters this instance runs with."""
        transports = ", ".join(f"{d}={t}" for d, t in sorted(self.transport_map.items()))
        return {
            **_MAIN_CF,
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": f"/var, /dev/stdout, {self.root}",
            "syslog_name": self.syslog_name,
            "transport_maps": f"inline:{{ {transports} }}" if transports else "",
            **self.settings,
        }

    def _write_config(self) -> None:
        for directory in (self.config_dir, self.queue_dir, self.data_dir, self.log_file.parent):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        let_others_traverse(self.root)
        shutil.chown(self.data_dir, "postfix", "postfix")
        main = "".join(f"{key} = {value}\n" for key, value in self.main_cf().items())
        (self.config_dir / "main.cf").write_text(main, encoding="utf-8")
        master = _MASTER_CF.format(listen=f"127.0.0.1:{self.port}")
        (self.config_dir / "master.cf").write_text(master, encoding="utf-8")
        for name in ("main.cf", "master.cf"):
            (self.config_dir / name).chmod(0o644)

    def _master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def _run(
        self, command: str, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [find_postfix(command), "-c", str(self.config_dir), *args]
        # TZ reaches every daemon (import_environment): the maillog is written in UTC.
        env = {**os.environ, "TZ": "UTC"}
        return self._command(argv, env, check=check, timeout=timeout)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie waiting for its reaper counts as gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return False
    return fields[0] != "Z"
