"""SparkPost webhooks -> events (``POST /webhooks/sparkpost``).

A body is a JSON array of ``{"msys": {"<class>_event": {...}}}``, one event each
(https://developers.sparkpost.com/api/webhooks/, "Event types"); a batch of one
``{"msys": {}}`` is the ping SparkPost sends when a webhook is created or tested.
SparkPost authenticates with the credential configured on the webhook: HTTP Basic
(``username`` + the secret) or an OAuth 2.0 bearer token (the secret); see
:mod:`monitor.collectors.esp.httpauth`.

Bounces carry SparkPost's ``bounce_class``
(``monitor/data/sparkpost_bounce_classes.toml``): kept as the tag ``bounce_class:N``, it
says whether the event is a failure at all (auto-replies and list requests come as
bounces too), whether it is hard, and which reason to give when no text rule of the
classifier recognises the reply (its verdict would come from the bare reply code).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from monitor.classify import BLAMES, REASONS, classify
from monitor.collectors.esp.base import EspSource, Webhook, register_webhook
from monitor.collectors.esp.common import (
    address,
    epoch,
    iso_time,
    mapping,
    number,
    reply,
    tags_of,
    text,
    with_event_id,
)
from monitor.collectors.esp.httpauth import BasicOrBearer
from monitor.collectors.jsonbody import split_records
from monitor.collectors.source import NotUnderstood
from monitor.errors import ConfigError
from monitor.model import Event, EventType

__all__ = ["BounceClass", "SparkPostEvents", "bounce_classes"]

_TYPES = {
    "injection": EventType.SUBMITTED,
    "delivery": EventType.DELIVERED,
    "delay": EventType.DEFERRED,
    "bounce": EventType.BOUNCED,
    "out_of_band": EventType.BOUNCED,  # a bounce that came back after acceptance
    "policy_rejection": EventType.REJECTED,
    "generation_failure": EventType.REJECTED,  # the template did not render: ours to fix
    "generation_rejection": EventType.REJECTED,
    "spam_complaint": EventType.COMPLAINED,
    "open": EventType.OPENED,
    "initial_open": EventType.OPENED,
    "amp_open": EventType.OPENED,
    "amp_initial_open": EventType.OPENED,
    "click": EventType.CLICKED,
    "amp_click": EventType.CLICKED,
    "list_unsubscribe": EventType.UNSUBSCRIBED,
    "link_unsubscribe": EventType.UNSUBSCRIBED,
}
#: Understood, nothing Mailmon tracks: inbound relay, A/B tests, SMS, ingest reports.
_QUIET = frozenset({
    "relay_injection", "relay_rejection", "relay_delivery", "relay_tempfail",
    "relay_permfail", "ab_test_completed", "ab_test_cancelled", "sms_status",
    "ingest_success", "ingest_error",
})  # fmt: skip
#: Types that are SparkPost's own refusals: a suppressed recipient says so in the text.
_REFUSALS = frozenset({"policy_rejection", "generation_rejection"})
_BOUNCES = frozenset({"bounce", "out_of_band", "delay"})
_OUTCOMES = {
    "bounced": EventType.BOUNCED, "deferred": EventType.DEFERRED,
    "expired": EventType.EXPIRED, "suppressed": EventType.SUPPRESSED,
    "auto_replied": EventType.AUTO_REPLIED, "unsubscribed": EventType.UNSUBSCRIBED,
    "ignored": None,
}  # fmt: skip
_CATEGORIES = frozenset({"hard", "soft", "block", "admin", "undetermined"})
#: Recipient metadata keys that name a stream keep their name (``stats --by stream``).
_STREAM_KEYS = frozenset({"stream", "category", "campaign"})
#: The classifier's rules that decide without the text: the bare reply code's table, and
#: onhold / undefined.  SparkPost's class, made from the whole reply, says more than they do.
_CODE_ONLY = ("rfc5321.", "fallback.")


@dataclass(frozen=True)
class BounceClass:
    """One of SparkPost's bounce classification codes."""

    code: int
    name: str
    category: str
    outcome: EventType | None = EventType.BOUNCED
    reason: str | None = None
    blame: str | None = None

    @property
    def hard(self) -> bool | None:
        return None if self.category == "undetermined" else self.category == "hard"


def _bounce_class(entry: Mapping[str, Any]) -> BounceClass:
    unknown = set(entry) - {"code", "name", "category", "outcome", "reason", "blame"}
    outcome = entry.get("outcome", "bounced")
    if (unknown or entry.get("category") not in _CATEGORIES or outcome not in _OUTCOMES
            or entry.get("reason", "undefined") not in REASONS
            or entry.get("blame", "unknown") not in BLAMES
            or ("reason" in entry) != ("blame" in entry)):  # fmt: skip
        raise ConfigError(f"sparkpost_bounce_classes.toml: bad class {dict(entry)}")
    return BounceClass(int(entry["code"]), str(entry["name"]), entry["category"],
                       _OUTCOMES[outcome], entry.get("reason"), entry.get("blame"))  # fmt: skip


@cache
def bounce_classes() -> dict[int, BounceClass]:
    """SparkPost's bounce classes by code, from the data file (validated as it loads)."""
    raw = resources.files("monitor.data").joinpath("sparkpost_bounce_classes.toml").read_text()
    return {c.code: c for c in map(_bounce_class, tomllib.loads(raw)["class"])}


def _time(value: Any) -> Any:
    """UNIX seconds as text (message events) or ISO 8601 (generation events)."""
    try:
        return epoch(value)
    except ValueError:
        return iso_time(value)


def _tags(event: Mapping[str, Any], found: BounceClass | None) -> tuple[str, ...]:
    pairs: list[tuple[str, Any]] = []
    if found is not None:
        pairs.append(("bounce_class", found.code))
    elif event.get("bounce_class") is not None:
        pairs.append(("bounce_class", event.get("bounce_class")))  # a class SparkPost added
    pairs.append(("campaign", event.get("campaign_id")))
    tags = event.get("rcpt_tags")
    for tag in tags if isinstance(tags, list) else []:
        pairs.append(("tag", tag))
    pairs.append(("template", event.get("template_id")))
    pairs.append(("ip_pool", event.get("ip_pool")))
    pairs.append(("subaccount", event.get("subaccount_id")))
    pairs.append(("feedback_type", event.get("fbtype")))
    for key, value in mapping(event.get("rcpt_meta")).items():
        if key in _STREAM_KEYS:
            pairs.append((key, value))
        elif text(value) is not None:
            pairs.append(("meta", f"{key}={text(value)}"))
    return tags_of(pairs)


class SparkPostEvents(EspSource):
    """One ``{"msys": {...}}`` object -> its event ([] for pings and untracked types)."""

    kind = "sparkpost"

    def events(self, record: Mapping[str, Any], ref: str | None) -> list[Event]:
        msys = record["msys"]
        if not isinstance(msys, Mapping):
            raise NotUnderstood("not a sparkpost event")
        if not msys:
            return []  # the ping of a new or tested webhook
        [event] = msys.values()  # one event class per object
        name = event["type"]
        if name in _QUIET:
            return []
        kind: EventType | None = _TYPES[name]
        diagnostic = text(event.get("raw_reason")) or text(event.get("reason"))
        code, status = reply(diagnostic)
        code = number(event.get("error_code")) or code
        found = bounce_classes().get(number(event.get("bounce_class")) or -1)
        reason = blame = rule = None
        hard: bool | None = None
        if name in _BOUNCES and found is not None:
            if name != "delay":
                kind = found.outcome
            hard = found.hard if kind is EventType.BOUNCED else None
            if found.reason and kind in (EventType.BOUNCED, EventType.DEFERRED, EventType.EXPIRED,
                                         EventType.SUPPRESSED):  # fmt: skip
                verdict = classify(code, status, diagnostic, final=kind is not EventType.DEFERRED)
                if verdict.rule.startswith(_CODE_ONLY) or kind is EventType.SUPPRESSED:
                    reason, blame = found.reason, found.blame
                    rule = f"sparkpost.bounce_class.{found.code}"
        elif name in _REFUSALS and diagnostic and "suppress" in diagnostic.lower():
            kind, reason, blame = EventType.SUPPRESSED, "suppressed", "policy"
        elif kind is EventType.COMPLAINED:
            reason, blame = "feedback", "reputation"  # as an ARF report says it
        if kind is None:
            return []  # a subscribe request
        failed = kind in (EventType.BOUNCED, EventType.DEFERRED, EventType.EXPIRED,
                          EventType.REJECTED, EventType.SUPPRESSED, EventType.AUTO_REPLIED)
        provider_id = text(event.get("message_id"))
        queued = number(event.get("queue_time"))
        made = Event(
            type=kind,
            occurred_at=_time(event["timestamp"]),
            source=self.kind,
            queue_id=provider_id if provider_id and len(provider_id) <= 64 else None,
            provider_message_id=provider_id,
            sender=address(event.get("msg_from")),
            recipient=address(event.get("rcpt_to")) or address(event.get("raw_rcpt_to")),
            sending_ip=text(event.get("sending_ip")),
            reply_code=code if failed or kind is EventType.DELIVERED else None,
            enhanced_status=status if failed else None,
            diagnostic=diagnostic if failed else None,
            reason=reason,
            hard=hard,
            blame=blame,
            rule=rule,
            delay_seconds=queued / 1000 if queued and kind is EventType.DELIVERED else None,
            size_bytes=number(event.get("msg_size")),
            tags=_tags(event, found),
            raw_ref=ref,
        )
        return [with_event_id(made, f"{name}/{text(event.get('event_id')) or ''}")]


register_webhook(Webhook("sparkpost", SparkPostEvents, split_records,
                         BasicOrBearer.named("sparkpost")))  # fmt: skip
