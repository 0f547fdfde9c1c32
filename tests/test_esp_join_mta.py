"""The ESP's events join the MTA's: a message our Postfix relayed to SendGrid, then SendGrid's
own events for it, are one delivery, found by its Message-ID (issue 18, "the ESP's message id
joins the MTA's Message-ID where both are known")."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.cli import main

AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
T0 = int(AT.timestamp())
MTA_LOG = """\
2026-12-01T10:00:00.000000+00:00 mx-out1 postfix/cleanup[2104]: 4F2A1C0412: message-id=<join-1@app.example>
2026-12-01T10:00:00.000000+00:00 mx-out1 postfix/qmgr[1875]: 4F2A1C0412: from=<news@app.example>, size=4000, nrcpt=1 (queue active)
2026-12-01T10:00:01.000000+00:00 mx-out1 postfix/smtp[2110]: 4F2A1C0412: to=<dana@gmail.com>, relay=smtp.sendgrid.net[167.89.0.1]:587, delay=1, delays=0.1/0.1/0.3/0.5, dsn=2.0.0, status=sent (250 Ok: queued as wrfRRvF7Q0GgwUo2CvDmEA)
2026-12-01T10:00:01.000000+00:00 mx-out1 postfix/qmgr[1875]: 4F2A1C0412: removed
"""


def _sendgrid(event: str, offset: int, **fields: object) -> dict[str, object]:
    return {"email": "dana@gmail.com", "timestamp": T0 + offset, "smtp-id": "<join-1@app.example>",
            "event": event, "sg_event_id": f"{event}-1", "category": ["newsletter"],
            "sg_message_id": "wrfRRvF7Q0GgwUo2CvDmEA.filter0001.1.0", **fields}  # fmt: skip


def test_the_esps_events_join_the_mtas_delivery_by_message_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILMON_RESOLVE_MX", "0")
    db = f"sqlite:///{tmp_path / 'm.db'}"
    (tmp_path / "mta.log").write_text(MTA_LOG)
    (tmp_path / "sendgrid.json").write_text(json.dumps([
        _sendgrid("processed", 2),
        _sendgrid("delivered", 5, response="250 2.0.0 OK 1764583210 a1si1 - gsmtp"),
        _sendgrid("open", 300),
    ]))  # fmt: skip
    assert main(["ingest", "postfix", str(tmp_path / "mta.log"), "--db", db, "--no-progress"]) == 0
    assert main(["ingest", "sendgrid", str(tmp_path / "sendgrid.json"), "--db", db,
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    for query in ("<join-1@app.example>", "4F2A1C0412"):  # its Message-ID, the MTA's queue id
        assert main(["trace", query, "--db", db, "--json"]) == 0
        [delivery] = json.loads(capsys.readouterr().out)["deliveries"]
        assert (delivery["message_id"], delivery["recipient"]) == ("join-1@app.example", "dana@gmail.com")
        assert delivery["state"] == "delivered"
        timeline = [(e["source"], e["type"]) for e in delivery["events"]]
        assert timeline == [("postfix:mx-out1", "submitted"), ("postfix:mx-out1", "delivered"),
                            ("sendgrid", "submitted"), ("sendgrid", "delivered"),
                            ("sendgrid", "opened")]  # fmt: skip
        # The ESP's own message id is kept on its events beside the shared Message-ID.
        assert {e["provider_message_id"] for e in delivery["events"] if e["source"] == "sendgrid"} == {
            "wrfRRvF7Q0GgwUo2CvDmEA.filter0001.1.0"}
