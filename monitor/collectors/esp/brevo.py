"""Brevo (ex-Sendinblue) transactional webhooks -> events (``POST /webhooks/brevo``).

A body is one JSON event, ``{"event": "delivered", "email": ..., "message-id": ...}``
(https://developers.brevo.com/docs/transactional-webhooks).  Brevo signs nothing: a
webhook carries the credential it was created with, HTTP Basic (user and password in
its URL) or a bearer token (``auth: {type: bearer, token}``); see
:mod:`monitor.collectors.esp.httpauth`.

Times: ``ts_event`` is the event's UNIX second; older payloads and django-anymail's
fixtures carry only ``ts_epoch`` (milliseconds, in some documentation examples seconds)
or ``ts``.  ``date`` is Brevo's local time (CET/CEST) and is not read.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from monitor.collectors.esp.base import EspSource, Webhook, register_webhook
from monitor.collectors.esp.common import (
    address,
    epoch,
    message_id,
    reply,
    tags_of,
    text,
)
from monitor.collectors.esp.httpauth import BasicOrBearer
from monitor.collectors.jsonbody import split_records
from monitor.model import Event, EventType

__all__ = ["BrevoEvents"]

_TYPES = {
    "request": EventType.SUBMITTED,
    "delivered": EventType.DELIVERED,
    "deferred": EventType.DEFERRED,
    "soft_bounce": EventType.BOUNCED,
    "hard_bounce": EventType.BOUNCED,
    "blocked": EventType.SUPPRESSED,  # Brevo refused to send: the address is on a blocklist
    "invalid_email": EventType.DROPPED,  # Brevo refused to send: the address is not valid
    "error": EventType.REJECTED,
    "spam": EventType.COMPLAINED,
    "complaint": EventType.COMPLAINED,
    "opened": EventType.OPENED,
    "unique_opened": EventType.OPENED,
    "proxy_open": EventType.OPENED,
    "unique_proxy_open": EventType.OPENED,
    "click": EventType.CLICKED,
    "unsubscribed": EventType.UNSUBSCRIBED,
    "unsubscribe": EventType.UNSUBSCRIBED,
}
#: Brevo's own verdicts, the only information there is: (reason, blame).
_VERDICTS = {
    "blocked": ("suppressed", "policy"),
    "invalid_email": ("userunknown", "recipient"),
    "spam": ("feedback", "reputation"),
    "complaint": ("feedback", "reputation"),
}
#: The times an event may carry, the event's own first.
_TIMES = ("ts_event", "ts_epoch", "s_epoch", "ts")
_STREAM_KEYS = frozenset({"stream", "category", "campaign"})
_FAILURES = frozenset({EventType.DEFERRED, EventType.BOUNCED, EventType.SUPPRESSED,
                       EventType.DROPPED, EventType.REJECTED})  # fmt: skip


def _tag_list(record: Mapping[str, Any]) -> list[Any]:
    """``tags`` (a list), else ``tag``: a list, a JSON-encoded list, or one tag."""
    tags = record.get("tags")
    if isinstance(tags, list):
        return tags
    tag = record.get("tag")
    if isinstance(tag, str) and tag.strip().startswith("["):
        with contextlib.suppress(ValueError):
            tag = json.loads(tag)
    return tag if isinstance(tag, list) else [tag]


def _tags(record: Mapping[str, Any], name: str) -> tuple[str, ...]:
    pairs: list[tuple[str, Any]] = []
    if name in ("soft_bounce", "hard_bounce", "blocked", "invalid_email", "error"):
        pairs.append(("bounce_type", name))
    if "proxy" in name:
        pairs.append(("machine_open", "true"))  # a privacy proxy fetched it, not a reader
    pairs += [("category", tag) for tag in _tag_list(record)]
    pairs.append(("template", record.get("template_id")))
    custom = record.get("X-Mailin-custom")
    try:  # the sender's X-Mailin-custom header: JSON metadata, or any text
        parsed = json.loads(custom) if isinstance(custom, str) else None
    except ValueError:
        parsed = None
    if isinstance(parsed, Mapping):
        for key, value in parsed.items():
            if key in _STREAM_KEYS:
                pairs.append((str(key), value))
            elif text(value) is not None:
                pairs.append(("meta", f"{key}={text(value)}"))
    elif text(custom) is not None:
        pairs.append(("meta", f"custom={text(custom)}"))
    return tags_of(pairs)


def _ip(value: Any) -> str | None:
    """A sending IP, when it is one (documentation examples show "xxx.xxx.xxx.xxx")."""
    found = text(value)
    try:
        return str(ipaddress.ip_address(found)) if found else None
    except ValueError:
        return None


class BrevoEvents(EspSource):
    """One Brevo event -> its event."""

    kind = "brevo"

    def events(self, record: Mapping[str, Any], ref: str | None) -> list[Event]:
        name = str(record["event"])
        kind = _TYPES[name]
        stamp = next((record[k] for k in _TIMES if record.get(k) not in (None, "")), None)
        diagnostic = text(record.get("reason")) if kind in _FAILURES else None
        code, status = reply(diagnostic)
        reason, blame = _VERDICTS.get(name, (None, None))
        # Brevo's verdict on the address, beside the reason the classifier reads in the text.
        hard = name == "hard_bounce" if kind is EventType.BOUNCED else None
        found = message_id(record.get("message-id"))
        self.carry([("subject", record.get("subject"))])
        return [
            Event(
                type=kind,
                occurred_at=epoch(stamp),
                source=self.kind,
                message_id=found,
                provider_message_id=found,  # Brevo names a message by its Message-ID
                sender=address(record.get("sender_email")),
                recipient=address(record.get("email")),
                sending_ip=_ip(record.get("sending_ip")) if kind not in (
                    EventType.OPENED, EventType.CLICKED, EventType.UNSUBSCRIBED) else None,
                reply_code=code,
                enhanced_status=status,
                diagnostic=diagnostic,
                reason=reason,
                hard=hard,
                blame=blame,
                tags=_tags(record, name),
                raw_ref=ref,
            )
        ]


register_webhook(Webhook("brevo", BrevoEvents, split_records, BasicOrBearer.named("brevo")))
