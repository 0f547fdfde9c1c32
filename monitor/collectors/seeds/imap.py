"""Reading one seed mailbox over IMAP (imapclient) without changing anything in it.

Folders are selected read-only (``EXAMINE``) and messages fetched with ``BODY.PEEK``, so
no flag changes (no ``\\Seen``).  The spam folder is the one LIST flags ``\\Junk``
(RFC 6154 SPECIAL-USE), else the first of the names providers use; Trash likewise by
``\\Trash``.  A probe is matched by its token header first, then by its Message-ID (and,
on Gmail, ``X-GM-RAW rfc822msgid:``), and the copy's own headers must carry the same
token or Message-ID; never the subject.  On Gmail (``X-GM-EXT-1``) a probe in the inbox
gets its tab from its ``X-GM-LABELS`` category label, else from ``X-GM-RAW category:``.

Every failure (connection, TLS, login, timeout, a folder that is not there) is an
:class:`ImapFailure` with a short reason that never holds the secret.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from monitor.collectors.seeds.headers import (
    PROBE_HEADER,
    TABS,
    parse_headers,
    tab_of_labels,
)
from monitor.collectors.seeds.settings import SeedConfig
from monitor.model import utc

__all__ = ["JUNK_NAMES", "TRASH_NAMES", "Found", "ImapFailure", "SeedMailbox"]

log = logging.getLogger(__name__)

#: Spam folder names, tried in order when no folder is flagged ``\\Junk``.
JUNK_NAMES = (
    "[Gmail]/Spam", "[Google Mail]/Spam", "Junk", "Junk Email", "Junk E-mail", "Junk Mail",
    "Bulk", "Bulk Mail", "Spam", "Spamverdacht", "Junk-E-Mail", "Unerwünscht",
    "Courrier indésirable", "Indésirables", "Posta indesiderata", "Correo no deseado",
    "INBOX.Junk", "INBOX.Spam", "INBOX/Junk", "INBOX/Spam",
)  # fmt: skip
#: Trash folder names, tried in order when no folder is flagged ``\\Trash``.
TRASH_NAMES = (
    "[Gmail]/Trash", "[Google Mail]/Trash", "[Gmail]/Bin", "[Google Mail]/Bin", "Trash",
    "Deleted Items", "Deleted Messages", "Deleted", "Bin", "Papierkorb", "Gelöscht",
    "Corbeille", "INBOX.Trash", "INBOX/Trash",
)  # fmt: skip

_FETCH = [b"BODY.PEEK[HEADER]", b"INTERNALDATE"]


class ImapFailure(Exception):
    """The mailbox could not be read; ``reason`` says why (no secret in it).

    ``final``: trying again cannot help (the login was refused, the spam folder is not
    there), so a run stops polling the mailbox.
    """

    def __init__(self, reason: str, *, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final


@dataclass(frozen=True, slots=True)
class Found:
    """A probe's copy in the mailbox."""

    placement: str  # inbox, tab:<name>, spam, trash
    folder: str
    uid: int
    internaldate: datetime | None
    header: bytes


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SeedMailbox:
    """One connection to one seed mailbox (a context manager)::

        with SeedMailbox(seed, secret, timeout=30) as mailbox:
            found = mailbox.find({token: message_id})
    """

    def __init__(self, seed: SeedConfig, secret: str, *, timeout: float = 30.0) -> None:
        self.seed = seed
        self._secret = secret
        self.timeout = timeout
        self._client: Any = None
        self.gmail = False

    # -- connection ------------------------------------------------------------------

    def __enter__(self) -> Self:
        from imapclient import IMAPClient
        from imapclient.exceptions import LoginError

        seed = self.seed
        context = ssl.create_default_context(cafile=seed.ca_file)
        try:
            client = IMAPClient(seed.imap_host, port=seed.port,
                                ssl=seed.imap_security == "tls",
                                ssl_context=context, timeout=self.timeout)  # fmt: skip
        except (OSError, TimeoutError) as exc:
            raise ImapFailure(f"connect {seed.imap_host}:{seed.port}: {_reason(exc)}") from None
        except Exception as exc:
            raise ImapFailure(f"connect {seed.imap_host}:{seed.port}: {_reason(exc)}") from None
        client.normalise_times = False  # INTERNALDATE with its zone, not naive local time
        self._client = client
        try:
            if seed.imap_security == "starttls":
                client.starttls(context)
            if seed.auth == "xoauth2":
                client.oauth2_login(seed.login, self._secret)
            else:
                client.login(seed.login, self._secret)
            self.gmail = b"X-GM-EXT-1" in client.capabilities()
        except LoginError as exc:
            self._close()
            raise ImapFailure(f"login refused for {seed.login}: {_reason(exc)}",
                              final=True) from None  # fmt: skip
        except Exception as exc:
            self._close()
            raise ImapFailure(f"{seed.imap_host}: {_reason(exc)}") from None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            try:
                client.shutdown()
            except Exception:
                log.debug("closing the IMAP connection to %s failed", self.seed.imap_host)

    # -- folders ---------------------------------------------------------------------

    def folders(self) -> list[tuple[str, str]]:
        """(placement, folder) to search: INBOX, the spam folder, Trash if there is one."""
        listed = self._call("LIST", lambda c: c.list_folders())
        names = {str(name): tuple(flags) for flags, _, name in listed}
        junk = self.seed.junk_folder
        if junk is not None:
            if junk not in names:
                raise ImapFailure(f"configured junk_folder {junk!r} does not exist", final=True)
        else:
            junk = _special(names, b"\\Junk", JUNK_NAMES)
            if junk is None:
                raise ImapFailure("no spam folder: none flagged \\Junk, none of the known names",
                                  final=True)  # fmt: skip
        out = [("inbox", "INBOX"), ("spam", junk)]
        trash = _special(names, b"\\Trash", TRASH_NAMES)
        if trash is not None and trash != junk:
            out.append(("trash", trash))
        return out

    # -- finding ---------------------------------------------------------------------

    def find(self, wanted: Mapping[str, str]) -> dict[str, Found]:
        """Where each probe (token -> Message-ID) is now; probes not found are left out."""
        found: dict[str, Found] = {}
        for placement, folder in self.folders():
            left = {t: m for t, m in wanted.items() if t not in found}
            if not left:
                break
            self._call(f"EXAMINE {folder}", lambda c, f=folder: c.select_folder(f, readonly=True))
            for token, message_id in left.items():
                hit = self._match(token, message_id)
                if hit is None:
                    continue
                uid, data = hit
                where = placement
                if placement == "inbox" and self.gmail:
                    where = self._gmail_tab(uid, data)
                when = data.get(b"INTERNALDATE")
                found[token] = Found(
                    where, folder, uid, utc(when) if isinstance(when, datetime) else None,
                    bytes(data.get(b"BODY[HEADER]") or b""),
                )  # fmt: skip
        return found

    def _match(self, token: str, message_id: str) -> tuple[int, dict[bytes, Any]] | None:
        searches: list[list[Any]] = [["HEADER", PROBE_HEADER, token],
                                     ["HEADER", "Message-ID", message_id]]  # fmt: skip
        if self.gmail:
            searches.append(["X-GM-RAW", f"rfc822msgid:{message_id}"])
        for criteria in searches:
            uids = self._call("SEARCH", lambda c, q=criteria: c.search(q))
            if not uids:
                continue
            items = [*_FETCH, b"X-GM-LABELS"] if self.gmail else _FETCH
            ordered = sorted(uids)
            data = self._call("FETCH", lambda c, u=ordered, i=items: c.fetch(u, i))
            for uid in sorted(data):
                header = parse_headers(bytes(data[uid].get(b"BODY[HEADER]") or b""))
                copy_token = " ".join(str(header.get(PROBE_HEADER, "")).split())
                copy_id = " ".join(str(header.get("Message-ID", "")).split()).strip("<>")
                # A substring search can hit another message: the copy must be this probe.
                if copy_token == token or (not copy_token and copy_id == message_id):
                    return uid, data[uid]
        return None

    def _gmail_tab(self, uid: int, data: Mapping[bytes, Any]) -> str:
        tab = tab_of_labels(data.get(b"X-GM-LABELS") or ())
        if tab is None:
            for name in TABS:
                hits = self._call("SEARCH", lambda c, n=name: c.search(
                    ["UID", str(uid), "X-GM-RAW", f"category:{n}"]))  # fmt: skip
                if hits:
                    tab = name
                    break
        return "inbox" if tab in (None, "primary") else f"tab:{tab}"

    # -- deleting --------------------------------------------------------------------

    def delete(self, found: Mapping[str, Found]) -> int:
        """Delete exactly these probe copies (UID EXPUNGE, RFC 4315); returns how many.

        Without UIDPLUS a plain EXPUNGE would also remove other messages marked deleted,
        so nothing is deleted then (logged).
        """
        if not found:
            return 0
        if b"UIDPLUS" not in self._call("CAPABILITY", lambda c: c.capabilities()):
            log.warning("seed %s: the server lacks UIDPLUS; probes left in place",
                        self.seed.address)  # fmt: skip
            return 0
        by_folder: dict[str, list[int]] = {}
        for copy in found.values():
            by_folder.setdefault(copy.folder, []).append(copy.uid)
        deleted = 0
        for folder, uids in by_folder.items():
            self._call(f"SELECT {folder}", lambda c, f=folder: c.select_folder(f))
            self._call("STORE", lambda c, u=uids: c.delete_messages(u))
            self._call("UID EXPUNGE", lambda c, u=uids: c.uid_expunge(u))
            deleted += len(uids)
        return deleted

    def _call(self, what: str, call: Any) -> Any:
        try:
            return call(self._client)
        except TimeoutError as exc:
            raise ImapFailure(f"{what}: timed out ({_reason(exc)})") from None
        except Exception as exc:
            raise ImapFailure(f"{what}: {_reason(exc)}") from None


def _special(
    names: Mapping[str, tuple[bytes, ...]], flag: bytes, fallbacks: tuple[str, ...]
) -> str | None:
    """The folder LIST flags with ``flag``, else the first fallback name present."""
    for name, flags in names.items():
        if any(f.lower() == flag.lower() for f in flags):
            return name
    lowered = {name.lower(): name for name in names}
    for candidate in fallbacks:
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None
