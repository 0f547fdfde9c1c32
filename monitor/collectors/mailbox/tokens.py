"""Tracking tokens: the short name of one outbound message for one recipient.

A token is ``mm`` + 16 hex digits of a digest of the Message-ID and the recipient, so it
is the same wherever it is computed.  It travels in three places, read in this order:

- a VERP / plus-addressed return path or reply address: ``bounces+mm0123456789abcdef@``,
  ``reply+mm0123456789abcdef@`` (RFC 5233 subaddress; the server delivers it to
  ``bounces@`` / ``reply@``, the ``Delivered-To`` / ``X-Original-To`` keep the detail);
- a quoted reference in the body a reply quotes back (``[ref:mm0123456789abcdef]``).

The classic VERP form that names the recipient (``bounces+alice=example.com@``) is
decoded by :func:`monitor.collectors.mail.original.verp_recipient`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from monitor.collectors.mail.mime import ADDRESS_RE

__all__ = ["TOKEN_RE", "address_token", "text_token", "token_for", "with_token"]

TOKEN_RE = re.compile(r"(?<![0-9A-Za-z])mm[0-9a-f]{16}(?![0-9A-Za-z])")


def token_for(message_id: str, recipient: str | None = None) -> str:
    """The token of ``message_id`` (angle brackets ignored) sent to ``recipient``."""
    text = f"{message_id.strip().strip('<>')}\x1f{(recipient or '').strip().lower()}"
    return "mm" + hashlib.blake2b(text.encode("utf-8", "surrogateescape"),
                                  digest_size=8).hexdigest()  # fmt: skip


def with_token(address: str, token: str) -> str:
    """``bounces@example.net`` -> ``bounces+<token>@example.net``."""
    local, at, domain = address.rpartition("@")
    if not at:
        raise ValueError(f"not an address: {address!r}")
    return f"{local.partition('+')[0]}+{token}@{domain}"


def address_token(values: Iterable[str | None]) -> str | None:
    """The token in the subaddress of the first address of ``values`` that has one."""
    for value in values:
        if not value:
            continue
        for found in ADDRESS_RE.finditer(value):
            local = found.group(0).rpartition("@")[0]
            _, plus, detail = local.partition("+")
            if plus and TOKEN_RE.fullmatch(detail.lower()):
                return detail.lower()
    return None


def text_token(text: str) -> str | None:
    """The first token quoted in ``text``."""
    found = TOKEN_RE.search(text)
    return found.group(0) if found else None
