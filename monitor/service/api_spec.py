"""The read API's OpenAPI 3.0 document, as data, served at ``/openapi.json``.

The delivery and event schemas are built from the ``deliveries`` table and the ``Event``
model, so what the API answers and what this says cannot drift apart;
``tests/test_api_schemathesis.py`` checks every answer against it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Boolean, Float, Integer

from monitor import __version__
from monitor.model import Event, EventType
from monitor.rollup.windows import WINDOWS
from monitor.store.queries import STAT_FIELDS
from monitor.store.schema import deliveries

__all__ = ["LIMITS", "MAX_AT", "spec"]

#: Query ``limit``s: (lowest, highest, default).
LIMITS = {"deliveries": (1, 200, 50), "rollup": (1, 500, 20), "incidents": (1, 500, 500)}
#: The last second of the year 9999: later times cannot be written as ISO dates.
MAX_AT = 253402300799.0

_ERROR = {"$ref": "#/components/schemas/Error"}
_TIME = {"type": "string", "format": "date-time"}
_TIMES = ("submitted_at", "first_attempt_at", "last_event_at", "final_at")


def _nullable(schema: dict[str, Any], nullable: bool) -> dict[str, Any]:
    return schema | {"nullable": True} if nullable else schema


def _object(properties: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties,
            "additionalProperties": False, **more}  # fmt: skip


def _delivery() -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for column in deliveries.columns:
        if column.name in _TIMES:
            schema: dict[str, Any] = dict(_TIME)
        elif isinstance(column.type, Boolean):
            schema = {"type": "boolean"}
        elif isinstance(column.type, Integer):
            schema = {"type": "integer"}
        elif isinstance(column.type, Float):
            schema = {"type": "number"}
        else:
            schema = {"type": "string"}
        properties[column.name] = _nullable(schema, bool(column.nullable))
    properties["timeline"] = {"type": "array", "items": {"$ref": "#/components/schemas/Event"},
                              "description": "the delivery's events, in order"}  # fmt: skip
    return _object(properties, description="One recipient of one message: its state and "
                   "timeline.")  # fmt: skip


_EVENT_TYPES: dict[str, dict[str, Any]] = {"str": {"type": "string"}, "int": {"type": "integer"},
                "float": {"type": "number"}, "bool": {"type": "boolean"},
                "datetime": _TIME,
                "tuple[str, ...]": {"type": "array", "items": {"type": "string"}},
                "EventType": {"type": "string", "enum": [t.value for t in EventType]}}  # fmt: skip


def _event() -> dict[str, Any]:
    properties: dict[str, Any] = {"id": {"type": "string"}}
    for f in dataclasses.fields(Event):
        if f.name == "id":
            continue
        annotation = str(f.type)
        base = annotation.removesuffix(" | None")
        properties[f.name] = _nullable(dict(_EVENT_TYPES[base]), base != annotation)
    return _object(properties)


def _counts() -> dict[str, Any]:
    properties: dict[str, Any] = {f: {"type": "integer", "minimum": 0} for f in STAT_FIELDS}
    for rate in ("delivery_rate", "bounce_rate", "deferral_rate", "complaint_rate"):
        properties[rate] = {"type": "number", "minimum": 0, "nullable": True}
    return _object(properties, description="Recipients per outcome (deferred: attempts) and "
                   "their rates (null when the denominator is zero).")  # fmt: skip


def _rollup(by: str) -> dict[str, Any]:
    return _object({
        "at": _TIME,
        "windows": _object({w: {"type": "integer", "enum": [s]} for w, s in WINDOWS.items()},
                           description="each window's length in seconds"),
        "items": {"type": "array", "items": _object({
            by: {"type": "string"},
            "windows": _object({w: {"$ref": "#/components/schemas/Counts"} for w in WINDOWS}),
            "open_incidents": {"type": "array",
                               "items": {"$ref": "#/components/schemas/Incident"}},
        })},
    })  # fmt: skip


def _health() -> dict[str, Any]:
    return {"type": "object", "required": ["status", "version"], "properties": {
        "status": {"type": "string", "enum": ["ok", "failing"]},
        "version": {"type": "string"},
        "failing": {"type": "array", "items": {"type": "string"}},
    }, "additionalProperties": {"type": "object"},
       "description": "each part's {status, reason?}; followed logs nested by path"}  # fmt: skip


def _send() -> dict[str, Any]:
    """``POST /api/messages``: tracked sending (docs/send.md)."""
    text = {"type": "string"}
    body = {"type": "object", "required": ["to"], "additionalProperties": False, "properties": {
        "to": {"type": "array", "minItems": 1, "maxItems": 100, "items": text},
        "subject": text, "text": text, "html": text, "from": text, "reply_to": text,
        "in_reply_to": dict(text, description="the Message-ID this answers: In-Reply-To, "
                            "References and Re: come from its thread"),
        "tags": {"type": "array", "items": text}}}  # fmt: skip
    recipient = _object({"recipient": text, "token": text,
                         "status": {"type": "string", "enum": ["submitted", "rejected"]},
                         "code": {"type": "integer"}, "reply": text,
                         "queue_id": {"type": "string", "nullable": True}})  # fmt: skip
    sent = _object({"message_id": text, "subject": text,
                    "recipients": {"type": "array", "items": recipient}})  # fmt: skip
    return {
        "summary": "compose, submit through the [send] relay and record one message",
        "security": [{"bearerAuth": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "202": _json(sent, "submitted: what the relay said of each recipient"),
            "400": _json(_ERROR, "a body the API cannot take"),
            "401": _json(_ERROR, "no token, or the wrong one"),
            "403": _json(_ERROR, "no token is configured and the client is not on loopback"),
            "404": _json(_ERROR, "sending is not configured ([send] from_address)"),
            "413": _json(_ERROR, "a body over 1 MiB"),
            "502": _json(_ERROR, "the relay could not be reached or refused the session"),
        },
    }


def _thread() -> dict[str, Any]:
    text, flag = {"type": "string"}, {"type": "boolean"}
    maybe = {"type": "string", "nullable": True}
    delivery = _object({"recipient": maybe, "state": text, "reason": maybe})
    message = _object({
        "message_id": text, "direction": {"type": "string", "enum": ["outbound", "inbound"]},
        "at": _nullable(dict(_TIME), True), "sender": maybe, "subject": maybe,
        "reply_prefix": flag, "in_reply_to": maybe,
        "references": {"type": "array", "items": text}, "linked_to": maybe, "link": maybe,
        "category": maybe, "mailbox": maybe, "to_noreply": flag,
        "deliveries": {"type": "array", "items": delivery}, "parent": maybe,
        "parent_seen": flag,
    })  # fmt: skip
    return _object({"thread_id": text, "messages": {"type": "array", "items": message},
                    "truncated": flag})  # fmt: skip


def _json(schema: dict[str, Any], description: str, **more: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}},
            **more}  # fmt: skip


def _query(name: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:  # fmt: skip
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}  # fmt: skip


def _limit(kind: str) -> dict[str, Any]:
    lowest, highest, default = LIMITS[kind]
    return _query("limit", {"type": "integer", "minimum": lowest, "maximum": highest,
                            "default": default}, "at most this many")  # fmt: skip


_SECONDS = {"type": "number", "minimum": 0, "maximum": MAX_AT}
#: Text without NUL (PostgreSQL cannot store one; no address or Message-ID holds one).
_TEXT = {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]+$"}


def _api(summary: str, ok: dict[str, Any], parameters: list[dict[str, Any]],
         not_found: str = "no store is configured") -> dict[str, Any]:  # fmt: skip
    challenge = {"WWW-Authenticate": {"schema": {"type": "string"},
                                      "description": 'Bearer realm="mailmon"'}}  # fmt: skip
    return {"get": {
        "summary": summary, "security": [{"bearerAuth": []}], "parameters": parameters,
        "responses": {
            "200": ok,
            "400": _json(_ERROR, "a parameter the API cannot take"),
            "401": _json(_ERROR, "no token, or the wrong one", headers=challenge),
            "403": _json(_ERROR, "no token is configured and the client is not on loopback"),
            "404": _json(_ERROR, not_found),
            "503": _json(_ERROR, "the database does not answer"),
        },
    }}  # fmt: skip


# fmt: off
def spec() -> dict[str, Any]:
    """The OpenAPI document of the read API and the health endpoints."""
    deliveries_of = _object({"deliveries": {"type": "array",
                                            "items": {"$ref": "#/components/schemas/Delivery"}}})
    rollup_params = [_limit("rollup"), _query("at", _SECONDS, "the windows end at this UNIX "
                                              "time (default: now)")]  # fmt: skip
    health = {"security": [], "responses": {
        "200": _json({"$ref": "#/components/schemas/Health"}, "every part is well"),
        "503": _json({"$ref": "#/components/schemas/Health"}, "a part fails"),
    }}  # fmt: skip
    return {
        "openapi": "3.0.3",
        "info": {"title": "Mailmon", "version": __version__, "description": (
            "Mailmon's read API: deliveries and their timelines, per-domain and per-provider "
            "rollups over 5 minutes, 15 minutes, 1 hour and 24 hours, and incidents. "
            "Every /api endpoint takes `Authorization: Bearer TOKEN` ([api] token_file or "
            "MAILMON_API_TOKEN); without a token configured it answers loopback clients only. "
            "A message's thread is, for now, the message's deliveries (one per recipient); "
            "threads across messages (replies, References) come later."
        )},
        "paths": {
            "/healthz": {"get": {"summary": "liveness: each part's status", **health}},
            "/readyz": {"get": {"summary": "readiness: the store answers and no followed log "
                                "or endpoint fails", **health}},
            "/api/messages/{message_id}": _api(
                "one message's deliveries, each with its timeline, and its thread",
                _json(_object({"message_id": {"type": "string"}} | deliveries_of["properties"]
                              | {"thread": _nullable(_thread(), True)}),
                      "the deliveries of the message (by Message-ID or queue id)"),
                [{"name": "message_id", "in": "path", "required": True,
                  "schema": _TEXT,
                  "description": "the Message-ID (with or without <>) or the MTA's queue id"}],
                not_found="no such message (or no store)"),
            "/api/threads/{message_id}": _api(
                "the conversation a message belongs to: every message, oldest first",
                _json(_thread(), "the thread (docs/threads.md)"),
                [{"name": "message_id", "in": "path", "required": True, "schema": _TEXT,
                  "description": "a Message-ID (with or without <>) of any message in it"}],
                not_found="no such message (or no store)"),
            "/api/messages": _api(
                "the deliveries to one recipient, oldest first, each with its timeline",
                _json(_object({"recipient": {"type": "string"}} | deliveries_of["properties"]),
                      "the recipient's deliveries"),
                [_query("recipient", _TEXT, "an address", True),
                 _limit("deliveries")]) | {"post": _send()},
            "/api/domains": _api("the busiest recipient domains over each window",
                                 _json(_rollup("domain"), "rollup"), rollup_params),
            "/api/providers": _api("the busiest mailbox providers over each window",
                                   _json(_rollup("provider"), "rollup"), rollup_params),
            "/api/incidents": _api(
                "incidents, newest first",
                _json({"type": "array", "items": {"$ref": "#/components/schemas/Incident"}},
                      "incidents"),
                [_query("open", {"type": "string", "enum": ["1", "0", "true", "false", "yes",
                                                            "no"]}, "only open ones (1) or all"),
                 _query("since", _SECONDS, "those open or ended after this UNIX time"),
                 _query("kind", _TEXT, "one kind, e.g. domain_rejecting"),
                 _limit("incidents")]),
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _object({"error": {"type": "string"}}),
                "Health": _health(),
                "Delivery": _delivery(),
                "Event": _event(),
                "Counts": _counts(),
                "Incident": _object({
                    "id": {"type": "integer"}, "kind": {"type": "string"},
                    "provider": {"type": "string"}, "domain": {"type": "string"},
                    "started_at": _TIME, "ended_at": _nullable(dict(_TIME), True),
                    "evidence": {"type": "object", "description": "window counts, rates, "
                                 "baseline and top replies that opened it"},
                }),
            },
        },
    }
# fmt: on
