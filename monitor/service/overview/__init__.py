"""The overview page at ``/`` (and a trace result at ``/trace?q=``): for people without Grafana.

    page = OverviewRoutes(store, metrics.registry, PageGuard(token), health=follower.health)

A Component of the app (``monitor.service.app``): server-rendered HTML, no script, nothing
fetched from elsewhere (a Content-Security-Policy says so to the browser).  Who may read it
is the read API's rule (``docs/security.md``): it shows recipients, so with no API token it
answers loopback clients only; with one, a request needs it as a bearer token or as the
password of HTTP Basic (any user name), so that a browser can ask for it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from monitor.service.auth import REALM, BearerGuard
from monitor.service.overview.data import overview
from monitor.service.overview.render import page

if TYPE_CHECKING:
    from monitor.store import Store

__all__ = ["CSP", "OverviewRoutes", "PageGuard"]

log = logging.getLogger(__name__)

#: Nothing but the page itself: no script, no request to any other origin.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")  # fmt: skip
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a traced address must not travel in a Referer
    "Cache-Control": "no-store",
}
#: A query longer than a Message-ID may be (RFC 5322's line limit) names nothing.
MAX_QUERY = 998
TRACE_LIMIT = 50


class PageGuard:
    """The API's bearer rule, plus HTTP Basic with the token as password (what a browser
    can send); a refusal asks for Basic so the browser shows its login dialog."""

    def __init__(self, token: str | None) -> None:
        self.bearer = BearerGuard(token)
        self._token = None if token is None else token.encode()

    def refusal(self, request: Request) -> Response | None:
        if self._token is None:
            if self.bearer.refusal(request) is None:
                return None
            return _refused(403, "No API token is configured: this page answers on this "
                            "machine only (open it on 127.0.0.1, or set MAILMON_API_TOKEN).")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                _, _, password = base64.b64decode(given.strip(), validate=True).decode(
                    "utf-8").partition(":")  # fmt: skip
            except (binascii.Error, UnicodeDecodeError):
                password = ""
            if password and hmac.compare_digest(password.encode(), self._token):
                return None
        elif self.bearer.refusal(request) is None:
            return None
        response = _refused(401, "This page needs the API token (as the password; any user).")
        response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
        return response


def _refused(status: int, message: str) -> Response:
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Mailmon</title>'
            f"</head><body><main><p>{message}</p></main></body></html>")  # fmt: skip
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


class OverviewRoutes:
    """``GET /`` (``?q=`` adds a trace result) and ``GET /trace?q=``."""

    name = "overview"

    def __init__(self, store: Store | None, registry: CollectorRegistry | None, guard: PageGuard,
                 *, health: Callable[[], Mapping[str, object]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.store = store
        self.registry = registry
        self.guard = guard
        self.health_of = health
        self.clock = clock

    def routes(self) -> list[BaseRoute]:
        return [Route("/", self.index), Route("/trace", self.trace)]

    def health(self) -> None:
        return None

    async def index(self, request: Request) -> Response:
        if (refusal := self.guard.refusal(request)) is not None:
            return refusal
        query = request.query_params.get("q")
        return await self._answer(query.strip() if query is not None else None)

    async def trace(self, request: Request) -> Response:
        if (refusal := self.guard.refusal(request)) is not None:
            return refusal
        query = (request.query_params.get("q") or "").strip()
        if not query:
            return RedirectResponse("/", status_code=303)
        return await self._answer(query)

    async def _answer(self, query: str | None) -> Response:
        html, status = await run_in_threadpool(self.render, query)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def render(self, query: str | None) -> tuple[str, int]:
        """The page and its status (200; 503 when the store cannot be read)."""
        checks = self._checks()
        found: list[dict[str, Any]] | None = None
        error = None
        status = 200
        at = self.clock()
        if self.store is None:
            view = overview(None, at=at, registry=self.registry, checks=checks)
            view.store_error = "no store"
            return page(view, query=query, found=[], error="no store" if query else None), 503
        try:
            with self.store.engine.connect() as conn:
                view = overview(conn, at=at, registry=self.registry, checks=checks)
                if query:
                    if len(query) > MAX_QUERY or "\x00" in query:
                        error = "Not a Message-ID, queue id or address."
                    else:
                        found = self.store.trace(query, limit=TRACE_LIMIT)
        except SQLAlchemyError as exc:
            log.warning("/: the database failed: %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            view = overview(None, at=at, registry=self.registry, checks=checks)
            status, error = 503, ("The store cannot be read." if query else None)
        return page(view, query=query or None, found=found, error=error), status

    def _checks(self) -> Mapping[str, object]:
        if self.health_of is None:
            return {}
        try:
            return self.health_of()
        except Exception:
            log.exception("/: a health check failed")
            return {"service": {"status": "failing", "reason": "health check failed"}}
