"""``mailmon ingest exim``, ``stats`` and ``trace`` on an Exim mainlog, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import mailmon

DATA = Path(__file__).parent / "data" / "exim"


def test_ingest_exim_then_stats_and_trace(tmp_path: Path) -> None:
    """An Exim mainlog ingests into per-domain numbers and a timeline per recipient."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    logs = [str(DATA / f"{case}.log") for case in ("deferred_then_delivered", "bounced", "expired")]
    summary = json.loads(mailmon("ingest", "exim", *logs, "--db", db, "--json").stdout)
    assert summary["lines"] == 24 and summary["unparsed_lines"] == 0 and summary["failed"] == []
    assert summary["events"] == summary["stored"] == 19
    rows = {r["domain"]: r for r in json.loads(mailmon("stats", "--json", "--db", db).stdout)}
    gmail = {k: rows["gmail.com"][k] for k in ("submitted", "delivered", "bounced", "deferred")}
    assert gmail == {"submitted": 2, "delivered": 1, "bounced": 1, "deferred": 1}
    assert (rows["live.com"]["deferred"], rows["live.com"]["delivered"]) == (2, 1)
    assert (rows["mail.example.net"]["expired"], rows["mail.example.net"]["deferred"]) == (1, 2)
    assert "shop.example.com" not in rows  # our own bounce notices only with --include-ndr

    trace = json.loads(
        mailmon("trace", "welcome-88213@shop.example.com", "--json", "--db", db).stdout
    )
    leo = next(d for d in trace["deliveries"] if d["recipient"] == "leo@live.com")
    assert [e["type"] for e in leo["events"]] == ["submitted", "deferred", "deferred", "delivered"]
    assert leo["state"] == "delivered" and leo["queue_id"] == "1vR9aa-000BxD-Kq"
    by_queue_id = json.loads(mailmon("trace", "1vR9aa-000BxD-Kq", "--json", "--db", db).stdout)
    assert by_queue_id["deliveries"] == trace["deliveries"]

    again = json.loads(mailmon("ingest", "exim", *logs, "--db", db, "--json").stdout)
    assert (again["stored"], again["duplicates"]) == (0, 19)
