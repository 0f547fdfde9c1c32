"""Amazon SES through SNS: event publishing and identity notifications, per recipient.

Each request is an SNS envelope (:mod:`.sns` verifies it) whose ``Message`` is SES's JSON:
event publishing through a configuration set (``eventType``: Send, Reject, Bounce,
Complaint, Delivery, Open, Click, Rendering Failure, DeliveryDelay, Subscription) or an
identity's notifications (``notificationType``: Bounce, Complaint, Delivery).  What that
JSON says is read by :mod:`monitor.collectors.ses_records`, as for SES notifications
mailed to a bounce address.  Payload files (``mailmon ingest ses``) may hold envelopes or
the SES objects themselves (as Firehose or SQS exports keep them).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from monitor.collectors import ses_records
from monitor.collectors.esp.base import EspSource, Webhook, register_webhook
from monitor.collectors.esp.common import (
    address,
    iso_time,
    mapping,
    reply,
    tags_of,
    text,
    with_event_id,
)
from monitor.collectors.esp.sns import SnsSignature
from monitor.collectors.jsonbody import split_records
from monitor.collectors.ses_records import SesMail
from monitor.model import Event, EventType

__all__ = ["SesEvents"]

#: SNS envelopes that carry no SES event (the verifier logs and confirms them).
_SUBSCRIPTION = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
#: What SES sends when a topic is first set for an identity's notifications.
_QUIET = frozenset({"AmazonSnsSubscriptionSucceeded"})
#: Bounce subtypes that mean SES did not send at all: the address is on a suppression list.
_SUPPRESSED = frozenset({"Suppressed", "OnAccountSuppressionList"})
_STREAM_KEYS = ("stream", "campaign", "category")


def _tags(mail: SesMail, *extra: tuple[str, Any]) -> tuple[str, ...]:
    """The sender's message tags (``stream``/``campaign``/``category`` keep their name, the
    rest ``meta:k=v``), then the configuration set as the stream, then ``extra``."""
    pairs: list[tuple[str, Any]] = []
    for name, values in mail.tags.items():
        if name.startswith("ses:"):
            continue  # SES's own: the configuration set follows, the rest are not the sender's
        for value in values:
            pairs.append((name, value) if name in _STREAM_KEYS else ("meta", f"{name}={value}"))
    for value in mail.tags.get("ses:configuration-set", ()):
        pairs.append(("stream", value))
    return tags_of([*pairs, *extra])


def _opted_out(preferences: Mapping[str, Any]) -> list[str | None]:
    """The topics a contact's preferences say it opted out of."""
    statuses = preferences.get("topicSubscriptionStatus") or []
    return [text(t.get("topicName")) for t in statuses
            if isinstance(t, Mapping) and t.get("subscriptionStatus") == "OptOut"]  # fmt: skip


def _sent_at(mail: SesMail) -> datetime | None:
    """When SES took the message: the same in each of its events (None if unreadable)."""
    try:
        return iso_time(mail.timestamp)
    except ValueError:
        return None


def _sole(mail: SesMail) -> str | None:
    """The recipient of an open or a click: SES says which message, not which of its recipients."""
    return address(mail.destination[0]) if len(mail.destination) == 1 else None


class SesEvents(EspSource):
    """One SNS envelope (or one SES object) -> its events, one per recipient."""

    kind = "ses"

    def events(self, record: Mapping[str, Any], ref: str | None) -> list[Event]:
        if record.get("Type") in _SUBSCRIPTION:
            return []
        data = ses_records.unwrap(record)
        if not isinstance(data, Mapping):
            raise ValueError("the SNS Message is not an SES object")
        kind = ses_records.kind_of(data)
        if kind in _QUIET:
            return []
        mail = ses_records.mail_of(data)
        made = self._outcomes(str(kind), data, mail)
        self.carry([("subject", mail.subject), ("in-reply-to", mail.in_reply_to),
                    ("references", mail.references)], _sent_at(mail))  # fmt: skip
        base: dict[str, Any] = {
            "source": self.kind,
            "message_id": mail.message_id,
            "queue_id": mail.ses_id if mail.ses_id and len(mail.ses_id) <= 64 else None,
            "provider_message_id": mail.ses_id,
            "sender": address(mail.sender),
            "raw_ref": ref,
        }
        return [with_event_id(Event(**base, **fields), own) for fields, own in made]

    def _outcomes(
        self, kind: str, data: Mapping[str, Any], mail: SesMail
    ) -> list[tuple[dict[str, Any], Any]]:
        """Each event's own fields, with the id SES gave the happening (if any)."""
        if kind == "Bounce":
            return self._bounce(data, mail)
        if kind == "Complaint":
            feedback, _, complainers = ses_records.complained(data)
            complaint = mapping(data.get("complaint"))
            tags = _tags(mail, ("feedback", feedback),
                         ("complaint_subtype", complaint.get("complaintSubType")))  # fmt: skip
            when = iso_time(complaint["timestamp"])
            return [
                ({"type": EventType.COMPLAINED, "occurred_at": when, "recipient": address(r),
                  "reason": "feedback", "blame": "reputation", "tags": tags},
                 complaint.get("feedbackId"))
                for r in complainers
            ]  # fmt: skip
        if kind == "Delivery":
            response, recipients = ses_records.delivered(data)
            delivery = mapping(data.get("delivery"))
            code, enhanced = reply(response)
            millis = delivery.get("processingTimeMillis")
            fields = {
                "type": EventType.DELIVERED,
                "occurred_at": iso_time(delivery["timestamp"]),
                "reply_code": code,
                "enhanced_status": enhanced,
                "diagnostic": text(response),
                "delay_seconds": millis / 1000 if isinstance(millis, int | float) else None,
                "sending_ip": next(iter(mail.tags.get("ses:outgoing-ip", ())), None),
                "tags": _tags(mail),
            }
            return [(fields | {"recipient": address(r)}, None) for r in recipients]
        if kind == "DeliveryDelay":
            delay = mapping(data.get("deliveryDelay"))
            when = iso_time(delay["timestamp"])
            tags = _tags(mail, ("delay_type", delay.get("delayType")))
            out = []
            for r in ses_records.delayed(data):
                code, enhanced = reply(r.diagnostic, r.status)
                out.append(({"type": EventType.DEFERRED, "occurred_at": when,
                             "recipient": address(r.address), "reply_code": code,
                             "enhanced_status": enhanced, "diagnostic": r.diagnostic or None,
                             "tags": tags}, None))  # fmt: skip
            return out
        if kind in ("Open", "Click"):
            happening = mapping(data.get(kind.lower()))
            kind_of = EventType.OPENED if kind == "Open" else EventType.CLICKED
            return [({"type": kind_of, "occurred_at": iso_time(happening["timestamp"]),
                      "recipient": _sole(mail), "tags": _tags(mail)}, None)]  # fmt: skip
        if kind == "Subscription":
            return self._subscription(data, mail)
        return self._unsent(kind, data, mail)

    def _bounce(self, data: Mapping[str, Any], mail: SesMail) -> list[tuple[dict[str, Any], Any]]:
        bounce = mapping(data.get("bounce"))
        subtype = text(bounce.get("bounceSubType"))
        when = iso_time(bounce["timestamp"])
        tags = _tags(mail, ("bounce_type", bounce.get("bounceType")), ("bounce_subtype", subtype))
        _, recipients = ses_records.bounced(data)
        out = []
        for r in recipients:
            code, enhanced = reply(r.diagnostic, r.status)
            fields = {"type": EventType.BOUNCED, "occurred_at": when,
                      "recipient": address(r.address), "reply_code": code,
                      "enhanced_status": enhanced, "diagnostic": r.diagnostic or None,
                      "tags": tags}  # fmt: skip
            if subtype in _SUPPRESSED:  # SES's verdict is all there is: it did not send
                fields |= {"type": EventType.SUPPRESSED, "reason": "suppressed"}
            out.append((fields, bounce.get("feedbackId")))
        return out

    def _subscription(
        self, data: Mapping[str, Any], mail: SesMail
    ) -> list[tuple[dict[str, Any], Any]]:
        """An unsubscribe from the whole list or from a topic; a resubscribe changes nothing."""
        change = mapping(data.get("subscription"))
        new = mapping(change.get("newTopicPreferences"))
        old = mapping(change.get("oldTopicPreferences"))
        was_out = set(_opted_out(old))
        now_out = _opted_out(new)
        all_now = new.get("unsubscribeAll") is True and old.get("unsubscribeAll") is not True
        if not all_now and not [t for t in now_out if t not in was_out]:
            return []
        when = iso_time(change["timestamp"])
        tags = _tags(mail, ("contact_list", change.get("contactList")),
                     *(("topic", t) for t in now_out))  # fmt: skip
        fields = {"type": EventType.UNSUBSCRIBED, "occurred_at": when, "tags": tags}
        return [(fields | {"recipient": address(r)}, None) for r in mail.destination]

    def _unsent(
        self, kind: str, data: Mapping[str, Any], mail: SesMail
    ) -> list[tuple[dict[str, Any], Any]]:
        """Send, Reject and Rendering Failure: about every recipient, at the time SES took it."""
        when: datetime = iso_time(mail.timestamp)
        if kind == "Send":
            fields: dict[str, Any] = {"type": EventType.SUBMITTED, "tags": _tags(mail)}
        elif kind == "Reject":
            # SES: "accepted the email, determined that it contained a virus and rejected it"
            fields = {"type": EventType.REJECTED, "reason": "virusdetected", "blame": "content",
                      "diagnostic": text(mapping(data.get("reject")).get("reason")),
                      "tags": _tags(mail)}  # fmt: skip
        elif kind in ("Rendering Failure", "RenderingFailure"):
            failure = mapping(data.get("failure"))
            fields = {"type": EventType.REJECTED, "reason": "contenterror", "blame": "content",
                      "diagnostic": text(failure.get("errorMessage")),
                      "tags": _tags(mail, ("template", failure.get("templateName")))}  # fmt: skip
        else:
            raise ValueError(f"unknown SES event {kind!r}")
        return [(fields | {"occurred_at": when, "recipient": address(r)}, None)
                for r in mail.destination]  # fmt: skip


register_webhook(Webhook("ses", SesEvents, split_records, SnsSignature, secret=False))
