"""Mailgun webhooks -> events (``POST /webhooks/mailgun``).

A request body is one JSON object, ``{"signature": {"timestamp", "token", "signature"},
"event-data": {...}}``; ``signature`` is the hex HMAC-SHA256 of ``timestamp + token``
with the domain's HTTP webhook signing key ("Securing Webhooks",
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks).
The signature covers the timestamp and token only, not the event: a fresh timestamp and
a token seen once are what keep a captured signature from carrying other events.

Event data: "Webhook Payloads" and "Events" in the same manual.  ``failed`` is a
deferral (``severity: temporary``) or a final failure (``permanent``): a bounce, a
suppression-list drop (``reason: suppress-*``), or Mailgun giving up retrying
(``reason: old``).  ``mailmon ingest mailgun FILE`` takes webhook bodies, bare
``event-data`` objects, or pages of the Events API (``{"items": [...]}``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from email.utils import parseaddr
from typing import Any

from monitor.collectors.esp.base import EspSource, Refused, Webhook, register_webhook
from monitor.collectors.esp.common import (
    address,
    epoch,
    mapping,
    message_id,
    number,
    reply,
    tags_of,
    text,
    with_event_id,
)
from monitor.collectors.jsonbody import split_records
from monitor.collectors.source import NotUnderstood
from monitor.config import WebhookSettings
from monitor.errors import ConfigError
from monitor.model import Event, EventType

__all__ = ["MailgunEvents", "MailgunSignature", "split"]

_TYPES = {
    "accepted": EventType.SUBMITTED,
    "delivered": EventType.DELIVERED,
    "rejected": EventType.REJECTED,
    "complained": EventType.COMPLAINED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
    "unsubscribed": EventType.UNSUBSCRIBED,
}
#: Events that say nothing about a delivery (inbound storage, mailing-list uploads).
_QUIET = frozenset({"stored", "list_member_uploaded", "list_member_upload_error", "list_uploaded"})
#: Permanent ``failed`` reasons that are Mailgun's own refusal to send: its suppression lists.
_SUPPRESSED = frozenset({"suppress-bounce", "suppress-unsubscribe", "suppress-complaint"})
#: A permanent ``failed`` after Mailgun stopped retrying: the message was too old.
_EXPIRED = frozenset({"old"})
#: User variables named like a stream tag keep that name (``stats --by stream`` reads them).
_STREAM_VARIABLES = frozenset({"stream", "category", "campaign"})


def _tags(data: Mapping[str, Any], failed: bool) -> tuple[str, ...]:
    pairs: list[tuple[str, Any]] = []
    if failed:  # Mailgun's own verdict, beside the reply the classifier reads
        pairs += [("bounce_type", data.get("severity")), ("bounce_subtype", data.get("reason"))]
    tags = data.get("tags")
    for tag in tags if isinstance(tags, list) else [tags]:
        if tag != "*":  # "*": an unsubscribe from every tag, not a category
            pairs.append(("category", tag))
    for campaign in data.get("campaigns") or []:
        if isinstance(campaign, Mapping):
            pairs.append(("campaign", campaign.get("name") or campaign.get("id")))
    for key, value in mapping(data.get("user-variables")).items():
        if key in _STREAM_VARIABLES:
            pairs.append((key, value))
        elif text(value) is not None:
            pairs.append(("meta", f"{key}={text(value)}"))
    return tags_of(pairs)


class MailgunEvents(EspSource):
    """One ``event-data`` object (or a webhook body holding one) -> its event."""

    kind = "mailgun"

    def events(self, record: Mapping[str, Any], ref: str | None) -> list[Event]:
        data = record.get("event-data", record)
        if not isinstance(data, Mapping) or "event" not in data:
            raise NotUnderstood("no event-data")
        name = data["event"]
        if name in _QUIET:
            return []
        status = mapping(data.get("delivery-status"))
        code = number(status.get("code"))
        code = code if code is not None and 200 <= code <= 599 else None  # 498, 605: Mailgun's own
        severity, why = text(data.get("severity")), text(data.get("reason"))
        verdict = None
        if name == "failed":
            temporary = severity == "temporary" if severity else code is not None and code < 500
            kind = EventType.DEFERRED if temporary else EventType.BOUNCED
            if not temporary and why in _SUPPRESSED:
                kind, verdict = EventType.SUPPRESSED, "suppressed"
            elif not temporary and why in _EXPIRED:
                kind = EventType.EXPIRED
        else:
            kind = _TYPES[name]  # another name: not understood
        blame = None
        if kind is EventType.COMPLAINED:
            verdict, blame = "feedback", "reputation"  # as an ARF report says it
        headers = mapping(mapping(data.get("message")).get("headers"))
        envelope = mapping(data.get("envelope"))
        said = status
        if kind is EventType.REJECTED:
            said = mapping(data.get("reject"))
            said = {"message": said.get("reason"), "description": said.get("description")}
        texts = (text(said.get("message")), text(said.get("description")))
        diagnostic = " ".join(t for t in dict.fromkeys(texts) if t) or None
        enhanced = reply(diagnostic, status.get("enhanced-code"))[1]
        found = message_id(headers.get("message-id"))
        where = text(mapping(data.get("domain")).get("name"))
        delivered = kind is EventType.DELIVERED
        event = Event(
            type=kind,
            occurred_at=epoch(data["timestamp"]),
            source=f"mailgun:{where}" if where else "mailgun",
            message_id=found,
            provider_message_id=found,  # Mailgun names a message by its Message-ID
            sender=address(envelope.get("sender")) or _from(headers.get("from")),
            # A rejected message has no recipient of its own: its To header says who.
            recipient=address(data.get("recipient")) or (_from(headers.get("to"))
                                                          if kind is EventType.REJECTED else None),
            relay=text(status.get("mx-host")),
            sending_ip=text(envelope.get("sending-ip")),
            reply_code=code,
            enhanced_status=None if delivered else enhanced,
            diagnostic=None if delivered else diagnostic,
            reason=verdict,
            blame=blame,
            attempt=number(status.get("attempt-no")),
            size_bytes=number(mapping(data.get("message")).get("size")),
            tags=_tags(data, name == "failed"),
            raw_ref=ref,
        )
        self.carry(headers.items())  # message-id, subject; thread headers when Mailgun lists them
        # Mailgun's event id (unique within a day) with the fields: two opens in one
        # microsecond stay two, and documentation placeholders do not merge events.
        return [with_event_id(event, f"{name}/{text(data.get('id')) or ''}")]


def _from(value: Any) -> str | None:
    """The address of a From or To header ("Name <a@example.com>"); None without one."""
    found = parseaddr(text(value) or "")[1]
    return address(found) if "@" in found else None


def split(body: str) -> Iterator[Any]:
    """The records of a body or export: webhook bodies, event objects, Events API pages."""
    for record in split_records(body):
        items = record.get("items") if isinstance(record, Mapping) else None
        if isinstance(items, list) and "event" not in record:
            yield from items
        else:
            yield record


class MailgunSignature:
    """Checks the ``signature`` block of a webhook body.

    A signed timestamp further than ``tolerance_seconds`` from the clock is ``stale``.
    The tokens of the bodies taken are remembered (per process, at most ``max_tokens`` and
    none older than the tolerance, which refuses them anyway), each with a digest of its
    event: the same token with another event is ``replayed`` (a captured signature reused).
    The same token with the same event is Mailgun retrying a delivery whose answer it
    did not get, and passes: its events are duplicates, so it changes nothing, and
    refusing it would lose the event when the first attempt failed after this check.
    """

    offline = True  # checks with the key it holds: never waits on the network

    def __init__(self, settings: WebhookSettings, *, clock: Callable[[], float] = time.time,
                 max_tokens: int = 50_000) -> None:  # fmt: skip
        key = settings.secret("mailgun")
        if not key:
            raise ConfigError("webhooks.mailgun: set secret_env or secret_file (the signing key)")
        self.key = key.encode()
        self.tolerance = settings.tolerance_seconds
        self.clock = clock
        self.max_tokens = max_tokens
        self._seen: OrderedDict[str, tuple[float, str]] = OrderedDict()  # token -> (time, digest)
        self._lock = threading.Lock()

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise Refused("bad_signature", 401, "body is not JSON: no signature block") from None
        block = document.get("signature") if isinstance(document, dict) else None
        if not isinstance(block, dict):
            raise Refused("bad_signature", 401, "no signature block")
        stamp, token, given = (block.get(k) for k in ("timestamp", "token", "signature"))
        if not (isinstance(stamp, str | int) and isinstance(token, str) and isinstance(given, str)):
            raise Refused("bad_signature", 401, "incomplete signature block")
        expected = hmac.new(self.key, f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
        presented = given.strip().lower().encode("utf-8", "replace")
        if not hmac.compare_digest(expected.encode(), presented):
            raise Refused("bad_signature", 403, "signature does not match")
        try:
            signed_at = float(stamp)
        except ValueError:
            raise Refused("bad_signature", 401, "timestamp is not a number") from None
        now = self.clock()
        if not math.isfinite(signed_at) or abs(now - signed_at) > self.tolerance:
            raise Refused("stale", 403, "timestamp outside the tolerance")
        event = json.dumps(document.get("event-data"), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(event.encode()).hexdigest()
        with self._lock:
            self._forget(now)
            seen = self._seen.get(token)
            if seen is not None and not hmac.compare_digest(seen[1], digest):
                raise Refused("replayed", 403, "token already used for another event")
            self._seen[token] = (signed_at, digest)
            if len(self._seen) > self.max_tokens:
                self._seen.popitem(last=False)

    def _forget(self, now: float) -> None:
        """Drop the tokens whose timestamps the freshness check refuses anyway."""
        while self._seen:
            token, (signed_at, _) = next(iter(self._seen.items()))
            if now - signed_at <= self.tolerance:
                return
            del self._seen[token]


register_webhook(Webhook("mailgun", MailgunEvents, split, MailgunSignature))
