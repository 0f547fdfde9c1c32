"""A small store for the read API's tests: a few messages, their counters, two incidents."""

from __future__ import annotations

from datetime import timedelta

from factories import T0, ev

from monitor.model import Event
from monitor.rollup.incidents import open_incident
from monitor.store import Store
from monitor.store.schema import incidents

TOKEN = "s3cret-api-token"
#: The rollups are read at this time: T0 + 10 minutes, every event before it.
AT = (T0 + timedelta(minutes=10)).timestamp()
SLASHED = "a/b+c@app.example"  # Message-IDs may hold "/" (RFC 5322 dot-atom-text)


def events() -> list[Event]:
    """abc123: delivered to alice, deferred then delivered to bob (both Gmail); m2: bounced at
    Outlook 8 minutes in; m3 (a Message-ID with a slash): delivered 2 hours before."""
    gmail = {"provider": "google"}
    return [
        ev("submitted", 0, recipient="alice@gmail.com", **gmail),
        ev("delivered", 1, recipient="alice@gmail.com", reply_code=250, **gmail),
        ev("submitted", 0, recipient="bob@gmail.com", **gmail),
        ev("deferred", 1, recipient="bob@gmail.com", reply_code=421, enhanced_status="4.7.28",
           diagnostic="421-4.7.28 try again later", reason="blocked", attempt=1, **gmail),
        ev("delivered", 6, recipient="bob@gmail.com", reply_code=250, attempt=2, **gmail),
        ev("submitted", 8, queue_id="5C2D3E4F5A", message_id="m2@app.example",
           recipient="carol@outlook.com", provider="microsoft"),
        ev("bounced", 8, queue_id="5C2D3E4F5A", message_id="m2@app.example",
           recipient="carol@outlook.com", provider="microsoft", reply_code=550,
           enhanced_status="5.1.1", reason="userunknown", hard=True),
        ev("delivered", -120, queue_id="6D3E4F5A6B", message_id=SLASHED,
           recipient="alice@gmail.com", provider="google"),
    ]  # fmt: skip


def fill(store: Store) -> None:
    """The events, an open domain_rejecting incident at Gmail and a closed one at Outlook."""
    store.write(events())
    with store.engine.begin() as conn:
        open_incident(conn, "domain_rejecting", "google", "gmail.com", AT - 300,
                      {"windows": {"5m": {"rejecting": 3}}})  # fmt: skip
        conn.execute(incidents.insert().values(
            kind="domain_rejecting", provider="microsoft", domain="outlook.com",
            started_at=AT - 3600, ended_at=AT - 1800, evidence="{}"))  # fmt: skip
