"""Hostile-input guards in front of the report parser: what a report may cost.

Reports come from anyone who can send us mail, so before parsedmarc sees a byte:

* compressed data (gzip, zip) is expanded in steps and refused past
  ``max_bytes`` (a zip bomb never reaches memory);
* XML with a DOCTYPE or an ENTITY declaration is refused: DMARC reports never carry
  one, and a DTD is how entity expansion ("billion laughs") and attribute-default
  amplification get in, whatever the parser's own settings;
* text that is not UTF-8 is decoded with U+FFFD where it broke, and said so.

Every refusal is a :class:`Refused` with a bounded ``reason`` (a metric label) and a
``detail`` for the log.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from email import message_from_bytes, policy
from email.message import Message

__all__ = [
    "REASONS",
    "Refused",
    "check_xml",
    "decode_text",
    "email_attachments",
    "expand",
]

#: Every reason a report is refused for (the ``reason`` label of the refusal counter).
REASONS = frozenset({
    "empty", "too_large", "decompression_bomb", "bad_archive", "doctype", "not_a_report",
    "invalid_report", "foreign_domain", "unreadable",
})  # fmt: skip

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
_CHUNK = 1 << 16
#: A DOCTYPE or an entity declaration anywhere (also after comments or a BOM).
_DTD = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY|ATTLIST|ELEMENT)", re.I)
#: A DTD that can declare something: an internal subset or a declaration.
_SUBSET = re.compile(rb"<!\s*DOCTYPE[^>\[]*\[|<!\s*(?:ENTITY|ATTLIST|ELEMENT)", re.I)
_MARKUP = re.compile(rb"(?:\xef\xbb\xbf)?\s*<")
_DTD_UTF16 = re.compile("<!\\s*(?:DOCTYPE|ENTITY)".encode("utf-16-le"), re.I)


class Refused(Exception):
    """A report that is not read: ``reason`` from :data:`REASONS`, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    """One gzip member (and any that follow), expanded at most to ``max_bytes``."""
    out: list[bytes] = []
    size = 0
    rest = data
    while rest:
        unzip = zlib.decompressobj(zlib.MAX_WBITS | 16)
        pending = rest
        while True:
            try:
                part = unzip.decompress(pending, max(1, min(_CHUNK, max_bytes + 1 - size)))
            except zlib.error as exc:
                raise Refused("bad_archive", f"gzip data is corrupt: {exc}") from None
            size += len(part)
            if size > max_bytes:
                raise Refused("decompression_bomb",
                              f"gzip data expands past {max_bytes:,} bytes")  # fmt: skip
            out.append(part)
            pending = unzip.unconsumed_tail
            if unzip.eof or (not pending and not part):
                break
        if not unzip.eof:
            raise Refused("bad_archive", "gzip data is truncated")
        rest = unzip.unused_data
        if rest[:2] != GZIP_MAGIC:  # trailing garbage after the last member
            break
    return b"".join(out)


def _unzip(data: bytes, max_bytes: int) -> bytes:
    """The first file of a zip archive (reports hold one), read at most to ``max_bytes``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if not infos:
            raise Refused("bad_archive", "zip archive holds no file")
        info = infos[0]
        if info.file_size > max_bytes:  # the declared size; the read below checks the real one
            raise Refused("decompression_bomb",
                          f"zip member {info.filename!r} declares {info.file_size:,} bytes, "
                          f"over {max_bytes:,}")  # fmt: skip
        with archive.open(info) as member:
            content = member.read(max_bytes + 1)
    except Refused:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError,
            RuntimeError) as exc:  # fmt: skip
        raise Refused("bad_archive", f"zip archive unreadable: {exc}") from None
    if len(content) > max_bytes:
        raise Refused("decompression_bomb", f"zip member expands past {max_bytes:,} bytes")
    return content


def expand(data: bytes, max_bytes: int) -> bytes:
    """``data`` uncompressed (gzip or zip, recognised by their magic bytes), capped.

    One level only: a report is compressed once; an archive inside an archive is not
    a report.
    """
    if data.startswith(GZIP_MAGIC):
        return _gunzip(data, max_bytes)
    if data.startswith(ZIP_MAGIC):
        return _unzip(data, max_bytes)
    return data


def check_xml(data: bytes, *, strict: bool = True) -> None:
    """Refuse XML that declares a DTD (DOCTYPE, ENTITY ...): no entity can expand.

    Not ``strict`` (the parts of an email, where an HTML sample may say
    ``<!DOCTYPE html>``): only a DTD that can declare something is refused.
    """
    if not strict:
        if _SUBSET.search(data):
            raise Refused("doctype", "a part of the email declares a DTD with entities or "
                          "an internal subset (entity expansion)")  # fmt: skip
        return
    if _DTD.search(data) or _DTD_UTF16.search(data):
        raise Refused("doctype", "the XML declares a DOCTYPE or entities, which DMARC "
                      "reports never do (entity expansion)")  # fmt: skip


def decode_text(data: bytes) -> tuple[str, str | None]:
    """``data`` as text, and a note when it was not valid UTF-8 (bad bytes replaced)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        note = f"invalid UTF-8 at byte {exc.start}: replaced with U+FFFD"
        return data.decode("utf-8", "replace"), note


def email_attachments(data: bytes, max_bytes: int) -> list[bytes]:
    """The decoded, expanded leaf parts of an email, each checked like a report file.

    Run before parsedmarc reads the email, so that what it would decompress or parse
    has passed the same caps and DTD check as a report file.
    """
    message: Message = message_from_bytes(data, policy=policy.compat32)
    parts: list[bytes] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            continue
        content = expand(payload, max_bytes)
        if _MARKUP.match(content):  # parsedmarc reads any part starting with "<" as XML
            check_xml(content, strict=False)
        parts.append(content)
    return parts
