"""One report's bytes -> the parsed report, through parsedmarc, offline and guarded.

    parser = ReportParser(max_bytes=64 << 20)
    parsed = parser.parse(data)          # Parsed, or raises Refused(reason, detail)
    parsed.type                          # "aggregate", "failure" or "smtp_tls"

The guards of :mod:`monitor.collectors.reports.unpack` run first (decompression cap,
no DTD).  parsedmarc runs with ``offline=True`` and ``always_use_local_files=True``:
no download of its IP database, reverse-DNS map or suffix-list overrides, and no DNS
query (reverse DNS of source IPs is ``mailmon dmarc summary --resolve``'s, never
ingest's: it dominates other tools' ingest time).  Its time-span normalisation
(splitting a multi-day report's counts across days) is off: a row keeps the interval
and the count the reporter gave.  Its in-process "seen report ids" cache is never
consulted (it lives on the mailbox helpers we do not use); dedupe is the store's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal
from xml.parsers import expat

from monitor.collectors.mail.mailfiles import is_mail
from monitor.collectors.reports.unpack import (
    Refused,
    check_xml,
    decode_text,
    email_attachments,
    expand,
)

__all__ = ["DEFAULT_MAX_BYTES", "Parsed", "ReportParser"]

log = logging.getLogger(__name__)

#: Default of ``[dmarc] max_report_bytes``: the largest report, compressed or not (the
#: 2,286-row report of the corpus is 0.9 MB; Google's biggest run to a few MB).
DEFAULT_MAX_BYTES = 64 << 20

ReportType = Literal["aggregate", "failure", "smtp_tls"]


@dataclass
class Parsed:
    """A parsed report: its type, parsedmarc's dict, and what was recovered on the way."""

    type: ReportType
    report: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _parser_config() -> Any:
    from parsedmarc.config import ParserConfig

    return ParserConfig(
        offline=True,  # no DNS, no downloads
        always_use_local_files=True,  # the bundled IP database and maps
        normalize_timespan_threshold_hours=float(10**9),  # keep the reporter's interval
    )


class ReportParser:
    """Parses report bytes (XML, JSON, gzip, zip, one email) with the caps it was given."""

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        import parsedmarc  # imported here: its import costs a few hundred ms

        self.max_bytes = max_bytes
        self._pm = parsedmarc
        self._config = _parser_config()
        # Its per-record warnings are about the reporter's XML; they would repeat for each
        # of thousands of rows.  Ours say what was refused or recovered, once per report.
        logging.getLogger("parsedmarc").setLevel(logging.ERROR)

    def parse(self, data: bytes) -> Parsed:
        """The report in ``data``; raises :class:`Refused` with the reason it is not read."""
        if len(data) > self.max_bytes:
            raise Refused("too_large", f"over {self.max_bytes:,} bytes")
        data = expand(data, self.max_bytes)
        head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
        if not head:
            raise Refused("empty", "no content")
        if head == b"<":
            return self._aggregate(data)
        if head == b"{":
            return self._tls(data)
        if is_mail(data):
            return self._email(data)
        raise Refused("not_a_report", "neither XML, JSON, gzip, zip nor an email")

    def _aggregate(self, data: bytes) -> Parsed:
        check_xml(data)
        text, note = decode_text(data)
        notes = [note] if note else []
        malformed = _malformed(text)
        if malformed:
            notes.append(f"malformed XML ({malformed}): recovered what the parser could read")
        try:
            report = self._pm.parse_aggregate_report_xml(text, config=self._config)
        except self._pm.ParserError as exc:
            raise Refused("invalid_report", f"not a DMARC aggregate report: {exc}") from None
        if not report.get("records"):
            raise Refused("invalid_report", "an aggregate report without a readable row")
        return Parsed("aggregate", dict(report), notes)

    def _tls(self, data: bytes) -> Parsed:
        text, note = decode_text(data)
        try:
            json.loads(text)
        except ValueError as exc:
            raise Refused("invalid_report", f"not JSON: {exc}") from None
        try:
            report = self._pm.parse_smtp_tls_report_json(text)
        except self._pm.ParserError as exc:
            raise Refused("invalid_report", f"not an SMTP TLS report: {exc}") from None
        return Parsed("smtp_tls", dict(report), [note] if note else [])

    def _email(self, data: bytes) -> Parsed:
        email_attachments(data, self.max_bytes)  # the caps and the DTD check, first
        try:
            parsed = self._pm.parse_report_email(data, config=self._config)
        except self._pm.ParserError as exc:
            raise Refused("invalid_report", f"an email without a report: {exc}") from None
        kind = parsed.get("report_type")
        if kind not in ("aggregate", "failure", "smtp_tls"):
            raise Refused("invalid_report", f"an email with a {kind!r} report")
        report = dict(parsed["report"])
        if kind == "aggregate" and not report.get("records"):
            raise Refused("invalid_report", "an aggregate report without a readable row")
        return Parsed(kind, report)


def _malformed(text: str) -> str | None:
    """Why strict XML parsing fails on ``text`` (None: well-formed).  No DTD got here."""
    parser = expat.ParserCreate()
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        return str(exc)
    return None
