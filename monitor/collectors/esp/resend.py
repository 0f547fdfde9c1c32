"""Resend webhooks -> events (``POST /webhooks/resend``).

A body is one JSON event, ``{"type": "email.delivered", "created_at": ..., "data": {...}}``
(https://resend.com/docs/dashboard/webhooks/event-types).  Resend delivers through Svix,
which signs ``{svix-id}.{svix-timestamp}.{raw body}`` with HMAC-SHA256; the key is the
base64 after ``whsec_`` in the signing secret, and ``svix-signature`` holds one or more
space-separated ``v1,<base64>`` signatures, any of which may match
(https://docs.svix.com/receiving/verifying-payloads/how-manual).  The ``webhook-*``
header names of the Standard Webhooks specification are read too.

Resend sends through Amazon SES: ``bounce.type`` is Permanent, Transient or Undetermined
and ``bounce.subType`` SES's (General, NoEmail, Suppressed, MailboxFull, ...).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from monitor.classify import classify
from monitor.collectors.esp.base import EspSource, Refused, Webhook, register_webhook
from monitor.collectors.esp.common import (
    address,
    header,
    iso_time,
    mapping,
    message_id,
    tags_of,
    text,
)
from monitor.collectors.jsonbody import split_records
from monitor.config import WebhookSettings
from monitor.errors import ConfigError
from monitor.model import Event, EventType

__all__ = ["ResendEvents", "SvixSignature"]

_TYPES = {
    "email.sent": EventType.SUBMITTED,
    "email.delivered": EventType.DELIVERED,
    "email.delivery_delayed": EventType.DEFERRED,
    "email.bounced": EventType.BOUNCED,
    "email.complained": EventType.COMPLAINED,
    "email.opened": EventType.OPENED,
    "email.clicked": EventType.CLICKED,
    "email.failed": EventType.REJECTED,  # Resend did not send it (quota, invalid request)
    "email.suppressed": EventType.SUPPRESSED,
}
#: Understood, nothing Mailmon tracks: a send planned for later, inbound mail, contacts, domains.
_QUIET_PREFIXES = ("email.scheduled", "email.received", "contact.", "domain.")
#: SES bounce subtypes -> the reason to give when no text rule recognises the message
#: (https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html#bounce-types).
_SUBTYPES = {
    "NoEmail": ("userunknown", "recipient"),
    "MailboxFull": ("mailboxfull", "recipient"),
    "MessageTooLarge": ("mesgtoobig", "content"),
    "ContentRejected": ("contenterror", "content"),
    "AttachmentRejected": ("contenterror", "content"),
}
#: Subtypes that are a suppression list refusing the address, not a receiver's answer.
_SUPPRESSIONS = frozenset({"Suppressed", "OnAccountSuppressionList"})
#: Permanent subtypes that are about the message, not the address: never hard.
_NOT_THE_ADDRESS = frozenset({"MessageTooLarge", "ContentRejected", "AttachmentRejected"})
#: The classifier's rules that decide without the text (see sparkpost.py).
_CODE_ONLY = ("rfc5321.", "fallback.")
_STREAM_KEYS = frozenset({"stream", "category", "campaign"})


def _tags(data: Mapping[str, Any], bounce: Mapping[str, Any]) -> tuple[str, ...]:
    pairs: list[tuple[str, Any]] = [("bounce_type", bounce.get("type")),
                                    ("bounce_subtype", bounce.get("subType"))]  # fmt: skip
    pairs.append(("suppression", mapping(data.get("suppressed")).get("type")))
    raw = data.get("tags")
    # An object of name -> value (the documented form), or a list of {name, value}.
    items = raw if isinstance(raw, list) else []
    named = raw.items() if isinstance(raw, Mapping) else (
        (mapping(t).get("name"), mapping(t).get("value")) for t in items)
    for key, value in named:
        if key in _STREAM_KEYS:
            pairs.append((str(key), value))
        elif text(key) is not None and text(value) is not None:
            pairs.append(("meta", f"{key}={text(value)}"))
    pairs.append(("broadcast", data.get("broadcast_id")))
    pairs.append(("template", data.get("template_id")))
    return tags_of(pairs)


def _headers(data: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The headers a sent event lists (``[{"name", "value"}]``), when it does."""
    headers = data.get("headers")
    return [(str(mapping(item).get("name", "")), mapping(item).get("value"))
            for item in (headers if isinstance(headers, list) else [])]  # fmt: skip


def _message_id(data: Mapping[str, Any]) -> str | None:
    """The RFC Message-ID: ``data.message_id`` (every email event since 2026-07, Resend's
    changelog "Email Threading with Message-ID"), else among the headers a sent event lists."""
    found = message_id(data.get("message_id"))
    if found:
        return found
    for name, value in _headers(data):
        if name.lower() == "message-id":
            return message_id(value)
    return None


class ResendEvents(EspSource):
    """One Resend event -> an event per recipient in ``data.to``."""

    kind = "resend"

    def events(self, record: Mapping[str, Any], ref: str | None) -> list[Event]:
        name = str(record["type"])
        if name.startswith(_QUIET_PREFIXES):
            return []
        kind = _TYPES[name]
        data = record["data"]
        bounce = mapping(data.get("bounce"))
        click = mapping(data.get("click"))
        when = iso_time(click.get("timestamp") or record["created_at"])
        said = (bounce, mapping(data.get("suppressed")), mapping(data.get("failed")))
        diagnostic = next(filter(None, (text(part.get(k)) for part in said
                                        for k in ("message", "reason"))), None)  # fmt: skip
        severity, subtype = text(bounce.get("type")), text(bounce.get("subType"))
        reason = blame = rule = None
        hard: bool | None = None
        if kind is EventType.BOUNCED:
            if subtype in _SUPPRESSIONS or (
                    subtype is None and "has suppressed sending" in (diagnostic or "").lower()):
                kind = EventType.SUPPRESSED  # older events said so only in the message
            elif severity == "Transient":
                hard = False  # SES gave up on a temporary failure: not the address
            elif severity == "Permanent":
                hard = subtype not in _NOT_THE_ADDRESS
            vague = classify(None, None, diagnostic).rule.startswith(_CODE_ONLY)
            if subtype in _SUBTYPES and vague:
                reason, blame = _SUBTYPES[subtype]
                rule = f"resend.bounce_subtype.{subtype}"
        if kind is EventType.SUPPRESSED:
            reason, blame, hard = "suppressed", "policy", None
        elif kind is EventType.COMPLAINED:
            reason, blame = "feedback", "reputation"  # as an ARF report says it
        email_id = text(data.get("email_id"))
        recipients = data.get("to")
        recipients = recipients if isinstance(recipients, list) else [recipients]
        if kind in (EventType.DELIVERED, EventType.OPENED, EventType.CLICKED):
            diagnostic = None
        tags = _tags(data, bounce)
        self.carry([("subject", data.get("subject")), *_headers(data)])
        return [
            Event(
                type=kind,
                occurred_at=when,
                source=self.kind,
                message_id=_message_id(data),
                queue_id=email_id if email_id and len(email_id) <= 64 else None,
                provider_message_id=email_id,
                sender=_address(data.get("from")),
                recipient=recipient,
                diagnostic=diagnostic,
                reason=reason,
                hard=hard,
                blame=blame,
                rule=rule,
                tags=tags,
                raw_ref=ref,
            )
            for recipient in dict.fromkeys(map(_address, recipients))
            if recipient
        ]


def _address(value: Any) -> str | None:
    """The address of "Name <a@example.com>" or of a bare address."""
    found = text(value)
    if found is None:
        return None
    inside = found[found.find("<") + 1 : found.rfind(">")] if "<" in found else found
    return address(inside) if "@" in inside else None


class SvixSignature:
    """Checks Svix's signature of ``id.timestamp.body``, then the timestamp's freshness."""

    offline = True  # checks with the key it holds: never waits on the network

    def __init__(self, settings: WebhookSettings, clock: Callable[[], float] = time.time) -> None:
        secret = settings.secret("resend")
        if secret is None:
            raise ConfigError("webhooks.resend: the signing secret (whsec_...) is needed "
                              "(secret_env or secret_file)")  # fmt: skip
        try:
            self.key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (ValueError, binascii.Error):
            raise ConfigError("webhooks.resend: the secret is not whsec_ and base64") from None
        self.tolerance = settings.tolerance_seconds
        self.clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        ident = header(headers, "svix-id") or header(headers, "webhook-id")
        stamp = header(headers, "svix-timestamp") or header(headers, "webhook-timestamp")
        given = header(headers, "svix-signature") or header(headers, "webhook-signature")
        if not ident or not stamp or not given:
            raise Refused("bad_signature", 401, "no svix-id, svix-timestamp or svix-signature")
        signed = f"{ident}.{stamp}.".encode("utf-8", "replace") + body
        expected = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest())
        matched = False
        for entry in given.split():
            version, _, signature = entry.partition(",")
            if version == "v1":  # every entry is compared: no early exit to time
                matched |= hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
        if not matched:
            raise Refused("bad_signature", 403, "no signature matches")
        # Checked after the signature, so a forged timestamp is a bad signature, not stale.
        try:
            moment = float(stamp)
        except ValueError:
            raise Refused("bad_signature", 401, "timestamp is not a number") from None
        if not math.isfinite(moment) or abs(self.clock() - moment) > self.tolerance:
            raise Refused("stale", 403, "timestamp outside the tolerance")


register_webhook(Webhook("resend", ResendEvents, split_records, SvixSignature))
