"""The IMAP side of the inbound collector: read new messages once each, then wait for more.

    reader = MailboxReader(settings, driver, source)
    reader.poll()                 # every message after the checkpoint, committed in chunks
    reader.watch(stop_event)      # poll, then IMAP IDLE (RFC 2177) or sleep, reconnecting

Exactly once across restarts: the checkpoint ``mailbox:NAME:FOLDER`` holds the folder's
UIDVALIDITY and the last UID read (RFC 3501 section 2.3.1.1), written in the same
transaction as the events and records of the messages up to it.  A changed UIDVALIDITY
means the UIDs were reassigned: the folder is read again from the start, and the
deterministic ids of events and records keep what was stored before from being stored
or counted twice.  A message is moved to ``processed_folder`` only after its chunk is
committed; a crash in between leaves it in place, behind the checkpoint.

Memory is bounded: at most ``max_message_bytes`` of a message is fetched (a partial
``BODY.PEEK[]<0.N>``; the record says it was cut) and a chunk holds at most a few
messages' worth of bytes.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imapclient import IMAPClient

from monitor.collectors.mailbox.source import InboundSource, Mail
from monitor.config import MailboxSettings
from monitor.driver import Driver
from monitor.model import utc

__all__ = ["MailboxReader", "PollResult", "checkpoint_key"]

log = logging.getLogger(__name__)

_CHUNK_MESSAGES = 50
_BACKOFF_MAX = 60.0


def checkpoint_key(settings: MailboxSettings) -> str:
    return f"mailbox:{settings.name}:{settings.folder}"


@dataclass
class PollResult:
    """What one pass read."""

    uidvalidity: int = 0
    rescan: bool = False  # UIDVALIDITY changed: read from the start
    messages: int = 0
    moved: int = 0
    last_uid: int = 0
    stored: int = 0  # new events stored
    categories: dict[str, int] = field(default_factory=dict)


def connect(settings: MailboxSettings) -> IMAPClient:
    """A logged-in client of ``settings``' server (the folder not selected yet)."""
    context = ssl.create_default_context()
    client = IMAPClient(settings.host, port=settings.port, ssl=settings.security == "tls",
                        ssl_context=context, timeout=settings.timeout_seconds)  # fmt: skip
    try:
        if settings.security == "starttls":
            client.starttls(context)
        client.normalise_times = False  # aware INTERNALDATEs
        client.login(settings.username, settings.password())
    except BaseException:
        _close(client)
        raise
    return client


class MailboxReader:
    """Reads one folder of one mailbox into ``driver`` through ``source``."""

    def __init__(
        self,
        settings: MailboxSettings,
        driver: Driver,
        source: InboundSource,
        *,
        connector: Callable[[MailboxSettings], IMAPClient] = connect,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.settings = settings
        self.driver = driver
        self.source = source
        self.connector = connector
        self.sleep = sleep
        self.key = checkpoint_key(settings)
        self.client: IMAPClient | None = None
        self.failures = 0  # connections lost or refused since the last good pass

    # -- one pass ----------------------------------------------------------------------

    def poll(self) -> PollResult:
        """Read every message after the checkpoint; raises what the server or network raised."""
        client = self._connected()
        selected = client.select_folder(self.settings.folder)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        store = self.driver.pipeline.store
        saved = store.checkpoint(self.key) or {}
        result = PollResult(uidvalidity=uidvalidity)
        last = int(saved.get("uid", 0))
        if saved and saved.get("uidvalidity") != uidvalidity:
            log.warning("mailbox %s: UIDVALIDITY of %s changed (%s -> %s): reading it again",
                        self.settings.name, self.settings.folder, saved.get("uidvalidity"),
                        uidvalidity)  # fmt: skip
            result.rescan, last = True, 0
        result.last_uid = last
        uids = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last)
        before = dict(self.source.categories)
        for chunk in self._chunks(client, uids):
            try:
                for uid, mail in chunk:
                    ref = f"imap:{self.settings.name}/{self.settings.folder};" \
                          f"UIDVALIDITY={uidvalidity}/;UID={uid}"  # fmt: skip
                    self.driver.feed(self.source, mail, ref)
                top = chunk[-1][0]
                fresh = self.driver.commit(self.source, checkpoint=(
                    self.key, {"uidvalidity": uidvalidity, "uid": top}))
            except BaseException:
                self.driver.discard(self.source)
                raise
            result.stored += len(fresh)
            result.messages += len(chunk)
            result.last_uid = top
            if self.settings.processed_folder:
                result.moved += self._move(client, [uid for uid, _ in chunk])
        if not uids and (not saved or result.rescan):  # remember the UIDVALIDITY seen
            self.driver.commit(self.source, checkpoint=(
                self.key, {"uidvalidity": uidvalidity, "uid": last}))
        result.categories = {k: v - before.get(k, 0) for k, v in self.source.categories.items()
                             if v - before.get(k, 0)}  # fmt: skip
        self.failures = 0
        return result

    def _chunks(self, client: IMAPClient, uids: list[int]) -> Iterator[list[tuple[int, Mail]]]:
        """The messages of ``uids`` in order, fetched a few at a time: one FETCH for the
        sizes of up to 50, one for the bodies of as many as fit in a budget of bytes."""
        cap = self.settings.max_message_bytes
        budget = max(cap, 8 << 20)
        for start in range(0, len(uids), _CHUNK_MESSAGES):
            part = uids[start : start + _CHUNK_MESSAGES]
            meta = client.fetch(part, ["RFC822.SIZE", "INTERNALDATE"])
            group: list[tuple[int, int, datetime | None]] = []
            held = 0
            for uid in part:
                info = meta.get(uid)
                if info is None:  # expunged meanwhile
                    continue
                size = int(info.get(b"RFC822.SIZE", 0))
                group.append((uid, size, _moment(info.get(b"INTERNALDATE"))))
                held += min(size, cap)
                if held >= budget:
                    yield self._bodies(client, group, cap)
                    group, held = [], 0
            if group:
                yield self._bodies(client, group, cap)

    def _bodies(self, client: IMAPClient, group: list[tuple[int, int, datetime | None]],
                cap: int) -> list[tuple[int, Mail]]:  # fmt: skip
        whole = [uid for uid, size, _ in group if size <= cap]
        got = client.fetch(whole, ["BODY.PEEK[]"]) if whole else {}
        out = []
        for uid, size, arrived in group:
            if size <= cap:
                data = got.get(uid, {}).get(b"BODY[]", b"")
                data = data if isinstance(data, bytes) else b""
            else:
                data = self._body(client, uid, cap)
            out.append((uid, Mail(data, arrived, size if size > len(data) else None)))
        return out

    def _body(self, client: IMAPClient, uid: int, cap: int) -> bytes:
        """The first ``cap`` bytes of a message too big to read whole."""
        got = client.fetch([uid], [f"BODY.PEEK[]<0.{cap}>"]).get(uid, {})
        data = got.get(b"BODY[]<0>", b"")
        return data if isinstance(data, bytes) else b""

    def _move(self, client: IMAPClient, uids: list[int]) -> int:
        folder = self.settings.processed_folder
        assert folder is not None
        if not client.folder_exists(folder):
            client.create_folder(folder)
        if client.has_capability("MOVE"):
            client.move(uids, folder)
        else:  # RFC 3501: copy, flag deleted, expunge those (UIDPLUS) or all flagged
            client.copy(uids, folder)
            client.add_flags(uids, [b"\\Deleted"])
            client.uid_expunge(uids) if client.has_capability("UIDPLUS") else client.expunge()
        return len(uids)

    # -- the loop ----------------------------------------------------------------------

    def watch(self, stop: threading.Event) -> None:
        """Poll, then wait (IDLE where offered, else ``poll_interval_seconds``), until
        ``stop``; a lost connection is made again with a growing pause, never losing its
        place (the checkpoint says where it is)."""
        while not stop.is_set():
            try:
                result = self.poll()
                if result.messages:
                    log.info("mailbox %s: %d messages read %s", self.settings.name,
                             result.messages, result.categories)  # fmt: skip
                self._wait(stop)
            except Exception as exc:  # the server, the network, the login: all retried
                self.failures += 1
                pause = min(_BACKOFF_MAX, 2.0 ** min(self.failures, 6))
                log.warning("mailbox %s: %s: %s; again in %.0f s", self.settings.name,
                            type(exc).__name__, exc, pause)  # fmt: skip
                self.close()
                stop.wait(pause)
        self.close()

    def _wait(self, stop: threading.Event) -> None:
        client = self.client
        interval = self.settings.poll_interval_seconds
        if client is None or not self.settings.idle or not client.has_capability("IDLE"):
            stop.wait(interval)
            return
        # IDLE returns on new mail (EXISTS) or the timeout; short slices so `stop` is seen.
        deadline = time.monotonic() + self.settings.idle_timeout_seconds
        client.idle()
        while not stop.is_set() and time.monotonic() < deadline:
            responses = client.idle_check(timeout=1)
            if any(r[:1] == (b"BYE",) for r in responses):
                # The server is closing (shutdown, kick); after its BYE, idle_check only
                # returns nothing, so the connection is made again.
                raise ConnectionError("the server said BYE")
            if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                break
        client.idle_done()

    def _connected(self) -> IMAPClient:
        if self.client is None:
            self.client = self.connector(self.settings)
        return self.client

    def close(self) -> None:
        if self.client is not None:
            _close(self.client)
            self.client = None


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # already gone; the socket is closed below either way
        try:
            client.shutdown()
        except Exception:
            log.debug("closing an IMAP connection failed", exc_info=True)


def _moment(value: Any) -> datetime | None:
    return utc(value) if isinstance(value, datetime) else None
