"""What the private MTAs of the tests share: waiting for SMTP, reading and waiting on the
log, running the MTA's own commands, and the directory permissions their daemons need.

A subclass starts and stops its MTA and says what its log is called::

    class PostfixInstance(MtaInstance):
        name = "Postfix"
        log_name = "maillog"

        def start(self, timeout: float = 30.0) -> Self:
            ...  # write the configuration, start the master
            self._await_smtp(timeout)
            return self
"""

from __future__ import annotations

import shutil
import smtplib
import stat
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self, TypeVar

__all__ = ["MtaInstance", "let_others_traverse", "private_root"]

T = TypeVar("T")


def let_others_traverse(directory: Path) -> None:
    """Add search permission for others to ``directory`` and every parent.

    pytest's and mkdtemp()'s directories are 0700, and the MTA's daemons drop root (user
    ``postfix`` or ``Debian-exim``) yet must reach the spool and log directories inside.
    """
    for path in [directory, *directory.parents]:
        mode = stat.S_IMODE(path.stat().st_mode)
        wanted = mode | stat.S_IXGRP | stat.S_IXOTH
        if wanted != mode:
            path.chmod(wanted)


def private_root(name: str) -> Path:
    """A new directory of one MTA instance's own, directly under the system's temp directory.

    The MTA's daemons drop root, so every parent of their spool and log must stay
    searchable while they run.  Under pytest's temporary directories that is not in
    this run's hands: another pytest run as root resets ``/tmp/pytest-of-root`` to 0700
    (and prunes old runs), and the daemons fail with ``Permission denied``.  No other run
    touches this directory; :meth:`MtaInstance._release_root` removes it.
    """
    return Path(tempfile.mkdtemp(prefix=f"mailmon-{name.lower()}-"))


class MtaInstance(ABC):
    """A private MTA on ``127.0.0.1:port`` that writes its log to ``log_file``."""

    #: The MTA's name in error messages.
    name: ClassVar[str]
    #: What the MTA calls its log, in error messages.
    log_name: ClassVar[str]
    #: How long :meth:`wait_for_log` waits unless told otherwise.
    log_timeout: ClassVar[float] = 30.0

    port: int
    log_file: Path
    #: The instance's own directory while it runs (:func:`private_root`).
    root: Path
    #: Where the log is kept once the MTA has stopped (in the test's temporary directory).
    keep_dir: Path

    @abstractmethod
    def start(self, timeout: float = 30.0) -> Self:
        """Write the configuration, start the MTA and wait for its SMTP port."""

    @abstractmethod
    def stop(self, timeout: float = 15.0) -> None:
        """Stop the MTA and everything it started."""

    @abstractmethod
    def submit(self, message: EmailMessage, sender: str, recipients: Sequence[str]) -> str:
        """Send one message over SMTP to this instance; return the id the MTA gave it."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the log ---------------------------------------------------------------------

    def log_lines(self) -> list[str]:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_tail(self, lines: int = 40) -> str:
        tail = "\n".join(self.log_lines()[-lines:])
        return f"--- last lines of {self.log_file} ---\n{tail}"

    def wait_for_log(self, predicate: Callable[[list[str]], T], timeout: float | None = None) -> T:
        """Poll the log until ``predicate(lines)`` is truthy and return its value."""
        timeout = self.log_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self.log_lines())
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.log_name} did not satisfy {getattr(predicate, '__name__', predicate)} "
                    f"within {timeout:.0f} s\n{self.log_tail()}{self._queue_report()}"
                )
            time.sleep(0.05)

    # -- for subclasses --------------------------------------------------------------

    def _release_root(self) -> None:
        """After the MTA has stopped: keep its log in ``keep_dir``, remove its own directory.

        ``log_file`` then names the kept copy, so a test reads the log after :meth:`stop`.
        Safe to call twice.
        """
        if not self.root.exists():
            return
        if self.log_file.is_relative_to(self.root):
            kept = self.keep_dir / self.log_file.relative_to(self.root)
            kept.parent.mkdir(parents=True, exist_ok=True)
            if self.log_file.exists():
                shutil.copyfile(self.log_file, kept)
            self.log_file = kept
        shutil.rmtree(self.root, ignore_errors=True)

    def _queue_report(self) -> str:
        """What is still queued, for a timeout's message; empty when the MTA cannot say cheaply."""
        return ""

    def _exit_output(self) -> str | None:
        """The daemon's own output once it has exited, or None while it may still come up."""
        return None

    def _await_smtp(self, timeout: float) -> None:
        """Wait until the MTA answers SMTP on its port; fail early if its daemon has exited."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as client:
                    client.noop()
                return
            except OSError as error:
                output = self._exit_output()
                if output is not None or time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.name} did not answer on 127.0.0.1:{self.port}: {error}\n"
                        + (f"{output}\n" if output else "")
                        + self.log_tail()
                    ) from error
                time.sleep(0.05)

    def _command(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run one of the MTA's commands; with ``check``, a failure raises with the log's tail."""
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}\n"
                + self.log_tail()
            )
        return done
