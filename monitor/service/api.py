"""The read API: ``/api/...`` over the store, behind a bearer token, described at ``/openapi.json``.

    api = ApiRoutes(store, BearerGuard(token))      # a Component: build_app([..., api])

``GET /api/messages/{message_id}`` and ``GET /api/messages?recipient=`` give deliveries with
their timelines; ``GET /api/domains`` and ``GET /api/providers`` the busiest subjects' counts
and rates over 5 minutes, 15 minutes, 1 hour and 24 hours with their open incidents;
``GET /api/incidents`` the incidents.  Bad parameters get 400, a missing or wrong token 401
(``monitor.service.auth``), an unreachable database 503; every answer is JSON, as the spec
(``monitor.service.api_spec``) says.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from monitor.service import api_data
from monitor.service.api_spec import LIMITS, MAX_AT, spec
from monitor.service.auth import BearerGuard

if TYPE_CHECKING:
    from monitor.config import SendConfig
    from monitor.store import Store

__all__ = ["ApiRoutes", "BadParameter"]

log = logging.getLogger(__name__)

#: ``?open=`` values, as the CLI's flags would say them.
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
#: What ``int()`` and ``float()`` take beyond what the spec says (``1_000``, ``inf``, spaces,
#: other scripts' digits) is refused, so a parameter means one thing.
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


class BadParameter(ValueError):
    """A query parameter the API cannot take; its message is the 400's ``error``."""


class ApiRoutes:
    """``/api/...`` and ``/openapi.json`` (the latter open to all: it says nothing stored)."""

    name = "api"

    def __init__(self, store: Store | None, guard: BearerGuard,
                 clock: Callable[[], float] = time.time, *,
                 send: SendConfig | None = None) -> None:  # fmt: skip
        self.store = store
        self.send = send
        self.guard = guard
        self.clock = clock
        self._spec = spec()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/openapi.json", self.openapi),
            Route("/api/messages", self._guarded("/api/messages", self._by_recipient)),
            Route("/api/messages", self._submit, methods=["POST"]),
            Route("/api/messages/{message_id:path}",
                  self._guarded("/api/messages/{message_id}", self._message)),
            Route("/api/threads/{message_id:path}",
                  self._guarded("/api/threads/{message_id}", self._thread)),
            Route("/api/domains", self._guarded("/api/domains", self._rollup("domain"))),
            Route("/api/providers", self._guarded("/api/providers", self._rollup("provider"))),
            Route("/api/incidents", self._guarded("/api/incidents", self._incidents)),
        ]

    def health(self) -> None:
        return None  # the store's part of /healthz is StoreRoutes'

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self._spec)

    Reader = Callable[[Request, Connection], tuple[int, object]]

    def _guarded(self, path: str, read: Reader) -> Callable[[Request], Any]:
        """The endpoint: the token checked, parameters read, ``read`` run off the loop."""
        # A parameter the spec does not name (a typo: ``limt``) is refused, not ignored.
        known = {p["name"] for p in self._spec["paths"][path]["get"]["parameters"]
                 if p["in"] == "query"}  # fmt: skip

        async def endpoint(request: Request) -> Response:
            refusal = self.guard.refusal(request)
            if refusal is not None:
                return refusal
            unknown = sorted(set(request.query_params) - known)
            if unknown:
                return JSONResponse({"error": f"unknown parameter {', '.join(unknown)}"},
                                    status_code=400)  # fmt: skip
            if self.store is None:
                return JSONResponse({"error": "no store"}, status_code=404)
            try:
                status, body = await run_in_threadpool(self._read, read, request)
            except BadParameter as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except SQLAlchemyError as exc:
                log.warning("%s: the database failed: %s", request.url.path,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                return JSONResponse({"error": "database unavailable"}, status_code=503)
            return JSONResponse(body, status_code=status)

        return endpoint

    def _read(self, read: Reader, request: Request) -> tuple[int, object]:
        assert self.store is not None
        with self.store.engine.connect() as conn:
            return read(request, conn)

    def _message(self, request: Request, conn: Connection) -> tuple[int, object]:
        message_id = _text(request.path_params["message_id"], "message_id")
        found = api_data.deliveries_of(conn, message_id, by="message",
                                       limit=LIMITS["deliveries"][1])  # fmt: skip
        if not found:
            return 404, {"error": "no such message"}
        ids = {d["message_id"] for d in found if d["message_id"]}
        thread = _thread_json(conn, ids.pop()) if len(ids) == 1 else None
        return 200, {"message_id": message_id, "deliveries": found, "thread": thread}

    def _thread(self, request: Request, conn: Connection) -> tuple[int, object]:
        message_id = _text(request.path_params["message_id"], "message_id")
        thread = _thread_json(conn, message_id)
        if thread is None:
            return 404, {"error": "no such message"}
        return 200, thread

    async def _submit(self, request: Request) -> Response:
        """``POST /api/messages``: compose, submit and record one message (docs/send.md)."""
        refusal = self.guard.refusal(request)
        if refusal is not None:
            return refusal
        if self.store is None or self.send is None:
            return JSONResponse({"error": "sending is not configured ([send] from_address)"},
                                status_code=404)  # fmt: skip
        body = await request.body()
        if len(body) > _MAX_SEND_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            draft = _draft(body)
        except BadParameter as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            sent = await run_in_threadpool(self._send, draft)
        except (OSError, ValueError) as exc:  # the relay unreachable, or refusing us whole
            log.warning("POST /api/messages: %s: %s", type(exc).__name__, exc)
            return JSONResponse({"error": f"the relay failed: {type(exc).__name__}"},
                                status_code=502)  # fmt: skip
        except Exception as exc:  # aiosmtplib's own errors (SMTPException is not OSError)
            if type(exc).__module__.startswith("aiosmtplib"):
                log.warning("POST /api/messages: %s: %s", type(exc).__name__, exc)
                return JSONResponse({"error": f"the relay failed: {type(exc).__name__}"},
                                    status_code=502)  # fmt: skip
            raise
        return JSONResponse({"message_id": sent.message_id, "subject": sent.subject,
                             "recipients": sent.recipients}, status_code=202)  # fmt: skip

    def _send(self, draft: Any) -> Any:
        from monitor.pipeline import Pipeline
        from monitor.send import send

        assert self.store is not None and self.send is not None
        pipeline = Pipeline(self.store)
        try:
            return send(draft, self.send, pipeline)
        finally:
            pipeline.close()

    def _by_recipient(self, request: Request, conn: Connection) -> tuple[int, object]:
        raw = request.query_params.get("recipient")
        if not raw:
            raise BadParameter("recipient: required (an address)")
        recipient = _text(raw, "recipient")
        limit = _int(request, "limit", *LIMITS["deliveries"])
        found = api_data.deliveries_of(conn, recipient, by="recipient", limit=limit)
        return 200, {"recipient": recipient, "deliveries": found}

    def _rollup(self, by: str) -> Reader:
        def read(request: Request, conn: Connection) -> tuple[int, object]:
            limit = _int(request, "limit", *LIMITS["rollup"])
            at = _number(request, "at", 0.0, MAX_AT)
            return 200, api_data.rollup(conn, by, at=self.clock() if at is None else at,
                                        limit=limit)  # fmt: skip

        return read

    def _incidents(self, request: Request, conn: Connection) -> tuple[int, object]:
        raw_open = request.query_params.get("open", "0")
        if raw_open not in _TRUE + _FALSE:
            raise BadParameter("open: expected 1 or 0 (true/false, yes/no)")
        since = _number(request, "since", 0.0, MAX_AT)
        kind = request.query_params.get("kind")
        limit = _int(request, "limit", *LIMITS["incidents"])
        return 200, api_data.incidents(conn, open_only=raw_open in _TRUE, since=since,
                                       kind=None if kind is None else _text(kind, "kind"),
                                       limit=limit)  # fmt: skip


def _text(value: str, name: str) -> str:
    if not value:
        raise BadParameter(f"{name}: must not be empty")
    # PostgreSQL refuses NUL in text; no address, Message-ID or kind holds one.
    if "\x00" in value:
        raise BadParameter(f"{name}: must not hold a NUL character")
    return value


def _int(request: Request, name: str, lowest: int, highest: int, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        raise BadParameter(f"{name}: expected a whole number")
    value = int(raw)
    if not lowest <= value <= highest:
        raise BadParameter(f"{name}: expected {lowest} to {highest}")
    return value


def _number(request: Request, name: str, lowest: float, highest: float) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not _NUMBER.fullmatch(raw):
        raise BadParameter(f"{name}: expected UNIX seconds")
    value = float(raw)
    if not math.isfinite(value) or not lowest <= value <= highest:
        raise BadParameter(f"{name}: expected UNIX seconds from {lowest:.0f} to {highest:.0f}")
    return value


def _thread_json(conn: Connection, message_id: str) -> dict[str, Any] | None:
    """The thread of ``message_id`` (docs/threads.md), times in ISO 8601."""
    from monitor.cli.threads import thread_json
    from monitor.threads.build import thread_of

    thread = thread_of(conn, message_id)
    return thread_json(thread) if thread is not None else None


_MAX_SEND_BYTES = 1 << 20
_SEND_FIELDS = {"to", "subject", "text", "html", "from", "reply_to", "in_reply_to", "tags"}


def _draft(body: bytes) -> Any:
    """The draft a ``POST /api/messages`` body describes, or :class:`BadParameter`."""
    import json

    from monitor.send import Draft

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadParameter("the body must be a JSON object")
    unknown = sorted(set(data) - _SEND_FIELDS)
    if unknown:
        raise BadParameter(f"unknown field {', '.join(unknown)}")
    to = data.get("to")
    if not isinstance(to, list) or not to or len(to) > 100 or not all(
            isinstance(a, str) and _ADDRESS.fullmatch(a) for a in to):  # fmt: skip
        raise BadParameter("to: 1 to 100 addresses")
    texts = {}
    for name in ("subject", "text", "html", "from", "reply_to", "in_reply_to"):
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            raise BadParameter(f"{name}: a string")
        if value is not None and name != "text" and name != "html" and (
                "\r" in value or "\n" in value):  # fmt: skip
            raise BadParameter(f"{name}: one line")  # no header injection
        texts[name] = value
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise BadParameter("tags: strings")
    if not texts["subject"] and not texts["in_reply_to"]:
        raise BadParameter("subject: required unless in_reply_to")
    return Draft(to=tuple(to), subject=texts["subject"], text=texts["text"] or "",
                 html=texts["html"], from_address=texts["from"], reply_to=texts["reply_to"],
                 in_reply_to=texts["in_reply_to"], tags=tuple(tags))  # fmt: skip


_ADDRESS = re.compile(r"[^\s@<>,;]+@[^\s@<>,;]+\.[^\s@<>,;]+")
