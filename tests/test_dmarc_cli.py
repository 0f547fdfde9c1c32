"""DMARC reports end to end: `mailmon ingest dmarc`, `mailmon dmarc summary` (with reverse
DNS from a DNS server on 127.0.0.1) and the directory job's moves."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dmarc_data import BILLION_LAUGHS, DMARC, Row, aggregate, tls_report
from dns_server import DNSServer
from test_cli import mailmon
from test_dmarc import Reader

from monitor.collectors.reports.files import scan_directory
from monitor.collectors.reports.records import DmarcRow


def _config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "mailmon.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "m.db"}"\n'
                      f'[dmarc]\ndomains = ["example.com"]\n{extra}')  # fmt: skip
    return config


def test_ingest_then_summary(tmp_path: Path) -> None:
    """Reports in through the CLI, the summary's pass rate, sources, unknown sources and
    policy out; the same reports again store nothing; a refused one sets exit status 1."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "g.xml").write_bytes(aggregate([
        Row("192.0.2.1", 90), Row("192.0.2.2", 6, spf="fail"),
        Row("203.0.113.9", 4, dkim="fail", spf="fail", disposition="reject"),
    ], p="reject"))  # fmt: skip
    (inbox / "t.json").write_bytes(tls_report(ok=50, failed=2))
    config = _config(tmp_path)
    out = json.loads(mailmon("ingest", "dmarc", str(inbox), "--json", "--config", str(config)).stdout)
    assert (out["reports"], out["records"], out["stored"], out["refused"]) == (2, 4, 4, {})
    again = json.loads(mailmon("ingest", "dmarc", str(inbox / "g.xml"), "--json", "--config",
                               str(config)).stdout)  # fmt: skip
    assert (again["stored"], again["duplicates"]) == (0, 3)
    [d] = json.loads(mailmon("dmarc", "summary", "--json", "--config", str(config)).stdout)
    assert (d["domain"], d["messages"], d["passed"], d["pass_rate"]) == ("example.com", 100, 96, 0.96)
    assert d["policy"]["p"] == "reject" and d["dispositions"] == {"none": 96, "reject": 4}
    assert [s["ip"] for s in d["top_sources"]] == ["192.0.2.1", "192.0.2.2", "203.0.113.9"]
    assert d["top_sources"][1]["dkim_aligned"] == 6 and d["top_sources"][1]["spf_aligned"] == 0
    assert [s["ip"] for s in d["unknown_sources"]] == ["203.0.113.9"]
    assert d["tls_sessions"] == {"successful": 50, "failed": 2, "success_rate": 0.9615}
    text = mailmon("dmarc", "summary", "--domain", "example.com", "--config", str(config)).stdout
    assert "DMARC pass 96.0%" in text and "unknown sources" in text
    (inbox / "bad.xml").write_bytes(BILLION_LAUGHS)
    bad = mailmon("ingest", "dmarc", str(inbox / "bad.xml"), "--json", "--config", str(config),
                  check=False)  # fmt: skip
    assert bad.returncode == 1 and json.loads(bad.stdout)["refused"] == {"doctype": 1}
    assert "refused (doctype)" in bad.stderr


def test_summary_resolves_source_names_once(tmp_path: Path) -> None:
    """--resolve asks the configured DNS server for the PTR names of the sources shown,
    all at once, and the next summary takes them from the store."""
    zones = {"2.0.192.in-addr.arpa.": "1 PTR mail-out.example.com.\n2 PTR mta.esp.example.\n"}
    with DNSServer(zones) as server:
        config = _config(tmp_path, f'nameservers = ["127.0.0.1"]\ndns_port = {server.port}\n')
        report = tmp_path / "g.xml"
        report.write_bytes(aggregate([Row("192.0.2.1", 9), Row("192.0.2.2", 1),
                                      Row("192.0.2.3", 1, dkim="fail", spf="fail")]))  # fmt: skip
        mailmon("ingest", "dmarc", str(report), "--config", str(config))
        [d] = json.loads(mailmon("dmarc", "summary", "--resolve", "--json", "--config",
                                 str(config)).stdout)  # fmt: skip
        names = {s["ip"]: s["reverse_dns"] for s in d["top_sources"]}
        assert names == {"192.0.2.1": "mail-out.example.com", "192.0.2.2": "mta.esp.example",
                         "192.0.2.3": None}  # fmt: skip
        asked = server.count("1.2.0.192.in-addr.arpa", "PTR")
        assert asked >= 1
        mailmon("dmarc", "summary", "--resolve", "--json", "--config", str(config))
        assert server.count("1.2.0.192.in-addr.arpa", "PTR") == asked  # cached in the store


def test_directory_job_moves_files_once_read(sqlite_url: str, tmp_path: Path) -> None:
    """The job reads each file old enough, moves it to done/ or failed/, and a second run
    finds nothing; a copy of a stored report dropped later counts nothing on /metrics."""
    reader = Reader(sqlite_url)
    inbox, done, failed = tmp_path / "in", tmp_path / "in" / "done", tmp_path / "failed"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "a.xml").write_bytes(aggregate([Row("192.0.2.1", 7)]))
    (inbox / "sub" / "b.xml.gz").write_bytes((DMARC / "aggregate" / "fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz").read_bytes())
    (inbox / "c.xml").write_bytes(BILLION_LAUGHS)
    fresh = inbox / "d.xml"  # still being written: left for the next run
    fresh.write_bytes(aggregate([Row("192.0.2.4", 1)], report_id="later"))
    past = time.time() - 60
    for f in ("a.xml", "sub/b.xml.gz", "c.xml"):
        os.utime(inbox / f, (past, past))
    summary = scan_directory(reader.reports, inbox, done, failed, min_age_seconds=10)
    assert summary.moved == {"done": 1, "failed": 2} and summary.files == 3  # b: another domain's
    assert sorted(p.name for p in done.rglob("*") if p.is_file()) == ["a.xml"]
    assert sorted(p.name for p in failed.rglob("*") if p.is_file()) == ["b.xml.gz", "c.xml"]
    assert fresh.exists()
    messages = {"header_from": "example.com", "disposition": "none", "dkim_aligned": "true",
                "spf_aligned": "true"}  # fmt: skip
    assert reader.sample("mailmon_dmarc_messages_total", **messages) == 7
    (inbox / "copy.xml").write_bytes(aggregate([Row("192.0.2.1", 7)]))
    os.utime(fresh, (past, past))
    os.utime(inbox / "copy.xml", (past, past))
    second = scan_directory(reader.reports, inbox, done, failed, min_age_seconds=10)
    assert second.moved == {"done": 2}
    assert len(reader.store.records(DmarcRow.kind)) == 2
    assert reader.sample("mailmon_dmarc_messages_total", **messages) == 8
    assert sorted(p.name for p in done.rglob("*") if p.is_file()) == ["a.xml", "copy.xml", "d.xml"]
