"""DMARC report mailbox benchmark: a private Dovecot holding N report emails, read once.

    .venv/bin/python bench/bench_dmarc_imap.py [--reports 10000] [--rows 5]

``--reports`` generated aggregate reports of ``--rows`` rows (distinct ids), each
gzipped and attached to an email, are delivered to a private Dovecot's Maildir
(tests/servers/dovecot.py: root and Debian's dovecot-imapd are needed; without them the
benchmark says so and exits 0), then read over IMAPS by ``ReportMailbox`` as the
``dmarc_imap`` job does: fetched one at a time, stored, moved to the archive folder in
batches of 100.  Throughput in messages/s and records/s; memory: resident memory after
1,000 messages and at the end (target: growth under 40 MiB, SQLite's 32 MiB page cache
filling) and Python's allocated blocks (target: under 10,000 more: nothing held per
message, once the collector ran; the email parser's regex cache fills up to its 512
patterns before the first mark).  A second run over the emptied folder must find nothing.  A missed target
prints MISSED and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import os
import pwd
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench_dmarc import rss_mib, verdict  # noqa: E402
from dmarc_data import Row, aggregate  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from servers.dovecot import DovecotInstance, DovecotMissing  # noqa: E402

from monitor.collectors.reports.files import FileResult, ReportIngest  # noqa: E402
from monitor.collectors.reports.imap import ReportMailbox  # noqa: E402
from monitor.config import DmarcImapConfig  # noqa: E402
from monitor.driver import Driver  # noqa: E402
from monitor.metrics import Metrics  # noqa: E402
from monitor.pipeline import Pipeline  # noqa: E402
from monitor.store import Store  # noqa: E402

PASSWORD_ENV = "MAILMON_BENCH_IMAP_PW"


def mail(i: int, rows: int) -> bytes:
    report = aggregate([Row(f"198.51.{i % 250}.{j}", 1 + j, dkim="fail" if j == 0 else "pass")
                        for j in range(rows)], report_id=f"bench-imap-{i}")  # fmt: skip
    message = EmailMessage()
    message["From"], message["To"] = "noreply-dmarc@reporter.test", "dmarc@example.com"
    message["Subject"] = f"Report domain: example.com Submitter: reporter.test Report-ID: {i}"
    message.set_content("The report is attached.")
    message.add_attachment(gzip.compress(report), maintype="application", subtype="gzip",
                           filename=f"reporter.test!example.com!{i}.xml.gz")  # fmt: skip
    return bytes(message)


def fill(dovecot: DovecotInstance, n: int, rows: int) -> None:
    """``n`` report emails delivered as a local delivery agent does: into the Maildir's
    ``new/`` (IMAP APPEND fsyncs each one: minutes for 10,000)."""
    with dovecot.client("dmarc") as imap:
        imap.select_folder("INBOX")  # Dovecot makes the Maildir
    maildir = dovecot.home("dmarc") / "Maildir"
    owner = pwd.getpwnam("nobody")
    for i in range(n):
        tmp, new = maildir / "tmp" / f"{i}.bench", maildir / "new" / f"{1765000000 + i}.M{i}.bench"
        tmp.write_bytes(mail(i, rows))
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
        tmp.rename(new)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dmarc-imap-") as tmp:
        dovecot = DovecotInstance(tmp, users={"dmarc": "bench-Pw-1"})
        try:
            dovecot.start()
        except (DovecotMissing, PermissionError) as exc:
            print(f"skipped: {exc}")
            return 0
        try:
            started = time.perf_counter()
            fill(dovecot, args.reports, args.rows)
            print(f"delivered: {args.reports:,} report emails to the Maildir in "
                  f"{time.perf_counter() - started:.1f} s")  # fmt: skip
            os.environ[PASSWORD_ENV] = "bench-Pw-1"
            settings = DmarcImapConfig(host=dovecot.host, port=dovecot.imaps_port, tls="tls",
                                       ca_file=str(dovecot.cert_file), user="dmarc",
                                       password_env=PASSWORD_ENV)  # fmt: skip
            store = Store.open(f"sqlite:///{tmp}/m.db")
            metrics = Metrics(CollectorRegistry())
            reports = ReportIngest(Driver(Pipeline(store, metrics=metrics), metrics),
                                   domains=["example.com"])  # fmt: skip
            marks: dict[int, tuple[float, int]] = {}
            read_report = reports.read_report
            seen = [0]

            def counted(data: bytes, ref: str) -> FileResult:
                seen[0] += 1
                if seen[0] == 1000:
                    gc.collect()  # the pipeline defers collections: count live blocks only
                    marks[1000] = (rss_mib(), sys.getallocatedblocks())
                return read_report(data, ref)

            reports.read_report = counted  # type: ignore[method-assign]
            start_rss = rss_mib()
            started = time.perf_counter()
            summary = ReportMailbox(reports, settings).run()
            spent = time.perf_counter() - started
            gc.collect()
            marks[args.reports] = (rss_mib(), sys.getallocatedblocks())
            n, rows = summary["messages"], summary["stored"]
            print(f"mailbox: {n:,} messages, {rows:,} rows stored, moved {summary['moved']}, "
                  f"refused {summary['refused'] or 'none'} in {spent:.1f} s "
                  f"({n / spent:,.0f} messages/s, {rows / spent:,.0f} records/s)")
            ok = n == args.reports and rows == args.reports * args.rows
            print(f"every message read and stored once: {verdict(ok)}")
            (first, b1), (last, b2) = marks.get(1000, (0.0, 0)), marks[args.reports]
            print(f"memory: RSS {start_rss:.0f} MiB before, {first:.0f} MiB after 1,000 "
                  f"messages, {last:.0f} MiB after {args.reports:,}: {last - first:+.1f} MiB "
                  f"(target < 40: SQLite's page cache) {verdict(last - first < 40)}")
            print(f"Python heap: {b1:,} allocated blocks after 1,000 messages, {b2:,} at the "
                  f"end ({b2 - b1:+,}; target < 10,000) {verdict(b2 - b1 < 10_000)}")
            again = ReportMailbox(reports, settings).run()
            print(f"second run: {again['messages']} messages {verdict(again['messages'] == 0)}")
            store.close()
        finally:
            dovecot.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
