"""An IMAP mailbox of reports -> the driver: the ``dmarc_imap`` job and ``mailmon dmarc fetch``.

    mailbox = ReportMailbox(reports_for(config, driver), config.dmarc.imap)
    summary = mailbox.run()          # a dict: messages, records stored, refused, moved

A run connects (implicit TLS, STARTTLS, or plain text on a trusted network), logs in
and reads each message of the folder with ``BODY.PEEK[]`` (never marking it seen), one
at a time, so memory stays flat however many wait.  Each message is one report, read
by the same code as a ``.eml`` file.  A batch of messages is committed with a UID
checkpoint, then moved: every report stored to the archive folder, refused ones to the
failed folder (with a ``mailmon-refused-REASON`` keyword where the server keeps
keywords).  A crash between the commit and the move reads those messages again; the
store drops what it already has.  A message larger than ``max_report_bytes`` is refused
(``too_large``) from its size, without fetching it.

Read-only mode opens the folder with EXAMINE: no flag is set, nothing is moved or
created.  The checkpoint (UIDVALIDITY and the last UID read) skips what was read; a new
UIDVALIDITY reads the folder again, and the report dedupe keeps it from counting twice.

One bad message never stops a run: it is refused with its reason
(``mailmon_events_rejected_total{source="dmarc",reason}``), logged, and moved aside.  A
mailbox that cannot be reached, refuses the login or breaks mid-run raises
:class:`ImapError` (reason ``connect``, ``tls``, ``auth``, ``folder`` or ``fetch``,
counted in ``mailmon_dmarc_imap_errors_total``); what was read before is committed,
nothing unread is moved.  A failed move (``move``) is counted and logged, and the run
goes on: the messages stay and are read again.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import Counter
from contextlib import suppress
from typing import Any, NoReturn

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from monitor.collectors.reports.files import ReportIngest, RunSummary
from monitor.collectors.reports.records import ReportMetrics, report_metrics
from monitor.config import DmarcImapConfig
from monitor.errors import ConfigError, InputError

__all__ = ["IMAP_ERRORS", "IMAP_OUTCOMES", "ImapError", "ReportMailbox"]

log = logging.getLogger(__name__)
# Its debug lines hold whole messages; its LOGIN lines are redacted, ours never name it.
logging.getLogger("imapclient").setLevel(logging.INFO)

#: The ``reason`` of ``mailmon_dmarc_imap_errors_total``.
IMAP_ERRORS = frozenset({"connect", "tls", "auth", "folder", "fetch", "move"})
#: The ``outcome`` of ``mailmon_dmarc_imap_messages_total``: moved to the archive or the
#: failed folder, or left where it was (read-only mode, or a move that failed).
IMAP_OUTCOMES = frozenset({"archived", "failed", "kept"})
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class ImapError(InputError):
    """The mailbox cannot be read: ``reason`` from :data:`IMAP_ERRORS`, the message says why."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in IMAP_ERRORS, reason
        super().__init__(detail)
        self.reason = reason


class ReportMailbox:
    """Reads the reports of one IMAP folder into a :class:`ReportIngest`, then files them."""

    def __init__(
        self, reports: ReportIngest, settings: DmarcImapConfig, *, read_only: bool | None = None
    ) -> None:
        self.reports = reports
        self.settings = settings
        self.read_only = settings.read_only if read_only is None else read_only
        s = settings
        self.where = f"imap://{s.user}@{s.host}:{s.effective_port}"
        self.key = f"dmarc:imap:{s.user}@{s.host}:{s.effective_port}/{s.folder}"
        metrics = reports.driver.metrics
        self._metrics: ReportMetrics | None = (
            report_metrics(metrics.registry) if metrics is not None else None
        )
        self.messages = 0
        self.moved: Counter[str] = Counter()
        self.failed_messages: list[str] = []

    def run(self) -> dict[str, Any]:
        """Read every new message once; this run's summary (raises :class:`ImapError`)."""
        started = time.monotonic()
        self.reports.summary = RunSummary()
        self.messages = 0
        self.moved.clear()
        self.failed_messages = []
        password = self.settings.password()
        client = self._connect(password)
        try:
            self._read(client)
        finally:
            with suppress(IMAPClientError, OSError):  # gone already: nothing pends on it
                client.logout()
            self.reports.summary.seconds += time.monotonic() - started
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        out = self.reports.summary.to_dict()
        del out["files"], out["failed_files"], out["moved"]
        return {"mailbox": f"{self.where}/{self.settings.folder}", "read_only": self.read_only,
                "messages": self.messages, **out, "moved": dict(self.moved),
                "failed_messages": self.failed_messages}  # fmt: skip

    # -- the connection ----------------------------------------------------------

    def _fail(self, reason: str, detail: str) -> NoReturn:
        if self._metrics is not None:
            self._metrics.imap_errors.labels(reason).inc()
        log.error("DMARC mailbox %s (%s): %s", self.where, reason, detail)
        raise ImapError(reason, f"DMARC mailbox {self.where}: {detail}")

    def _connect(self, password: str) -> IMAPClient:
        s = self.settings
        context = None
        if s.tls != "none":
            try:
                context = ssl.create_default_context(cafile=s.ca_file)
            except OSError as exc:
                raise ConfigError(f"dmarc.imap.ca_file {s.ca_file}: "
                                  f"{exc.strerror or exc}") from None  # fmt: skip
        elif s.host not in _LOOPBACK:
            log.warning("DMARC mailbox %s: plain text (tls = \"none\"): the password crosses "
                        "the network unencrypted", self.where)  # fmt: skip
        try:
            client = IMAPClient(s.host, port=s.effective_port, ssl=s.tls == "tls",
                                ssl_context=context, timeout=s.timeout_seconds)  # fmt: skip
        except ssl.SSLError as exc:
            self._fail("tls", f"TLS handshake failed: {exc}")
        except (OSError, IMAPClientError) as exc:
            self._fail("connect", f"cannot connect: {_why(exc)}")
        try:
            if s.tls == "starttls":
                try:
                    client.starttls(context)
                except (ssl.SSLError, IMAPClientError) as exc:
                    self._fail("tls", f"STARTTLS failed: {exc}")
            try:
                client.login(s.user, password)
            except LoginError as exc:
                self._fail("auth", f"the server refused the login of {s.user!r}: {_why(exc)}")
        except (OSError, IMAPClientError) as exc:
            _close(client)
            self._fail("connect", f"connection lost before login: {_why(exc)}")
        except ImapError:
            _close(client)
            raise
        return client

    # -- reading ---------------------------------------------------------------

    def _read(self, client: IMAPClient) -> None:
        s = self.settings
        try:
            if not self.read_only:
                for name in (s.archive_folder, s.failed_folder):
                    if not client.folder_exists(name):
                        client.create_folder(name)
                        log.info("DMARC mailbox %s: created folder %r", self.where, name)
            info = client.select_folder(s.folder, readonly=self.read_only)
        except (IMAPClientError, OSError) as exc:
            self._fail("folder", f"cannot open folder {s.folder!r} (or create "
                       f"{s.archive_folder!r}, {s.failed_folder!r}): {_why(exc)}")  # fmt: skip
        validity = int(info[b"UIDVALIDITY"])
        keywords = b"\\*" in info.get(b"PERMANENTFLAGS", ())
        after = self._after(validity) if self.read_only else 0
        try:
            found = client.search(["UID", f"{after + 1}:*"] if after else ["ALL"])
        except (IMAPClientError, OSError) as exc:
            self._fail("fetch", f"cannot search folder {s.folder!r}: {_why(exc)}")
        uids = sorted(int(u) for u in found if int(u) > after)  # "N:*" always names the last
        for start in range(0, len(uids), s.batch_messages):
            self._batch(client, uids[start : start + s.batch_messages], validity, keywords)
            log.debug("DMARC mailbox %s: %d of %d messages read", self.where,
                      min(start + s.batch_messages, len(uids)), len(uids))  # fmt: skip

    def _after(self, validity: int) -> int:
        """The last UID read in read-only mode (0: read the folder from the start)."""
        state = self.reports.driver.pipeline.store.checkpoint(self.key) or {}
        if state.get("uidvalidity") == validity:
            return int(state.get("uid") or 0)
        if state:
            log.info("DMARC mailbox %s: folder %r has a new UIDVALIDITY: read again (the "
                     "reports already stored count once)", self.where, self.settings.folder)
        return 0

    def _batch(self, client: IMAPClient, batch: list[int], validity: int, keywords: bool) -> None:
        s, reports = self.settings, self.reports
        limit = reports.max_bytes
        done: list[int] = []
        failed: dict[str, list[int]] = {}
        last: int | None = None
        try:
            sizes = client.fetch(batch, ["RFC822.SIZE"])
            for uid in batch:
                if uid not in sizes:
                    continue  # expunged by another client meanwhile
                ref = f"{self.where}/{s.folder};UIDVALIDITY={validity}/;UID={uid}"
                size = int(sizes[uid].get(b"RFC822.SIZE") or 0)
                if size > limit:
                    result = reports.refuse(ref, "too_large", f"a message of {size:,} bytes, "
                                            f"over {limit:,}: not fetched")  # fmt: skip
                else:
                    body = client.fetch([uid], ["BODY.PEEK[]"]).get(uid, {}).get(b"BODY[]")
                    if body is None:
                        continue  # expunged by another client meanwhile
                    result = reports.read_report(bytes(body), ref)
                self.messages += 1
                last = uid
                if result.ok:
                    done.append(uid)
                else:
                    failed.setdefault(next(iter(result.refused)), []).append(uid)
                    self.failed_messages.append(ref)
        except (IMAPClientError, OSError) as exc:
            self._commit(validity, last)  # what was read is stored; nothing is moved
            self._fail("fetch", f"reading folder {s.folder!r} failed after UID {last or '-'}: "
                       f"{_why(exc)}; the rest is read next run")  # fmt: skip
        self._commit(validity, last)
        if self.read_only:
            self._count("kept", len(done) + sum(len(u) for u in failed.values()))
            return
        self._move(client, done, s.archive_folder, "archived")
        for reason, uids in failed.items():
            if keywords:
                try:
                    client.add_flags(uids, [f"mailmon-refused-{reason}".encode()])
                except (IMAPClientError, OSError) as exc:
                    log.warning("DMARC mailbox %s: cannot mark refused messages: %s",
                                self.where, _why(exc))  # fmt: skip
            self._move(client, uids, s.failed_folder, "failed")

    def _commit(self, validity: int, last: int | None) -> None:
        self.reports.commit(None if last is None else
                            (self.key, {"uidvalidity": validity, "uid": last}))  # fmt: skip

    def _move(self, client: IMAPClient, uids: list[int], folder: str, outcome: str) -> None:
        if not uids:
            return
        try:
            capabilities = client.capabilities()
            if b"MOVE" in capabilities:
                client.move(uids, folder)
            else:  # RFC 3501: copy, mark deleted, expunge (only these with UIDPLUS)
                client.copy(uids, folder)
                client.delete_messages(uids)
                if b"UIDPLUS" in capabilities:
                    client.uid_expunge(uids)
                else:
                    client.expunge()
        except (IMAPClientError, OSError) as exc:
            if self._metrics is not None:
                self._metrics.imap_errors.labels("move").inc()
            log.error("DMARC mailbox %s (move): cannot move %d messages to %r: %s; their "
                      "reports are stored, they are read again next run", self.where, len(uids),
                      folder, _why(exc))  # fmt: skip
            self._count("kept", len(uids))
            return
        self._count(outcome, len(uids))

    def _count(self, outcome: str, n: int) -> None:
        if not n:
            return
        self.moved[outcome] += n
        if self._metrics is not None:
            self._metrics.imap_messages.labels(outcome).inc(n)


def _why(exc: BaseException) -> str:
    """An exception as one line: its text (servers answer in bytes), else its type."""
    text = str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text or type(exc).__name__


def _close(client: IMAPClient) -> None:
    with suppress(IMAPClientError, OSError):
        client.shutdown()
