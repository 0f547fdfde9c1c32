"""A batch of events folded in memory: its counter tallies and its delivery rows.

The store's writer (:mod:`monitor.store.writer`) reads and writes the rows; the loops
here run once per stored event, so they are compiled with the parser (mypyc,
:mod:`monitor.native`): on the benchmark's 1M-line log they were a fifth of the writer
process's time interpreted.  An event is a wire tuple (:mod:`monitor.store.wire`, its
fields read by position).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monitor.model import ATTEMPT_TYPES, FINAL_TYPES, EventType, domain_of, event_id
from monitor.store.schema import BUCKET_SECONDS, FAILURE_OUTCOMES
from monitor.store.wire import (
    BLAME,
    DELAY_SECONDS,
    DIAGNOSTIC,
    ENHANCED_STATUS,
    HARD,
    ID,
    MESSAGE_ID,
    PROVIDER,
    QUEUE_ID,
    REASON,
    RECIPIENT,
    RECIPIENT_DOMAIN,
    REPLY_CODE,
    RULE,
    SENDER,
    SENDING_IP,
    SOURCE,
    TAGS,
    TIMESTAMP,
    TYPE,
)

__all__ = [
    "DELIVERY_COLUMNS",
    "STREAM_TAGS",
    "apply",
    "delivery_key",
    "fold_rows",
    "keyed",
    "new_delivery",
    "stream_tag",
    "tally",
]

#: The deliveries table's columns (``monitor.store.schema``; the writer checks them),
#: in the order of a delivery row (a list).
DELIVERY_COLUMNS = (
    "key", "source", "message_id", "queue_id", "sender", "recipient", "recipient_domain",
    "provider", "stream", "state", "submitted_at", "first_attempt_at", "last_event_at",
    "final_at", "attempts", "deferrals", "reply_code", "enhanced_status", "reason", "hard",
    "diagnostic", "blame", "rule", "sending_ip", "stream_tag",
)  # fmt: skip
_KEY = 0
_SOURCE = 1
_MESSAGE_ID = 2
_QUEUE_ID = 3
_SENDER = 4
_RECIPIENT = 5
_RECIPIENT_DOMAIN = 6
_PROVIDER = 7
_STREAM = 8
_STATE = 9
_SUBMITTED_AT = 10
_FIRST_ATTEMPT_AT = 11
_LAST_EVENT_AT = 12
_FINAL_AT = 13
_ATTEMPTS = 14
_DEFERRALS = 15
_REPLY_CODE = 16
_ENHANCED_STATUS = 17
_REASON = 18
_HARD = 19
_DIAGNOSTIC = 20
_BLAME = 21
_RULE = 22
_SENDING_IP = 23
_STREAM_TAG = 24

#: Tag keys that name a stream, first found wins: ``stream:`` is ours to set, ESPs and
#: MTAs call the same thing a category (SendGrid, Mailgun tags) or a campaign.
STREAM_TAGS = ("stream:", "category:", "campaign:")
_STREAM_CHARS = 64  # the width of stream columns
_VALUE_CHARS = 255  # sender_counters.value: PostgreSQL refuses longer, SQLite would keep it

_FAILURES = frozenset(FAILURE_OUTCOMES)

# A wire tuple's type is the plain value of its EventType (monitor.store.wire).
_SUBMITTED: str = EventType.SUBMITTED.value
_DEFERRED: str = EventType.DEFERRED.value
_PLACED: str = EventType.PLACED.value
_DELIVERED: str = EventType.DELIVERED.value
_ATTEMPT_KINDS: frozenset[str] = frozenset(k.value for k in ATTEMPT_TYPES)
_STATEFUL: frozenset[str] = frozenset({_SUBMITTED, _DEFERRED, *(k.value for k in FINAL_TYPES)})
# A state's rank: submitted 0, deferred 1, final 2, any other -1.
_RANK_OF: dict[str, int] = {
    k.value: 0 if k is EventType.SUBMITTED else 1 if k is EventType.DEFERRED
    else 2 if k in FINAL_TYPES else -1
    for k in EventType
}  # fmt: skip
_BOOL_INTS: dict[Any, Any] = {True: 1, False: 0}


def stream_tag(tags: Sequence[str]) -> str:
    """The stream ``tags`` name (``ndr`` for our own notices), ``""`` when none does."""
    if not tags:
        return ""
    for prefix in STREAM_TAGS:
        for tag in tags:
            if tag.startswith(prefix) and len(tag) > len(prefix):
                return tag[len(prefix) :][:_STREAM_CHARS]
    return "ndr" if "ndr" in tags else ""


def _stream_of(event: tuple[Any, ...]) -> str:
    """The traffic stream: our own non-delivery notices are kept apart."""
    return "ndr" if "ndr" in event[TAGS] else ""


def delivery_key(e: tuple[Any, ...]) -> str:
    """The (message, recipient) a delivery row tracks.

    The RFC 5322 Message-ID joins what different sources say about one message;
    without one, the source's queue id does; without either, the event is alone.
    """
    if e[MESSAGE_ID]:
        return event_id("msg", "", e[MESSAGE_ID], e[RECIPIENT])
    if e[QUEUE_ID]:
        return event_id(e[SOURCE], "queue", e[QUEUE_ID], e[RECIPIENT])
    return str(e[ID])


def keyed(batch: list[tuple[Any, ...]]) -> list[tuple[str, float, tuple[Any, ...]]]:
    """(delivery key, UNIX time, event) for each of ``batch``: a delivery's events usually
    share a batch, so one key's hash serves several of them."""
    keys: dict[tuple[Any, ...], str] = {}
    out: list[tuple[str, float, tuple[Any, ...]]] = []
    for e in batch:
        message_id = e[MESSAGE_ID]
        if message_id:
            ident: tuple[Any, ...] = (message_id, e[RECIPIENT])
        elif e[QUEUE_ID]:
            ident = (e[SOURCE], e[QUEUE_ID], e[RECIPIENT])
        else:
            ident = (e[ID],)
        key = keys.get(ident)
        if key is None:
            key = delivery_key(e)
            keys[ident] = key
        out.append((key, e[TIMESTAMP], e))
    return out


def tally(
    keyed: Sequence[tuple[str, float, tuple[Any, ...]]], sign: int
) -> tuple[dict[tuple[Any, ...], int], dict[tuple[Any, ...], int], dict[tuple[Any, ...], int]]:
    """The counts of ``keyed`` ((delivery key, UNIX time, event) each), ``sign`` each:
    per ``counters`` key, per ``failure_counters`` key and per sender tally key
    (``monitor.store.writer.SenderTally``)."""
    totals: dict[tuple[Any, ...], int] = {}
    failures: dict[tuple[Any, ...], int] = {}
    by_sender: dict[tuple[Any, ...], int] = {}
    domains: dict[str, str] = {}  # sender -> its domain: a batch has few senders
    for _, ts, e in keyed:
        kind = e[TYPE]
        if kind == _PLACED:
            continue  # a seed probe's placement is no delivery outcome: in no counter
        bucket = int(ts // BUCKET_SECONDS) * BUCKET_SECONDS
        provider = e[PROVIDER] or "other"
        if type(provider) is not str:
            provider = str(provider)  # a Provider: plain str for the driver
        outcome = str(kind)
        reason = e[REASON] or ""
        tags = e[TAGS]
        ndr = 1 if tags and "ndr" in tags else 0
        k = (bucket, e[RECIPIENT_DOMAIN] or "", provider, outcome, reason, "ndr" if ndr else "")
        totals[k] = totals.get(k, 0) + sign
        hard = ""
        blame = ""
        if outcome in _FAILURES:
            h = e[HARD]
            hard = "" if h is None else "hard" if h else "soft"
            blame = e[BLAME] or ""
            fk = (bucket, k[1], provider, outcome, reason, hard, blame, k[5])
            failures[fk] = failures.get(fk, 0) + sign
        sender = e[SENDER] or ""
        domain = domains.get(sender)
        if domain is None:
            domain = (domain_of(sender) or "")[:_VALUE_CHARS]
            domains[sender] = domain
        sk = (
            bucket, domain, e[SENDING_IP] or "", stream_tag(tags) if tags else "",
            provider, outcome, reason, hard, blame, ndr,
        )  # fmt: skip
        by_sender[sk] = by_sender.get(sk, 0) + sign
    return totals, failures, by_sender


def fold_rows(
    keyed: Sequence[tuple[str, float, tuple[Any, ...]]], current: dict[str, list[Any]], sqlite: bool
) -> list[Any]:
    """The delivery row of every key of ``keyed``: its stored row (``current``, by key) or a
    new one, with the batch's events applied in time order.  On SQLite a row is a list with
    ``hard`` as 0 or 1 (bound without sqlite3's adaptation lookup), else a tuple."""
    by_key: dict[str, list[tuple[float, tuple[Any, ...]]]] = {}
    for key, ts, e in keyed:
        same = by_key.get(key)
        if same is None:
            by_key[key] = [(ts, e)]
        else:
            same.append((ts, e))
    rows: list[Any] = []
    for key, evs in by_key.items():
        row = current.get(key)
        if row is None:
            first_ts, first = evs[0]
            row = new_delivery(key, first_ts, first)
        if len(evs) > 1:
            evs.sort(key=_first)
        for ts, e in evs:
            apply(row, ts, e)
        provider = row[_PROVIDER]
        if provider is not None and type(provider) is not str:
            row[_PROVIDER] = str(provider)  # a Provider: its value, as a plain str
        if sqlite:
            hard = row[_HARD]
            row[_HARD] = _BOOL_INTS.get(hard, hard)
            rows.append(row)
        else:
            rows.append(tuple(row))
    return rows


def _first(pair: tuple[float, tuple[Any, ...]]) -> float:
    return pair[0]


def new_delivery(key: str, ts: float, e: tuple[Any, ...]) -> list[Any]:
    """The delivery row ``e`` (at UNIX time ``ts``) starts, before it is applied."""
    row: list[Any] = [None] * len(DELIVERY_COLUMNS)
    row[_KEY] = key
    row[_SOURCE] = e[SOURCE]
    row[_RECIPIENT] = e[RECIPIENT]
    row[_RECIPIENT_DOMAIN] = e[RECIPIENT_DOMAIN]
    row[_STREAM] = _stream_of(e)
    row[_STATE] = str(e[TYPE])
    row[_LAST_EVENT_AT] = ts
    row[_ATTEMPTS] = 0
    row[_DEFERRALS] = 0
    row[_STREAM_TAG] = ""
    return row


def apply(row: list[Any], ts: float, e: tuple[Any, ...]) -> None:
    """Fold one event at UNIX time ``ts`` into a delivery row; order-independent."""
    if row[_MESSAGE_ID] is None:
        row[_MESSAGE_ID] = e[MESSAGE_ID]
    if row[_QUEUE_ID] is None:
        row[_QUEUE_ID] = e[QUEUE_ID]
    if row[_SENDER] is None:
        row[_SENDER] = e[SENDER]
    if row[_PROVIDER] is None:
        row[_PROVIDER] = e[PROVIDER]
    tags = e[TAGS]
    if tags and not row[_STREAM_TAG]:  # the submission usually carries the tags
        row[_STREAM_TAG] = stream_tag(tags)
    previous_last = row[_LAST_EVENT_AT]
    if ts > previous_last:
        row[_LAST_EVENT_AT] = ts
    kind = e[TYPE]
    if kind == _SUBMITTED:
        at = row[_SUBMITTED_AT]
        row[_SUBMITTED_AT] = ts if at is None or ts < at else at
    elif kind == _DELIVERED and e[DELAY_SECONDS] is not None:
        # The MTA's delay counts from the message's arrival: the submission time when the
        # submission itself was not seen (a log that starts mid-flight, KumoMTA without
        # its Reception records), so latency still has both ends. The earlier time wins,
        # as for submitted events, so the order of arrival does not matter.
        arrived = ts - e[DELAY_SECONDS]
        at = row[_SUBMITTED_AT]
        row[_SUBMITTED_AT] = arrived if at is None or arrived < at else at
    if kind in _ATTEMPT_KINDS:
        row[_ATTEMPTS] += 1
        first = row[_FIRST_ATTEMPT_AT]
        row[_FIRST_ATTEMPT_AT] = ts if first is None or ts < first else first
        if kind == _DEFERRED:
            row[_DEFERRALS] += 1
    if kind not in _STATEFUL:
        return
    rank = _RANK_OF[kind]
    held = _RANK_OF.get(row[_STATE], -1)
    decided_at = row[_FINAL_AT] if held == 2 else previous_last
    if rank > held or (rank == held and ts >= (decided_at or 0.0)):
        row[_STATE] = str(kind)
        row[_FINAL_AT] = ts if rank == 2 else None
        if rank >= 1:
            row[_REPLY_CODE] = e[REPLY_CODE]
            row[_ENHANCED_STATUS] = e[ENHANCED_STATUS]
            row[_REASON] = e[REASON]
            row[_HARD] = e[HARD]
            row[_DIAGNOSTIC] = e[DIAGNOSTIC]
            row[_BLAME] = e[BLAME]
            row[_RULE] = e[RULE]
            row[_SENDING_IP] = e[SENDING_IP]
