"""SendGrid (Twilio) Event Webhook: arrays of event objects, signed with ECDSA.

Each POST body is a JSON array of events, one per recipient and happening
(https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event).  With the
signed event webhook on, SendGrid signs ``timestamp + raw body`` with ECDSA P-256 over
SHA-256 and sends the base64 DER signature and the timestamp in
``X-Twilio-Email-Event-Webhook-Signature`` / ``-Timestamp``; the verification key shown
in SendGrid's settings (base64 DER, or PEM) is the secret of ``[webhooks.sendgrid]``
(https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from monitor.collectors.esp.base import EspSource, Refused, Webhook, register_webhook
from monitor.collectors.esp.common import (
    address,
    epoch,
    header,
    message_id,
    reply,
    tags_of,
    text,
    with_event_id,
)
from monitor.collectors.jsonbody import split_records
from monitor.config import WebhookSettings
from monitor.errors import ConfigError
from monitor.model import Event, EventType

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "SendGridEvents", "SendGridSignature"]

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_TYPES = {
    "processed": EventType.SUBMITTED,
    "deferred": EventType.DEFERRED,
    "delivered": EventType.DELIVERED,
    "bounce": EventType.BOUNCED,
    "dropped": EventType.DROPPED,
    "spamreport": EventType.COMPLAINED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
    "unsubscribe": EventType.UNSUBSCRIBED,
    "group_unsubscribe": EventType.UNSUBSCRIBED,
}
#: Understood, nothing Mailmon tracks changes (a resubscribe undoes no delivery outcome).
_QUIET = frozenset({"group_resubscribe", "account_status_change"})

#: SendGrid's drop reasons (its "dropped" event documentation) -> (type, reason): mail to
#: an address on one of the account's suppression lists is suppressed, the rest dropped.
_DROPS = (
    ("bounced address", EventType.SUPPRESSED, "suppressed"),
    ("unsubscribed address", EventType.SUPPRESSED, "suppressed"),
    ("spam reporting address", EventType.SUPPRESSED, "suppressed"),
    ("invalid", EventType.DROPPED, "userunknown"),  # "Invalid", "Invalid Address"
    ("spam content", EventType.DROPPED, "spamdetected"),
)

#: Fields SendGrid itself sets; any other top-level key is the sender's unique (custom) arg.
_OWN_FIELDS = frozenset(
    """email timestamp smtp-id event category sg_event_id sg_message_id reason status response
    attempt useragent ip url url_offset asm_group_id tls cert_err type bounce_classification
    marketing_campaign_id marketing_campaign_name marketing_campaign_version
    marketing_campaign_split_id post_type sg_user_id pool newsletter mc_stats phase_id send_at
    sg_content_type sg_template_id sg_template_name singlesend_id singlesend_name
    template_hash template_id template_version_id sg_machine_open unique_args""".split()
)
#: Unique args named like a stream tag keep that name (``stats --by stream`` reads them).
_STREAM_ARGS = frozenset({"stream", "campaign"})
#: "<X-Message-Id>.filter0425p1mdw1.13037.57168B4A1D.0" (also ".stfilter-015", ".filter-406")
_X_MESSAGE_ID = re.compile(r"(.{1,64}?)\.[a-z]*filter")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())  # immutable: one for every check
_SENT_BY_US = frozenset({EventType.SUBMITTED, EventType.DELIVERED, EventType.DEFERRED,
                         EventType.BOUNCED})  # fmt: skip


def _tags(record: Mapping[str, Any], name: str) -> tuple[str, ...]:
    pairs: list[tuple[str, Any]] = []
    if name == "bounce":
        pairs.append(("bounce_type", record.get("type") or "bounce"))
        pairs.append(("bounce_classification", record.get("bounce_classification")))
    categories = record.get("category")
    for category in categories if isinstance(categories, list) else [categories]:
        pairs.append(("category", category))
    pairs.append(("campaign", record.get("marketing_campaign_name")))
    pairs.append(("campaign", record.get("singlesend_name")))
    pairs.append(("asm_group", record.get("asm_group_id")))
    pool = record.get("pool")
    if isinstance(pool, Mapping):
        pairs.append(("ip_pool", pool.get("name")))
    if record.get("sg_machine_open") is True:
        pairs.append(("machine_open", "true"))  # Apple Mail Privacy Protection fetched it
    args = record.get("unique_args")
    extra = args.items() if isinstance(args, Mapping) else ()
    if not extra and record.keys() <= _OWN_FIELDS:
        return tags_of(pairs)  # SendGrid's own fields only (most records): no custom args
    for key, value in [*record.items(), *extra]:
        if key in _STREAM_ARGS:
            pairs.append((key, value))
        elif key not in _OWN_FIELDS and text(value) is not None:
            pairs.append(("meta", f"{key}={text(value)}"))
    return tags_of(pairs)


def _dropped(reason: str | None) -> tuple[EventType, str]:
    lowered = (reason or "").lower()
    for start, kind, vocabulary in _DROPS:
        if lowered.startswith(start):
            return kind, vocabulary
    return EventType.DROPPED, "undefined"


class SendGridEvents(EspSource):
    """One SendGrid event object -> its event ([] for resubscribes and account events)."""

    kind = "sendgrid"

    def events(self, record: Mapping[str, Any], ref: str | None) -> list[Event]:
        name = str(record["event"]).strip().lower()
        if name in _QUIET:
            return []
        kind = _TYPES[name]
        when = epoch(record["timestamp"])
        reason = hard = blame = None
        diagnostic = text(record.get("response")) or text(record.get("reason"))
        if kind in (EventType.BOUNCED, EventType.DEFERRED, EventType.DELIVERED):
            code, enhanced = reply(diagnostic, record.get("status"))
        else:
            code, enhanced = None, None
        if kind is EventType.DROPPED:
            kind, reason = _dropped(diagnostic)
        elif kind is EventType.BOUNCED and text(record.get("type")) == "blocked":
            hard = False  # SendGrid: the server refused this message, not the address
        elif kind is EventType.COMPLAINED:
            reason, blame = "feedback", "reputation"  # as an ARF report says it
        if kind not in (EventType.BOUNCED, EventType.DEFERRED, EventType.DELIVERED,
                        EventType.DROPPED, EventType.SUPPRESSED):  # fmt: skip
            diagnostic = None
        provider_id = text(record.get("sg_message_id"))
        # The first part of sg_message_id is the message's X-Message-Id, the same for every
        # recipient of one send: the delivery row's key when there is no smtp-id.
        found = _X_MESSAGE_ID.match(provider_id) if provider_id else None
        attempt = text(record.get("attempt"))
        event = Event(
            type=kind,
            occurred_at=when,
            source=self.kind,
            message_id=message_id(record.get("smtp-id")),
            queue_id=found.group(1) if found else None,
            provider_message_id=provider_id,
            recipient=address(record.get("email")),
            sending_ip=text(record.get("ip")) if kind in _SENT_BY_US else None,
            reply_code=code,
            enhanced_status=enhanced,
            diagnostic=diagnostic,
            reason=reason,
            hard=hard,
            blame=blame,
            attempt=int(attempt) if attempt and attempt.isdigit() else None,
            tags=_tags(record, name),
            raw_ref=ref,
        )
        # The event name and bounce type too: documentation examples share placeholder ids.
        own = f"{name}/{text(record.get('type')) or ''}/{text(record.get('sg_event_id')) or ''}"
        return [with_event_id(event, own)]


def _public_key(secret: str) -> ec.EllipticCurvePublicKey:
    """The verification key, base64 DER (as SendGrid shows it) or PEM."""
    try:
        if "-----BEGIN" in secret:
            key = load_pem_public_key(secret.encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(secret.split()), validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ConfigError(f"webhooks.sendgrid: the secret is not a public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError("webhooks.sendgrid: the secret is not an ECDSA P-256 public key")
    return key


class SendGridSignature:
    """Checks the signed event webhook's ECDSA signature over timestamp + raw body."""

    offline = True  # checks with the key it holds: never waits on the network

    def __init__(
        self, settings: WebhookSettings, clock: Callable[[], float] = time.time
    ) -> None:
        secret = settings.secret("sendgrid")
        if secret is None:
            raise ConfigError(
                "webhooks.sendgrid: the verification key is needed (secret_env or secret_file)"
            )
        self.key = _public_key(secret)
        self.tolerance = settings.tolerance_seconds
        self.clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        signature = header(headers, SIGNATURE_HEADER)
        stamp = header(headers, TIMESTAMP_HEADER)
        if not signature or not stamp:
            raise Refused("bad_signature", 401, "no signature headers")
        try:
            raw = base64.b64decode(signature.strip(), validate=True)
            moment = float(stamp.strip())
            if not math.isfinite(moment):
                raise ValueError(stamp)
        except (ValueError, binascii.Error):
            raise Refused("bad_signature", 401, "unreadable signature headers") from None
        try:
            self.key.verify(raw, stamp.encode() + body, _ECDSA_SHA256)
        except InvalidSignature:
            raise Refused("bad_signature", 403) from None
        # Checked after the signature, so a forged timestamp is a bad signature, not stale.
        if abs(self.clock() - moment) > self.tolerance:
            raise Refused("stale", 403, "timestamp outside the tolerance")


register_webhook(Webhook("sendgrid", SendGridEvents, split_records, SendGridSignature))
