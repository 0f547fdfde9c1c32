"""``mailmon ingest SOURCE PATH...``: one-shot ingest of log files (``-`` for stdin)."""

from __future__ import annotations

import argparse
import io
import logging
import os
import queue
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, cast

from monitor.cli.common import config_of, open_store, print_json, time_zone
from monitor.cli.dmarc import ingest_reports
from monitor.collectors.checkpoints import restore_writer_state, state_prefix
from monitor.collectors.esp.base import webhook, webhooks
from monitor.collectors.limits import DecompressionBomb, LineCap
from monitor.collectors.mail.dsn import DEFAULT_MAX_BYTES
from monitor.collectors.mail.mailfiles import read_messages
from monitor.collectors.mail.source import MAIL_SOURCES, NOT_MAIL, MailSource
from monitor.collectors.mta.base import QueueParser
from monitor.collectors.registry import LineInput, is_stateful, line_kinds, line_source
from monitor.collectors.source import ParseStats
from monitor.collectors.tail import gunzipped
from monitor.driver import Driver
from monitor.errors import InputError
from monitor.pipeline import Pipeline
from monitor.providers import resolver_for
from monitor.store.bulk import indexes_deferred, input_bytes

if TYPE_CHECKING:
    from monitor.providers import ResolverStats

__all__ = ["open_log", "register"]

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 80 * 256  # lines between progress-bar updates (a multiple of the next)
_FLUSH_CHECK_EVERY = 256  # lines between looks at the clock
_FLUSH_SECONDS = 2.0  # longest a parsed event waits for its batch
#: Input from which the writer process starts with the command, not at the first batch
#: (a batch is about 6 MB of Postfix log; a smaller input may need no process at all).
_EARLY_WRITER_BYTES = 16 << 20
DEFER_LOOKUP_SECONDS = 0.1  # an MX lookup waits this long for a relay host to decide
#: The input's last two batches' worth goes in batches this many times smaller (see _Tail).
_TAIL_DIVISOR = 4


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "ingest",
        parents=[common],
        help="ingest log files once",
        description="Read MTA log files (plain or gzip, '-' for stdin), or bounce, "
        "complaint and auto-reply emails (eml, mbox), into the store. Reading the same "
        "input twice changes nothing. Exit status 1 when an input could not be read, "
        "expanded like a decompression bomb, had more than half of its lines not "
        "understood (a binary file, a log of another kind), or (eml, mbox) was not an "
        "email, or (dmarc) held a report that was refused; the events of everything "
        "understood are stored all the same.",
    )
    p.add_argument("source", choices=(*line_kinds(), *MAIL_SOURCES, *webhooks(), "dmarc"),
                   help="what wrote the input (an ESP's name: its exported webhook payloads; "
                   "dmarc: DMARC aggregate/failure and SMTP TLS reports, files or directories)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="log file, .gz file, or - for stdin")
    p.add_argument(
        "--tz",
        type=time_zone,
        default="UTC",
        help="time zone of timestamps that carry none (BSD syslog, Exim without "
        "log_timezone; default UTC)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.add_argument(
        "--keep-indexes",
        action="store_true",
        help="SQLite: update every index as rows are written, even when the logs outweigh "
        "what the store holds (by default such a bulk load builds the secondary indexes of "
        "events and deliveries once, at its end; queries of the store meanwhile, say by "
        "`serve`, go without them)",
    )
    p.set_defaults(run=run)


def open_log(path: str, stack: ExitStack) -> tuple[IO[str], IO[bytes], int, datetime]:
    """Open a log for reading as text; gzip is recognised by its magic bytes.

    Returns the text stream, the raw byte stream (its position drives the
    progress bar), the raw size (0 when unknown) and the reference time used to
    infer the year of BSD-syslog timestamps.
    """
    if path == "-":
        raw: IO[bytes] = sys.stdin.buffer
        size, ref = 0, datetime.now(UTC)
    else:
        try:
            raw = stack.enter_context(open(path, "rb"))  # noqa: SIM115
            st = os.fstat(raw.fileno())
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
        size, ref = st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)
    stream = gunzipped(raw)
    if stream is not raw:
        stack.enter_context(stream)
    # Lines over 4 MiB are dropped, never held (text.buffer.too_long counts them).
    capped = cast(IO[bytes], LineCap(stream))
    text = io.TextIOWrapper(capped, encoding="utf-8", errors="replace", newline="\n")
    return text, raw, size, ref


def _regular(raw: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(raw.fileno()).st_mode)
    except (OSError, ValueError):  # no file descriptor: treat as a stream
        return False


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )  # fmt: skip

    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        transient=True,
    )  # fmt: skip


def _lines(text: IO[str], idle: Callable[[], object] | None = None) -> Iterator[str]:
    """The lines of ``text``; with ``idle``, a stream: called when no line came for a while."""
    if idle is None:
        for line in text:
            yield line.rstrip("\r\n")
        return
    # A pipe blocks in read while its writer is quiet: read it in a thread, so that what
    # was parsed is stored after _FLUSH_SECONDS of silence instead of at the next line.
    lines: queue.Queue[str | BaseException | None] = queue.Queue(maxsize=4096)

    def read() -> None:
        try:
            for line in text:
                lines.put(line)
        except BaseException as exc:  # handed to the reading loop, raised there
            lines.put(exc)
        lines.put(None)

    threading.Thread(target=read, name="mailmon-ingest-read", daemon=True).start()
    while True:
        try:
            item = lines.get(timeout=_FLUSH_SECONDS)
        except queue.Empty:
            idle()
            continue
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item.rstrip("\r\n")


class _Tail:
    """The end of the input goes in smaller batches: when the reading ends, the writer
    process has a small batch left to write, not a full one (the command waits for it:
    0.27-0.30 s at the end of the benchmark's 1M-line log with batches of 20,000).

    :meth:`check`, on the last file, estimates the events still to come from its bytes
    left and the bytes per event read so far; within two batches of the end, the pipeline's
    batch size becomes a :data:`_TAIL_DIVISOR`th.
    """

    def __init__(self, pipeline: Pipeline, raw: IO[bytes], size: int, stats: ParseStats) -> None:
        self.pipeline, self.raw, self.size, self.stats = pipeline, raw, size, stats
        self.done = False

    def check(self) -> None:
        if self.done:
            return
        batch = self.pipeline.batch_size
        events = self.stats.events
        read = self.raw.tell()
        if events < batch or read <= 0:
            return  # too early to tell the bytes an event takes
        if (self.size - read) * events <= 2 * batch * read:
            self.pipeline.batch_size = max(1, batch // _TAIL_DIVISOR)
            self.done = True


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    store = open_store(args, config)
    # A back-fill names most providers by the relay host of each message's delivery line,
    # read soon after the line that first names its domain: a lookup waits that long.
    resolver = resolver_for(config, store, defer_seconds=DEFER_LOOKUP_SECONDS)
    pipeline = Pipeline(
        store,
        resolver=resolver,
        # No Prometheus metrics: this process serves no /metrics and prints its own counts
        # (labelling every stored event cost the parsing process 0.25-0.35 s per 1M lines).
        metrics=None,
        batch_size=config.database.batch_size,
        max_future_seconds=config.ingest.max_future_seconds,
        writer_process=True,  # a back-fill's batches are written on the other core
    )
    driver = Driver(pipeline)
    if args.source == "dmarc":  # DMARC and SMTP TLS reports: records, not events
        reports = ingest_reports(args, config, driver)
        pipeline.close()
        resolver.close()
        store.close()
        if args.json:
            print_json(reports)
        else:
            print(", ".join(f"{k}: {v}" for k, v in reports.items()))
        return 1 if reports["failed_files"] else 0
    if args.source in webhooks():  # exported ESP webhook payloads
        payloads = _ingest_payloads(args.paths, driver, args.source)
        payloads |= {"stored": pipeline.stored, "duplicates": pipeline.duplicates,
                     "refused": dict(pipeline.refused)}  # fmt: skip
        pipeline.close()
        resolver.close()
        store.close()
        if args.json:
            print_json(payloads)
        else:
            print(", ".join(f"{k}: {v}" for k, v in payloads.items()))
        return 1 if payloads["failed"] or payloads["not_understood"] else 0
    if args.source in MAIL_SOURCES:  # bounce, complaint and auto-reply emails
        mail = _ingest_mail(args.paths, driver, kind=args.source)
        mail |= {"stored": pipeline.stored, "duplicates": pipeline.duplicates,
                 "refused": dict(pipeline.refused)}  # fmt: skip
        pipeline.close()
        resolver.close()
        store.close()
        if args.json:
            print_json(mail)
        else:
            print(", ".join(f"{k}: {v}" for k, v in mail.items()))
        return 1 if mail["failed"] or mail["not_mail"] else 0
    show = not args.no_progress and not args.json and sys.stderr.isatty()
    progress = _progress(show)
    failed: list[str] = []
    not_understood: list[str] = []
    unparsed: Counter[str] = Counter()
    lines = events = ignored = tracked = too_long = rejoined = 0
    # The queue-id state belongs to the log's writer, not to one file: every file of this
    # command and of earlier ones (and `serve`) goes on from the same, saved with each file.
    instance = config.service.instance
    writer = None
    if is_stateful(args.source):
        writer = restore_writer_state(store, instance, args.source)
    started = time.monotonic()
    flush_due = started + _FLUSH_SECONDS
    total = input_bytes(args.paths)
    text_bytes = None if args.keep_indexes else total
    with ExitStack() as outer:
        # Entered first, left last: the indexes are built after every batch is written.
        deferral = outer.enter_context(indexes_deferred(store.engine, text_bytes))
        if total is not None and total >= _EARLY_WRITER_BYTES:
            # Batches to come: the writer process imports and opens the store while the
            # first one is parsed, not after (the parser then waited for it to read).
            pipeline.start_writer()
        if progress is not None:
            outer.enter_context(progress)
        for number, path in enumerate(args.paths, 1):
            with ExitStack() as stack:
                try:
                    text, raw, size, ref = open_log(path, stack)
                except InputError as exc:
                    print(f"mailmon: {exc}", file=sys.stderr)
                    failed.append(path)
                    continue
                source = line_source(args.source, LineInput(
                    reference_time=ref, tz=args.tz, queues=writer,
                    state_prefix=state_prefix(instance, args.source),
                ))  # fmt: skip
                task = progress.add_task(path, total=size or None) if progress else None
                name = "stdin" if path == "-" else path
                # A stream (stdin, a named pipe) is live: look at the clock on every line.
                live = not size and not _regular(raw)
                last = number == len(args.paths)
                tail = _Tail(pipeline, raw, size, source.stats) if last and size else None

                def tick(n: int, task: Any = task, raw: IO[bytes] = raw,
                         tail: _Tail | None = tail) -> None:  # fmt: skip
                    nonlocal flush_due
                    if tail is not None:
                        tail.check()
                    if time.monotonic() > flush_due:
                        # A live stream (journalctl -f | mailmon ingest postfix -) must not
                        # wait for a full batch to show up in the store.
                        pipeline.flush(wait=False)
                        flush_due = time.monotonic() + _FLUSH_SECONDS
                    if task is not None and n % _PROGRESS_EVERY == 0:
                        progress.update(task, completed=raw.tell())

                try:
                    driver.run(source, _lines(text, pipeline.flush if live else None), name,
                               every=1 if live else _FLUSH_CHECK_EVERY, tick=tick)  # fmt: skip
                except DecompressionBomb as exc:
                    print(f"mailmon: {path}: {exc}; the {source.stats.lines:,} lines before "
                          "it are kept", file=sys.stderr)  # fmt: skip
                    failed.append(path)
                except (OSError, EOFError) as exc:
                    # A truncated .gz or a read error: keep what was read before it.
                    print(
                        f"mailmon: {path}: read error after {source.stats.lines} lines: {exc}",
                        file=sys.stderr,
                    )
                    failed.append(path)
                # Messages whose later lines an earlier file (or command) gave: this file had
                # their first lines, so their events are made again, whole (end=True).
                driver.commit(source, end=True)
                s = source.stats
                rejoined += source.rejoined if isinstance(source, QueueParser) else 0
                lines += s.lines
                events += s.events
                ignored += s.ignored
                tracked += s.tracked
                unparsed.update(s.unparsed)
                dropped = _too_long(text)
                too_long += dropped
                # A file that failed has said why; the rest of it was never read.
                if path not in failed and _mostly_not_understood(path, args.source, s, dropped):
                    not_understood.append(path)
                if task is not None:
                    progress.remove_task(task)
        pipeline.close()  # every batch written: the indexes put off are built next
        if deferral.indexes and show:
            print(f"mailmon: building {len(deferral.indexes)} indexes put off during the load",
                  file=sys.stderr)  # fmt: skip
    elapsed = time.monotonic() - started
    summary = {
        "files": len(args.paths) - len(failed),
        "failed": failed,
        "lines": lines,
        "events": events,
        "stored": pipeline.stored,
        "duplicates": pipeline.duplicates,
        "refused": dict(pipeline.refused),
        "ignored_lines": ignored,
        "tracked_lines": tracked,
        "rejoined_messages": rejoined,
        "unparsed_lines": sum(unparsed.values()),
        "unparsed_by_service": dict(unparsed.most_common()),
        "too_long_lines": too_long,
        "not_understood": not_understood,
        "seconds": round(elapsed, 3),
        "lines_per_second": round(lines / elapsed) if elapsed > 0 else None,
        "mx_lookups": _lookups(resolver.stats),
        "indexes_built_after_load": (
            None
            if deferral.build_seconds is None
            else {"indexes": deferral.indexes, "seconds": round(deferral.build_seconds, 3)}
        ),
    }
    resolver.close()
    store.close()
    if args.json:
        print_json(summary)
    else:
        _print_summary(summary)
    return 1 if failed or not_understood else 0


def _ingest_mail(
    paths: list[str], driver: Driver, *, kind: str = "mbox", max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, Any]:
    """Read every message of ``paths`` through ``driver``; a summary of what was read."""
    # Reports name providers as the resolver does (the configured [providers] rules_file).
    rules = driver.pipeline.resolver.rules
    source = MailSource(kind, max_bytes=max_bytes, provider_rules=rules)
    failed: list[str] = []
    events = 0
    for path in paths:
        try:
            for item in read_messages(path, max_bytes=max_bytes):
                ref = f"{item.file}#{item.position}" if item.position else item.file
                refused = source.stats.unparsed[NOT_MAIL]
                events += len(driver.feed(source, item.data, ref))
                if source.stats.unparsed[NOT_MAIL] > refused:
                    print(f"mailmon: {ref}: not an email (no header fields such as From, "
                          "Date or Received): refused", file=sys.stderr)  # fmt: skip
        except OSError as exc:
            print(f"mailmon: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            failed.append(path)
        driver.commit(source)
    not_mail = source.stats.unparsed[NOT_MAIL]
    return {
        "files": len(paths) - len(failed),
        "failed": failed,
        "messages": source.stats.lines - not_mail,
        "not_mail": not_mail,
        "by_kind": dict(source.kinds.most_common()),
        "best_effort": source.best_effort,
        "events": events,
    }


#: The largest payload file read (a provider's export: JSON, an array or one per line).
MAX_PAYLOAD_BYTES = 256 << 20


def _ingest_payloads(paths: list[str], driver: Driver, name: str) -> dict[str, Any]:
    """Each file's webhook payloads through the provider's source; a summary."""
    hook = webhook(name)
    source = hook.source()
    failed: list[str] = []
    for path in paths:
        with ExitStack() as stack:
            try:
                raw = sys.stdin.buffer if path == "-" else stack.enter_context(open(path, "rb"))
                data = gunzipped(raw).read(MAX_PAYLOAD_BYTES + 1)
            except OSError as exc:  # unreadable, truncated gzip, decompression bomb
                print(f"mailmon: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
                failed.append(path)
                continue
        if len(data) > MAX_PAYLOAD_BYTES:
            print(f"mailmon: {path}: over {MAX_PAYLOAD_BYTES >> 20} MiB; split the export",
                  file=sys.stderr)  # fmt: skip
            failed.append(path)
            continue
        driver.run(source, hook.split(data.decode("utf-8", "replace")), path)
        driver.commit(source)
    return {
        "files": len(paths) - len(failed),
        "failed": failed,
        "records": source.stats.lines,
        "events": source.stats.events,
        "not_understood": dict(source.stats.unparsed),
    }


def _too_long(text: IO[str]) -> int:
    """How many lines over the limit :func:`open_log`'s stream dropped."""
    capped = getattr(text, "buffer", None)
    return capped.too_long if isinstance(capped, LineCap) else 0


def _mostly_not_understood(path: str, source: str, stats: Any, too_long: int) -> bool:
    """More than half of a file's lines not understood (or too long): say so on stderr.

    A binary file, or a log of another kind than SOURCE, looks like this; the events of
    the lines that were understood are stored all the same.
    """
    seen = stats.lines + too_long
    bad = sum(stats.unparsed.values()) + too_long
    if not seen or bad * 2 <= seen:
        return False
    print(f"mailmon: {path}: {bad:,} of {seen:,} lines not understood: not a {source} log? "
          "(the events of the other lines are stored)", file=sys.stderr)  # fmt: skip
    return True


def _lookups(stats: ResolverStats) -> dict[str, Any]:
    """What provider resolution cost, for the summary and the log."""
    found = stats.as_dict()
    summary = {"domains": found.pop("dns_queries"), **found}
    if summary["domains"]:
        # The one line that explains a slow ingest: DNS, not parsing.
        log.info(
            "MX lookups: %d domains, %.1f s of DNS time (overlapping), ingest waited %.1f s "
            "for them; %d answered, %d take no mail, %d timed out, %d failed",
            summary["domains"], summary["dns_seconds"], summary["wait_seconds"],
            summary["answers"], summary["no_mail"], summary["dns_timeouts"],
            summary["dns_errors"],
        )  # fmt: skip
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    rate = f" ({s['lines_per_second']:,} lines/s)" if s["lines_per_second"] else ""
    print(f"read {s['lines']:,} lines from {s['files']} file(s) in {s['seconds']:.1f} s{rate}")
    print(
        f"events: {s['events']:,} parsed, {s['stored']:,} new, {s['duplicates']:,} already stored"
    )
    by_service = ", ".join(f"{k} {v:,}" for k, v in s["unparsed_by_service"].items())
    print(
        f"lines not understood: {s['unparsed_lines']:,}"
        + (f" ({by_service})" if by_service else "")
    )
    if s["too_long_lines"]:
        print(f"lines over 4 MiB, dropped: {s['too_long_lines']:,}")
    if s["not_understood"]:
        print(f"inputs mostly not understood: {', '.join(s['not_understood'])}")
    if s["refused"]:
        print("refused: " + ", ".join(f"{v:,} {k}" for k, v in s["refused"].items()))
    m = s["mx_lookups"]
    known = (
        f"{m['static_hits']:,} well-known, {m['relay_hits']:,} by relay host, "
        f"{m['cache_hits']:,} from the store"
    )
    if m["relay_first"]:
        known += f"; {m['relay_first']:,} lookups not needed (a relay host came first)"
    if m["domains"]:
        print(
            f"MX lookups: {m['domains']:,} domains, {m['dns_seconds']:.1f} s of DNS time "
            f"(concurrent; ingest waited {m['wait_seconds']:.1f} s): {m['answers']:,} answered, "
            f"{m['no_mail']:,} take no mail, {m['dns_timeouts'] + m['dns_errors']:,} failed; "
            f"providers known without DNS: {known}"
        )
    else:
        print(f"MX lookups: none needed ({known})")
    if s["indexes_built_after_load"]:
        built = s["indexes_built_after_load"]
        print(
            f"indexes: {len(built['indexes'])} built after the load, in {built['seconds']:.1f} s "
            "(a bulk load into SQLite puts them off; --keep-indexes keeps them)"
        )
    if s["failed"]:
        print(f"failed inputs: {', '.join(s['failed'])}")
