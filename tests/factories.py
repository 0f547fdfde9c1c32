"""Small builders for events in tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.model import Event, EventType

T0 = datetime(2026, 3, 4, 10, 0, 0, tzinfo=UTC)


def ev(kind: str, minutes: float = 0, **fields: Any) -> Event:
    """An event ``minutes`` after T0 with sensible defaults for one Postfix message."""
    defaults: dict[str, Any] = {
        "source": "postfix:mx1",
        "queue_id": "4B1C2D3E4F",
        "message_id": "abc123@app.example",
        "sender": "noreply@app.example",
        "recipient": "alice@gmail.com",
    }
    defaults.update(fields)
    return Event(type=EventType(kind), occurred_at=T0 + timedelta(minutes=minutes), **defaults)
