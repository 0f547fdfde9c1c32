"""Report files -> the driver: ``mailmon ingest dmarc PATH`` and the directory job.

    reports = ReportIngest(driver, domains=["example.com"])
    reports.ingest_path("reports/")                 # every file under it, none moved
    scan_directory(reports, inbox, done, failed)     # the job: each file moved once read

A file holds one report (XML, JSON, gzip, zip, one email) or several (an mbox).  Each
report is parsed, checked against our domains and handed to the driver on its own:
one that is refused is counted (``mailmon_events_rejected_total{source="dmarc",
reason}``), logged with its reason, and never stops the run; the reports next to it
are stored.  The job commits each file before it moves it, so a crash between the two
reads the file again and the store drops what it already had.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.collectors.mail.mailfiles import read_messages
from monitor.collectors.reports.parse import DEFAULT_MAX_BYTES, ReportParser
from monitor.collectors.reports.source import ReportSource, keep_ours
from monitor.collectors.reports.unpack import Refused
from monitor.driver import Driver

__all__ = ["FileResult", "ReportIngest", "RunSummary", "report_files", "scan_directory"]

log = logging.getLogger(__name__)

#: Reports between progress lines in the log of a long directory run.
LOG_EVERY = 1000


@dataclass
class FileResult:
    """What one file gave: reports read, stored as records, refused (by reason)."""

    path: str
    reports: int = 0
    records: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.refused


@dataclass
class RunSummary:
    """A run over files: the counts ``ingest --json`` prints and the job logs."""

    files: int = 0
    reports: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    recovered: list[str] = field(default_factory=list)
    failed_files: list[str] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "reports": self.reports, "by_type": dict(self.by_type),
            "records": self.records, "stored": self.stored, "duplicates": self.duplicates,
            "refused": dict(sorted(self.refused.items())), "recovered": self.recovered,
            "failed_files": self.failed_files, "moved": self.moved,
            "seconds": round(self.seconds, 3),
        }  # fmt: skip


class ReportIngest:
    """Reads report files into the driver's pipeline, one report at a time."""

    def __init__(
        self,
        driver: Driver,
        *,
        domains: Sequence[str] = (),
        max_bytes: int = DEFAULT_MAX_BYTES,
        parser: ReportParser | None = None,
    ) -> None:
        self.driver = driver
        self.domains = tuple(d.strip(".").lower() for d in domains)
        self.max_bytes = max_bytes
        self.parser = parser or ReportParser(max_bytes=max_bytes)
        self.source = ReportSource()
        self.summary = RunSummary()

    def ingest_file(self, path: str) -> FileResult:
        """Read every report of ``path`` and store their records (committed on return)."""
        result = FileResult(path)
        summary = self.summary
        try:
            for item in read_messages(path, max_bytes=self.max_bytes):
                ref = f"{item.file}#{item.position}" if item.position else item.file
                self._report(item.data, ref, result)
        except OSError as exc:
            self._refuse(result, path, Refused("unreadable", exc.strerror or str(exc)))
        self.commit()
        summary.files += 1
        if not result.ok:
            summary.failed_files.append(path)
        return result

    def read_report(self, data: bytes, ref: str) -> FileResult:
        """One report's bytes (a mailbox's email); its records wait for :meth:`commit`."""
        result = FileResult(ref)
        self._report(data, ref, result)
        return result

    def refuse(self, ref: str, reason: str, detail: str) -> FileResult:
        """Count a report refused before its bytes were read (too large to fetch)."""
        result = FileResult(ref)
        result.reports += 1
        self.summary.reports += 1
        self._refuse(result, ref, Refused(reason, detail))
        return result

    def commit(self, checkpoint: tuple[str, dict[str, Any]] | None = None) -> None:
        """Store the pending records (with ``checkpoint``) and count them in the summary."""
        pipeline = self.driver.pipeline
        before = pipeline.record_counts.copy()
        self.driver.commit(self.source, checkpoint=checkpoint)
        after = pipeline.record_counts
        stored = after["stored"] - before["stored"]
        self.summary.stored += stored
        self.summary.duplicates += (after["received"] - before["received"]) - stored - (
            after["rejected"] - before["rejected"])  # fmt: skip

    def _report(self, data: bytes, ref: str, result: FileResult) -> None:
        result.reports += 1
        self.summary.reports += 1
        try:
            parsed = keep_ours(self.parser.parse(data), self.domains)
        except Refused as exc:
            self._refuse(result, ref, exc)
            return
        except Exception:  # a bug on one report must not stop the run over the others
            log.exception("%s: the report parser failed", ref)
            self._refuse(result, ref, Refused("invalid_report", "the parser failed"))
            return
        for note in parsed.notes:
            log.warning("%s: recovered: %s", ref, note)
            self.summary.recovered.append(f"{ref}: {note}")
        unparsed = sum(self.source.stats.unparsed.values())
        records = self.driver.feed(self.source, parsed, ref)
        if sum(self.source.stats.unparsed.values()) > unparsed:
            reason = "invalid_report"
            log.warning("%s: refused (%s): %s", ref, reason, "a field the records need is missing")
            result.refused[reason] += 1
            self.summary.refused[reason] += 1
            return
        result.records += len(records)
        self.summary.records += len(records)
        self.summary.by_type[parsed.type] += 1

    def _refuse(self, result: FileResult, ref: str, exc: Refused) -> None:
        log.warning("%s: refused (%s): %s", ref, exc.reason, exc.detail)
        self.source.stats.lines += 1  # read, so counted as read, and refused
        result.refused[exc.reason] += 1
        self.summary.refused[exc.reason] += 1
        metrics = self.driver.metrics
        if metrics is not None:
            metrics.count_refused(self.source.kind, exc.reason)

    def ingest_path(
        self, path: str, tick: Callable[[int, int], object] | None = None
    ) -> RunSummary:
        """Every report file of ``path`` (a file, ``-``, or a directory, walked); nothing moved."""
        files = [path] if path == "-" or not os.path.isdir(path) else [
            str(p) for p in report_files(Path(path))]  # fmt: skip
        started = time.monotonic()
        for n, name in enumerate(files, 1):
            self.ingest_file(name)
            if tick is not None:
                tick(n, len(files))
        self.summary.seconds += time.monotonic() - started
        return self.summary


def report_files(directory: Path, *, skip: Sequence[Path] = (),
                 min_age_seconds: float = 0.0) -> Iterator[Path]:  # fmt: skip
    """The regular files under ``directory`` (sorted, hidden ones and ``skip`` left out),
    at least ``min_age_seconds`` old (a file still being written is left for later)."""
    skipped = {p.resolve() for p in skip}
    now = time.time()
    for root, dirs, names in os.walk(directory):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (here / d).resolve() not in skipped)  # fmt: skip
        for name in sorted(names):
            file = here / name
            if name.startswith("."):
                continue
            try:
                st = file.lstat()
            except OSError:
                continue  # gone meanwhile
            if file.is_file() and not file.is_symlink() and now - st.st_mtime >= min_age_seconds:
                yield file


def _move(file: Path, directory: Path, target: Path) -> Path:
    """Move ``file`` (under ``directory``) to the same place under ``target``, never
    over another file."""
    dest = target / file.relative_to(directory)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stem, n = dest, 1
    while dest.exists():
        dest = stem.with_name(f"{stem.name}.{n}")
        n += 1
    shutil.move(str(file), dest)
    return dest


def scan_directory(
    reports: ReportIngest,
    directory: Path,
    done: Path,
    failed: Path,
    *,
    min_age_seconds: float = 0.0,
    tick: Callable[[int], object] | None = None,
) -> RunSummary:
    """Read each new file of ``directory``, then move it to ``done`` (every report stored)
    or ``failed`` (at least one refused; its good reports are stored all the same)."""
    summary = reports.summary
    started = time.monotonic()
    moved: Counter[str] = Counter()
    files = list(report_files(directory, skip=(done, failed), min_age_seconds=min_age_seconds))
    for n, file in enumerate(files, 1):
        result = reports.ingest_file(str(file))
        try:
            _move(file, directory, done if result.ok else failed)
            moved["done" if result.ok else "failed"] += 1
        except OSError as exc:  # read again next time; the store drops what it has
            log.error("%s: cannot move it after reading: %s", file, exc.strerror or exc)
        if n % LOG_EVERY == 0:
            log.info("DMARC reports: %d of %d files read", n, len(files))
        if tick is not None:
            tick(n)
    summary.moved = dict(moved)
    summary.seconds += time.monotonic() - started
    return summary
