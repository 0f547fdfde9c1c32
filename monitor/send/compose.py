"""Compose one tracked message: one copy per recipient, each with its own token.

The Message-ID is ours (``<time.random@domain>``, RFC 5322 §3.6.4); a reply takes
``In-Reply-To: <parent>`` and ``References:`` the parent's References (or its In-Reply-To)
followed by the parent (§3.6.4), and ``Re: <subject>`` when no subject is given.  The
envelope sender is the VERP return path ``bounces+<token>@...`` so an asynchronous bounce
joins its message, and the text ends with ``[ref:<token>]``, which replies quote back.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from monitor.collectors.mailbox.route import has_reply_prefix
from monitor.collectors.mailbox.tokens import token_for, with_token
from monitor.config import SendConfig
from monitor.errors import ConfigError
from monitor.model import domain_of

__all__ = ["Composed", "Copy", "Draft", "compose"]


@dataclass(frozen=True)
class Draft:
    """What to send."""

    to: tuple[str, ...]
    subject: str | None = None
    text: str = ""
    html: str | None = None
    from_address: str | None = None
    reply_to: str | None = None
    in_reply_to: str | None = None  # the Message-ID this answers
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Copy:
    """One recipient's copy: its envelope and bytes."""

    recipient: str
    sender: str  # the envelope sender (VERP return path)
    token: str
    data: bytes


@dataclass
class Composed:
    message_id: str
    subject: str
    headers: dict[str, str]  # the thread headers every copy has
    copies: list[Copy] = field(default_factory=list)


def compose(draft: Draft, settings: SendConfig, parent: dict[str, Any] | None = None,
            now: datetime | None = None) -> Composed:  # fmt: skip
    """The copies of ``draft``; ``parent`` is the thread message it answers (its
    ``message_id``, ``references``, ``in_reply_to``, ``subject``)."""
    sender = draft.from_address or settings.from_address
    if not sender or not domain_of(sender):
        raise ConfigError("send: no From address (give one, or set send.from_address)")
    if not draft.to:
        raise ValueError("send: no recipient")
    moment = now or datetime.now(UTC)
    domain = settings.message_id_domain or domain_of(sender)
    message_id = f"{int(time.time() * 1000):x}.{secrets.token_hex(8)}@{domain}"
    headers: dict[str, str] = {}
    subject = draft.subject or ""
    if draft.in_reply_to:
        parent_id = draft.in_reply_to.strip().strip("<>")
        chain = list((parent or {}).get("references") or [])
        if not chain and parent and parent.get("in_reply_to"):
            chain = [parent["in_reply_to"]]
        headers["In-Reply-To"] = f"<{parent_id}>"
        headers["References"] = " ".join(f"<{m}>" for m in [*chain, parent_id][-20:])
        if not subject:
            subject = (parent or {}).get("subject") or ""
        if not has_reply_prefix(subject):
            subject = f"Re: {subject}".strip()
    if not subject:
        raise ValueError("send: no subject")
    key = Path(settings.dkim_key_file).read_bytes() if settings.dkim_key_file else None
    out = Composed(message_id, subject, {"Message-ID": f"<{message_id}>", **headers})
    for rcpt in dict.fromkeys(draft.to):
        token = token_for(message_id, rcpt)
        m = EmailMessage()
        m["From"] = sender
        m["To"] = rcpt
        m["Subject"] = subject
        m["Date"] = format_datetime(moment)
        m["Message-ID"] = f"<{message_id}>"
        for name, value in headers.items():
            m[name] = value
        if draft.reply_to:
            m["Reply-To"] = draft.reply_to
        unsubscribe = []
        if settings.list_unsubscribe_url:
            unsubscribe.append(f"<{settings.list_unsubscribe_url.replace('{token}', token)}>")
        if settings.list_unsubscribe_mailto:
            unsubscribe.append(f"<mailto:{settings.list_unsubscribe_mailto}?subject={token}>")
        if unsubscribe:
            m["List-Unsubscribe"] = ", ".join(unsubscribe)
            if settings.one_click and settings.list_unsubscribe_url:
                m["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
        m.set_content(f"{draft.text.rstrip()}\n\n[ref:{token}]\n")
        if draft.html:
            m.add_alternative(draft.html, subtype="html")
        data = m.as_bytes()
        if key is not None:
            data = _signed(data, settings, key)
        envelope = with_token(settings.return_path, token) if settings.return_path else sender
        out.copies.append(Copy(rcpt, envelope, token, data))
    return out


def _signed(data: bytes, settings: SendConfig, key: bytes) -> bytes:
    import dkim

    if not settings.dkim_selector or not settings.dkim_domain:
        raise ConfigError("send: dkim_key_file needs dkim_selector and dkim_domain")
    names = [b"from", b"to", b"subject", b"date", b"message-id", b"in-reply-to",
             b"references", b"list-unsubscribe", b"list-unsubscribe-post", b"reply-to"]
    present = [n for n in names if f"\n{n.decode()}:".encode() in b"\n" + data.lower()]
    signature = dkim.sign(data, settings.dkim_selector.encode(), settings.dkim_domain.encode(),
                          key, include_headers=present)  # fmt: skip
    return bytes(signature) + data
