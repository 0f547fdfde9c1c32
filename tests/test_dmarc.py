"""DMARC and TLS reports: the corpus read one by one, hostile input refused, dedupe, metrics."""

from __future__ import annotations

import gzip
import io
import resource
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from dmarc_data import BILLION_LAUGHS, CORPUS_DOMAINS, DMARC, Row, aggregate, tls_report
from prometheus_client import CollectorRegistry

from monitor.collectors.reports.files import ReportIngest
from monitor.collectors.reports.records import (
    DmarcFailure,
    DmarcRow,
    TlsrptPolicy,
    set_label_domains,
)
from monitor.driver import Driver
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.store import Store

#: Every report of the corpus: (type, records stored) or ("refused", reason); a recovered
#: one also names what was recovered.
CORPUS: dict[str, tuple[str, int | str] | tuple[str, int, str]] = {
    "aggregate/!example.com!1538204542!1538463818.xml": ("aggregate", 1),
    "aggregate/!large-example.com!1711897200!1711983600.xml": ("aggregate", 2286),
    "aggregate/Report domain- borschow.com Submitter- google.com Report-ID- 949348866075514174.eml": ("aggregate", 1),
    "aggregate/addisonfoods.com!example.com!1536105600!1536191999.xml": ("aggregate", 1),
    "aggregate/empty_reason.xml": ("aggregate", 1),
    "aggregate/estadocuenta1.infonacot.gob.mx!example.com!1536853302!1536939702!2940.xml.zip": ("aggregate", 1),
    "aggregate/example.net!example.com!1529366400!1529452799.xml": ("aggregate", 1),
    "aggregate/fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz": ("aggregate", 1),
    "aggregate/ikea.com!example.de!1538690400!1538776800.xml": ("aggregate", 1, "malformed XML (no element found"),
    "aggregate/invalid_utf_8.xml": ("aggregate", 1, "invalid UTF-8 at byte 706"),
    "aggregate/invalid_xml.xml": ("aggregate", 1, "malformed XML (not well-formed (invalid token)"),
    "aggregate/mimecast-weird-gzip.eml": ("aggregate", 1),
    "aggregate/old_draft_from_wiki.xml": ("aggregate", 1),
    "aggregate/protection.outlook.com!example.com!1711756800!1711843200.xml": ("aggregate", 1),
    "aggregate/rfc9990-example.net!example.com!1700000000!1700086399.xml": ("aggregate", 2),
    "aggregate/rfc9990-sample.xml": ("aggregate", 1),
    "aggregate/twilight.eml": ("aggregate", 1),
    "aggregate/usssa.com!example.com!1538784000!1538870399.xml": ("aggregate", 2),
    "aggregate/veeam.com!example.com!1530133200!1530219600.xml": ("aggregate", 1),
    "aggregate_invalid/report_with_upper_cased_pass.xml": ("aggregate", 1),
    "empty.xml": ("refused", "empty"),
    "extract_report/changed-input.xml": ("aggregate", 20),
    "extract_report/nice-input.xml": ("aggregate", 20),
    "extract_report/nice-input.xml.gz": ("aggregate", 20),
    "extract_report/nice-input.xml.zip": ("aggregate", 20),
    "failure/DMARC Failure Report for domain.de (mail-from=sharepoint@domain.de, ip=10.10.10.10).eml": ("failure", 1),
    "failure/[Netease DMARC Failure Report] Rent Reminder.eml": ("refused", "foreign_domain"),
    "failure/dmarc_ruf_report_linkedin.crlf.eml": ("failure", 1),
    "failure/dmarc_ruf_report_linkedin.eml": ("failure", 1),
    "failure/exim_plain_text_only_no_arf_part.eml": ("failure", 1),
    "smtp_tls/google.com_smtp_tls_report.eml": ("smtp_tls", 1),
    "smtp_tls/mail.ru.json": ("smtp_tls", 1),
    "smtp_tls/rfc8460.json": ("refused", "foreign_domain"),
    "smtp_tls/smtp_tls.json": ("smtp_tls", 1),
}


class Reader:
    """A store, a pipeline with metrics and a ReportIngest over them (our domains given)."""

    def __init__(self, url: str, domains: tuple[str, ...] = ("example.com",), **kw: int) -> None:
        self.store = Store.open(url)
        self.metrics = Metrics(CollectorRegistry())
        self.pipeline = Pipeline(self.store, metrics=self.metrics)
        set_label_domains(domains)
        self.reports = ReportIngest(Driver(self.pipeline, self.metrics), domains=domains, **kw)

    def file(self, path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        return path

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def reader(sqlite_url: str) -> Reader:
    return Reader(sqlite_url)


def test_the_corpus_lists_every_report() -> None:
    """The expectations name every report of the corpus (33 and the empty file), no other."""
    files = {str(p.relative_to(DMARC)) for p in DMARC.rglob("*") if p.is_file()
             and p.parent.name != "parsed_output_examples" and p.name != "SOURCES.md"}  # fmt: skip
    assert files == set(CORPUS) and len(files) == 34


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_report_is_ingested_or_refused_with_its_reason(
    name: str, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each real report is stored with its record count, or refused with a stated reason."""
    reader = Reader(sqlite_url, CORPUS_DOMAINS)
    result = reader.reports.ingest_file(str(DMARC / name))
    expected = CORPUS[name]
    kinds = {"aggregate": DmarcRow.kind, "failure": DmarcFailure.kind, "smtp_tls": TlsrptPolicy.kind}
    if expected[0] == "refused":
        assert dict(result.refused) == {expected[1]: 1}
        assert f"refused ({expected[1]})" in caplog.text
        assert all(reader.store.records(k) == [] for k in kinds.values())
        assert reader.sample("mailmon_events_rejected_total", source="dmarc", reason=str(expected[1])) == 1
        return
    kind, count, *recovered = expected
    assert result.ok and result.records == count
    assert len(reader.store.records(kinds[str(kind)])) == count
    assert reader.sample("mailmon_records_stored_total", kind=kinds[str(kind)], source="dmarc") == count
    notes = reader.reports.summary.recovered
    assert len(notes) == len(recovered)
    if recovered:
        assert notes[0].startswith(f"{DMARC / name}: {recovered[0]}")
        assert f"recovered: {recovered[0]}" in caplog.text


def test_large_report_rows_hold_what_the_reporter_said(reader: Reader) -> None:
    """The 2,286-row report: every field of a row, the counts on /metrics by alignment."""
    reader.reports.ingest_file(str(DMARC / "aggregate/!large-example.com!1711897200!1711983600.xml"))
    rows = reader.store.records(DmarcRow.kind)
    assert len(rows) == 2286
    first = rows[0]
    assert isinstance(first, DmarcRow)
    assert (first.org_name, first.policy_domain, first.p, first.adkim) == (
        "accurateplastics.com", "example.com", "none", "r")
    assert first.occurred_at.timestamp() == 1711897200 and first.end.timestamp() == 1711983600
    total = sum(r.count for r in rows if isinstance(r, DmarcRow))
    metric = sum(s.value for f in reader.metrics.registry.collect()
                 if f.name == "mailmon_dmarc_messages" for s in f.samples
                 if s.name.endswith("_total"))  # fmt: skip
    assert metric == total
    failing = sum(r.count for r in rows if isinstance(r, DmarcRow) and not r.passed)
    assert sum(reader.sample("mailmon_dmarc_messages_total", header_from="example.com",
                             disposition=d, dkim_aligned="false", spf_aligned="false")
               for d in ("none", "quarantine", "reject")) == failing  # fmt: skip


def test_same_report_from_another_path_counts_once(reader: Reader, tmp_path: Path) -> None:
    """The same report as .xml, .gz, in a zip and mailed as an attachment: one set of rows,
    /metrics counted once; the same report id from another reporter is another report."""
    xml = aggregate([Row("192.0.2.1", 10), Row("198.51.100.7", 5, dkim="fail", spf="fail")])
    plain = reader.file(tmp_path / "r.xml", xml)
    packed = reader.file(tmp_path / "r.xml.gz", gzip.compress(xml))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("r.xml", xml)
    zipped = reader.file(tmp_path / "r.zip", buf.getvalue())
    mail = EmailMessage()
    mail["From"], mail["To"] = "noreply-dmarc-support@google.com", "dmarc@example.com"
    mail["Subject"], mail["Date"] = "Report domain: example.com", "Sat, 06 Dec 2025 10:00:00 +0000"
    mail.set_content("report attached")
    mail.add_attachment(gzip.compress(xml), maintype="application", subtype="gzip",
                        filename="google.com!example.com!1764979200!1765065599.xml.gz")
    mailed = reader.file(tmp_path / "r.eml", bytes(mail))
    for path in (plain, packed, zipped, mailed):
        assert reader.reports.ingest_file(str(path)).records == 2
    assert len(reader.store.records(DmarcRow.kind)) == 2
    s = reader.reports.summary
    assert (s.stored, s.duplicates) == (2, 6)
    ok = {"header_from": "example.com", "disposition": "none"}
    assert reader.sample("mailmon_dmarc_messages_total", **ok, dkim_aligned="true", spf_aligned="true") == 10
    assert reader.sample("mailmon_dmarc_messages_total", **ok, dkim_aligned="false", spf_aligned="false") == 5
    other = reader.file(tmp_path / "o.xml", aggregate([Row("192.0.2.1", 10)], org="yahoo.com",
                                                      email="dmarc@yahoo.com"))  # fmt: skip
    reader.reports.ingest_file(str(other))
    assert len(reader.store.records(DmarcRow.kind)) == 3


def test_labels_stay_bounded(reader: Reader, tmp_path: Path) -> None:
    """A From: domain that is not ours is `other`; a subdomain of ours counts as ours."""
    xml = aggregate([Row("192.0.2.1", 3, header_from="news.example.com"),
                     Row("192.0.2.2", 4, header_from="spoof.example.net")])  # fmt: skip
    reader.reports.ingest_file(str(reader.file(tmp_path / "r.xml", xml)))
    labels = {s.labels["header_from"] for f in reader.metrics.registry.collect()
              if f.name == "mailmon_dmarc_messages" for s in f.samples}  # fmt: skip
    assert labels == {"example.com", "other"}


def test_tls_report_sessions_and_failure_types(reader: Reader, tmp_path: Path) -> None:
    """TLS-RPT: sessions by result and failed sessions by RFC 8460 result type, per domain."""
    reader.reports.ingest_file(str(reader.file(tmp_path / "t.json", tls_report(ok=90, failed=10))))
    [policy] = reader.store.records(TlsrptPolicy.kind)
    assert isinstance(policy, TlsrptPolicy)
    assert (policy.successful_sessions, policy.failed_sessions) == (90, 10)
    assert policy.failures()[0]["receiving_mx_hostname"] == "mx.example.com"
    assert reader.sample("mailmon_tlsrpt_sessions_total", policy_domain="example.com", result="success") == 90
    assert reader.sample("mailmon_tlsrpt_sessions_total", policy_domain="example.com", result="failure") == 10
    assert reader.sample("mailmon_tlsrpt_failed_sessions_total", policy_domain="example.com",
                         result_type="certificate-expired") == 10  # fmt: skip


def test_rfc8460_example_for_our_domain(sqlite_url: str) -> None:
    """RFC 8460's own example, read for company-y.example: its three failure details."""
    reader = Reader(sqlite_url, ("company-y.example",))
    assert reader.reports.ingest_file(str(DMARC / "smtp_tls/rfc8460.json")).records == 1
    [policy] = reader.store.records(TlsrptPolicy.kind)
    assert isinstance(policy, TlsrptPolicy)
    assert [d["result_type"] for d in policy.failures()] == [
        "certificate-expired", "starttls-not-supported", "validation-failure"]
    assert reader.sample("mailmon_tlsrpt_failed_sessions_total", policy_domain="company-y.example",
                         result_type="starttls-not-supported") == 200  # fmt: skip


def _zip_bomb(size: int) -> bytes:
    buf = io.BytesIO()
    with (zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z,
          z.open("r.xml", "w", force_zip64=True) as member):
        chunk = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            member.write(chunk)
    return buf.getvalue()


def _lying_zip(size: int) -> bytes:
    """A zip whose header declares a small member that expands to ``size`` bytes."""
    data = bytearray(_zip_bomb(size))
    # Patch the central directory's uncompressed size (offset 24 in its entry) to 100.
    at = data.rfind(b"PK\x01\x02")
    data[at + 24: at + 28] = (100).to_bytes(4, "little")
    return bytes(data)


def _mail_with(attachment: bytes, subtype: str = "gzip") -> bytes:
    mail = EmailMessage()
    mail["From"], mail["Subject"] = "dmarc@reporter.example", "Report domain: example.com"
    mail["Date"] = "Sat, 06 Dec 2025 10:00:00 +0000"
    mail.set_content("report attached")
    mail.add_attachment(attachment, maintype="application", subtype=subtype, filename="r.xml.gz")
    return bytes(mail)


HOSTILE = {
    "billion laughs": (BILLION_LAUGHS, "doctype"),
    "a DOCTYPE alone": (b'<?xml version="1.0"?><!DOCTYPE feedback SYSTEM "file:///etc/passwd"><feedback/>', "doctype"),
    "a DOCTYPE after a comment": (b"<!-- hi --><!DOCTYPE feedback><feedback/>", "doctype"),
    "billion laughs gzipped": (gzip.compress(BILLION_LAUGHS), "doctype"),
    "billion laughs mailed": (_mail_with(gzip.compress(BILLION_LAUGHS)), "doctype"),
    "a gzip bomb": (gzip.compress(b"\0" * (8 << 20)), "decompression_bomb"),
    "a zip bomb": (_zip_bomb(8 << 20), "decompression_bomb"),
    # zipfile stops at the declared size; the CRC of those bytes then fails: never expanded.
    "a zip lying about its size": (_lying_zip(8 << 20), "bad_archive"),
    "a gzip bomb mailed": (_mail_with(gzip.compress(b"\0" * (8 << 20))), "decompression_bomb"),
    "a truncated gzip": (gzip.compress(aggregate([Row("192.0.2.1", 1)]))[:-30], "bad_archive"),
    "a broken zip": (b"PK\x03\x04" + b"\x01" * 200, "bad_archive"),
    "malformed XML with nothing to recover": (b"<feedback><report_metadata><org_name>", "invalid_report"),
    "XML that is not a report": (b"<html><body>hello</body></html>", "invalid_report"),
    "JSON that is not a TLS report": (b'{"hello": "world"}', "invalid_report"),
    "broken JSON": (b'{"organization-name": ', "invalid_report"),
    "binary garbage": (bytes(range(256)) * 4, "not_a_report"),
    "an email without a report": (_mail_with(b"just text", "octet-stream"), "invalid_report"),
    "a report about someone else's domain": (aggregate([Row("192.0.2.1", 1)], domain="victim.example"), "foreign_domain"),
    "whitespace only": (b"  \n\t\n", "empty"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_is_refused_with_a_reason(case: str, sqlite_url: str, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Bombs, DTDs, broken archives and foreign reports: refused, counted, logged, no crash."""
    data, reason = HOSTILE[case]
    reader = Reader(sqlite_url, max_bytes=1 << 20)
    result = reader.reports.ingest_file(str(reader.file(tmp_path / "hostile", data)))
    assert dict(result.refused) == {reason: 1}
    assert reader.sample("mailmon_events_rejected_total", source="dmarc", reason=reason) == 1
    assert f"refused ({reason})" in caplog.text
    assert reader.store.records(DmarcRow.kind) == []


def test_a_bomb_costs_no_memory(sqlite_url: str, tmp_path: Path) -> None:
    """A 16 KB gzip of 1 GiB and a zip of 256 MiB are refused without expanding them."""
    reader = Reader(sqlite_url)  # the default cap: 64 MiB
    bomb = tmp_path / "bomb.xml.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        chunk = b"\0" * (1 << 24)
        for _ in range(64):
            f.write(chunk)
    zbomb = reader.file(tmp_path / "bomb.zip", _zip_bomb(256 << 20))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert dict(reader.reports.ingest_file(str(bomb)).refused) == {"decompression_bomb": 1}
    assert dict(reader.reports.ingest_file(str(zbomb)).refused) == {"decompression_bomb": 1}
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200 * 1024  # the cap (64 MiB) and its copies, never the 1 GiB


def test_one_bad_report_never_stops_a_directory(reader: Reader, tmp_path: Path) -> None:
    """Good reports around a bomb, a DTD and garbage in one directory (and an mbox with one
    bad message among good ones) are all stored; the bad ones are counted by reason."""
    d = tmp_path / "in"
    d.mkdir()
    reader.file(d / "a.xml", aggregate([Row("192.0.2.1", 1)], report_id="a"))
    reader.file(d / "b.xml", BILLION_LAUGHS)
    reader.file(d / "c.xml.gz", gzip.compress(b"<" * (100 << 20)))
    reader.file(d / "d.bin", b"\x00\x01garbage")
    reader.file(d / "e.json", tls_report())
    good = _mail_with(gzip.compress(aggregate([Row("192.0.2.2", 2)], report_id="m1")))
    bad = _mail_with(gzip.compress(BILLION_LAUGHS))
    good2 = _mail_with(gzip.compress(aggregate([Row("192.0.2.3", 3)], report_id="m2")))
    reader.file(d / "f.mbox", b"".join(b"From MAILER-DAEMON Sat Dec  6 10:00:00 2025\n" + m + b"\n"
                                       for m in (good, bad, good2)))  # fmt: skip
    summary = reader.reports.ingest_path(str(d))
    assert summary.files == 6 and summary.reports == 8
    assert dict(summary.refused) == {"doctype": 2, "decompression_bomb": 1, "not_a_report": 1}
    assert sorted(Path(f).name for f in summary.failed_files) == ["b.xml", "c.xml.gz", "d.bin", "f.mbox"]
    assert sorted(r.source_ip for r in reader.store.records(DmarcRow.kind)) == [  # type: ignore[attr-defined]
        "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert len(reader.store.records(TlsrptPolicy.kind)) == 1
    assert reader.sample("mailmon_source_lines_total", source="dmarc") == 8


def test_the_alert_reads_the_metric_ingest_writes(reader: Reader, tmp_path: Path) -> None:
    """MailmonDmarcFailures' recording rules select the series and label values that
    ingesting a failing report produces (its promtool cases are in alerts/tests/daily.test.yml)."""
    rules = (Path(__file__).resolve().parents[1] / "alerts" / "recording.rules.yml").read_text()
    assert 'mailmon_dmarc_messages_total{dkim_aligned="false", spf_aligned="false"}' in rules
    assert "sum by (header_from)" in rules
    xml = aggregate([Row("192.0.2.1", 90), Row("203.0.113.9", 10, dkim="fail", spf="fail")])
    reader.reports.ingest_file(str(reader.file(tmp_path / "r.xml", xml)))
    failing = {"header_from": "example.com", "disposition": "none", "dkim_aligned": "false",
               "spf_aligned": "false"}  # fmt: skip
    assert reader.sample("mailmon_dmarc_messages_total", **failing) == 10
