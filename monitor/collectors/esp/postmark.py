"""Postmark webhooks: one JSON object per request, its ``RecordType`` says what it is.

Record types and fields: https://postmarkapp.com/developer/webhooks/webhooks-overview
(Delivery, Bounce, SpamComplaint, Open, Click, SubscriptionChange); bounce types:
https://postmarkapp.com/developer/api/bounce-api#bounce-types.  Postmark signs nothing:
the webhook URL carries HTTP Basic credentials (``https://user:password@host/...``),
checked against ``username`` and the secret of ``[webhooks.postmark]``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from typing import Any

from monitor.collectors.esp.base import EspSource, Refused, Webhook, register_webhook
from monitor.collectors.esp.common import (
    address,
    header,
    iso_time,
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

__all__ = ["PostmarkBasicAuth", "PostmarkEvents"]

#: Bounce ``Type`` -> (event, reason Mailmon sets itself or None for the classifier).
#: Types absent here are bounces the classifier reads from ``Details``.
_BOUNCE_TYPES: dict[str, tuple[EventType | None, str | None]] = {
    "Transient": (EventType.DEFERRED, None),  # delayed, Postmark still retries
    "DnsError": (EventType.DEFERRED, None),  # "a temporary DNS error"
    "Unsubscribe": (EventType.UNSUBSCRIBED, None),  # an unsubscribe request by email
    "AutoResponder": (EventType.AUTO_REPLIED, None),
    "ChallengeVerification": (EventType.AUTO_REPLIED, None),
    "AddressChange": (EventType.BOUNCED, "hasmoved"),
    "BadEmailAddress": (EventType.REJECTED, None),  # refused before sending
    "Unconfirmed": (EventType.REJECTED, None),
    "SMTPApiError": (EventType.REJECTED, None),
    "TemplateRenderingFailed": (EventType.REJECTED, None),
    "ManuallyDeactivated": (EventType.SUPPRESSED, "suppressed"),
    "SpamComplaint": (EventType.COMPLAINED, "feedback"),
    # Not about delivering a message of ours: understood, nothing to record.
    "Subscribe": (None, None),
    "OpenRelayTest": (None, None),
    "InboundError": (None, None),
}
_SIMPLE = {
    "Delivery": (EventType.DELIVERED, "DeliveredAt"),
    "Open": (EventType.OPENED, "ReceivedAt"),
    "Click": (EventType.CLICKED, "ReceivedAt"),
}
_DSN_TYPE = re.compile(r"^\s*smtp\s*;\s*", re.I)  # "smtp;550 5.1.1 ...": RFC 3464 diagnostic type


def _tags(record: Mapping[str, Any]) -> tuple[str, ...]:
    pairs: list[tuple[str, Any]] = [
        ("stream", record.get("MessageStream")),  # Postmark's own streams: outbound, broadcast
        ("category", record.get("Tag")),
    ]
    if record.get("RecordType") in ("Bounce", "SpamComplaint"):
        pairs += [("bounce_type", record.get("Type")), ("bounce_code", record.get("TypeCode"))]
    if record.get("RecordType") == "SubscriptionChange":
        pairs += [("suppression_reason", record.get("SuppressionReason")),
                  ("origin", record.get("Origin"))]  # fmt: skip
    metadata = record.get("Metadata")
    for key, value in metadata.items() if isinstance(metadata, Mapping) else ():
        if key in ("stream", "campaign") and text(value):
            pairs.append((key, value))
        elif text(value) is not None:
            pairs.append(("meta", f"{key}={text(value)}"))
    return tags_of(pairs)


def _kind(record: Mapping[str, Any]) -> tuple[EventType | None, str | None, str]:
    """(event type or None for nothing to record, Mailmon's reason, the time field)."""
    record_type = record["RecordType"]
    if record_type in _SIMPLE:
        kind, when = _SIMPLE[record_type]
        return kind, None, when
    if record_type == "SpamComplaint":
        return EventType.COMPLAINED, "feedback", "BouncedAt"
    if record_type == "Bounce":
        kind_of, reason = _BOUNCE_TYPES.get(str(record.get("Type")), (EventType.BOUNCED, None))
        return kind_of, reason, "BouncedAt"
    if record_type == "SubscriptionChange":
        # A suppression for a bounce or a complaint repeats what that record said; a manual
        # one is the recipient (or the sender for them) unsubscribing; a reactivation changes
        # no delivery outcome.
        unsubscribed = (record.get("SuppressSending") is True
                        and record.get("SuppressionReason") == "ManualSuppression")  # fmt: skip
        return (EventType.UNSUBSCRIBED if unsubscribed else None), None, "ChangedAt"
    raise ValueError(f"unknown RecordType {record_type!r}")


class PostmarkEvents(EspSource):
    """One Postmark webhook record -> its event ([] for records that change nothing tracked)."""

    kind = "postmark"

    def events(self, record: Mapping[str, Any], ref: str | None) -> list[Event]:
        kind, reason, time_field = _kind(record)
        if kind is None:
            return []
        if not record.get(time_field):
            raise NotUnderstood(f"a postmark record without {time_field}")
        diagnostic = None
        code = enhanced = None
        if kind in (EventType.DELIVERED, EventType.DEFERRED, EventType.BOUNCED,
                    EventType.REJECTED, EventType.SUPPRESSED):  # fmt: skip
            details = text(record.get("Details"))
            diagnostic = _DSN_TYPE.sub("", details) if details else text(record.get("Description"))
            code, enhanced = reply(diagnostic)
        provider_id = text(record.get("MessageID"))
        blame = "reputation" if kind is EventType.COMPLAINED else None  # as an ARF report says
        event = Event(
            type=kind,
            occurred_at=iso_time(record[time_field]),
            source=self.kind,
            queue_id=provider_id if provider_id and len(provider_id) <= 64 else None,
            provider_message_id=provider_id,
            sender=address(record.get("From")),
            recipient=address(record.get("Recipient") or record.get("Email")),
            reply_code=code,
            enhanced_status=enhanced,
            diagnostic=diagnostic,
            reason=reason,
            blame=blame,
            tags=_tags(record),
            raw_ref=ref,
        )
        return [with_event_id(event, record.get("ID"))]  # a bounce's own id


class PostmarkBasicAuth:
    """HTTP Basic credentials on every request: ``username`` and the secret as password."""

    offline = True  # checks with the key it holds: never waits on the network

    def __init__(self, settings: WebhookSettings) -> None:
        secret = settings.secret("postmark")
        if not secret or not settings.username:
            raise ConfigError("webhooks.postmark: set username and secret_env or secret_file "
                              "(the Basic auth credentials in the webhook's URL)")  # fmt: skip
        self.username = settings.username.encode()
        self.password = secret.encode()

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        given = header(headers, "Authorization")
        if not given:
            raise Refused("bad_auth", 401, "no Authorization header")
        scheme, _, credentials = given.strip().partition(" ")
        try:
            if scheme.lower() != "basic":
                raise ValueError(scheme)
            user, colon, password = base64.b64decode(credentials.strip(), validate=True).partition(
                b":")
        except (ValueError, binascii.Error):
            raise Refused("bad_auth", 401, "not HTTP Basic credentials") from None
        # Both compared, always: how far a guess matched takes no time to tell.
        same_user = hmac.compare_digest(user, self.username)
        same_password = hmac.compare_digest(password, self.password)
        if not (colon and same_user and same_password):
            raise Refused("bad_auth", 401, "wrong credentials")


register_webhook(Webhook("postmark", PostmarkEvents, split_records, PostmarkBasicAuth))
