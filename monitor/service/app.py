"""The HTTP app, made of components that each bring their routes and their health.

    app = build_app([MetricsRoutes(metrics), StoreRoutes(store), kumomta_hook(...)])

A component has ``routes()`` and may have ``health()`` (its part of ``/healthz``) and a
``name`` for it.  ``/`` lists the paths; ``/healthz`` answers 503 when any part fails.
:func:`create_app` is the app ``serve`` runs, composed from its arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from monitor import __version__
from monitor.config import SendConfig
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.service.api import ApiRoutes
from monitor.service.auth import BearerGuard
from monitor.service.hook import MAX_HOOK_BODY_BYTES, SourceEndpoint, kumomta_hook
from monitor.service.overview import OverviewRoutes, PageGuard

if TYPE_CHECKING:
    from monitor.store import Store

__all__ = [
    "MAX_HOOK_BODY_BYTES", "Component", "MetricsRoutes", "StoreRoutes", "build_app", "create_app",
]

log = logging.getLogger(__name__)

class Component(Protocol):
    """A part of the service that answers HTTP: its routes, and its part of ``/healthz``."""

    #: the part's name in ``/healthz``
    name: str

    def routes(self) -> list[BaseRoute]: ...

    def health(self) -> Mapping[str, object] | None:
        """``{"status": "ok"|"failing"|"starting", "reason"?}``, or None: nothing to say."""


class MetricsRoutes:
    """``GET /metrics``: the Prometheus exposition of ``metrics``; with a ``guard``, only for
    requests it lets through."""

    name = "metrics"

    def __init__(self, metrics: Metrics, guard: BearerGuard | None = None) -> None:
        self.metrics = metrics
        self.guard = guard

    def routes(self) -> list[BaseRoute]:
        return [Route("/metrics", self.exposition)]

    def health(self) -> None:
        return None

    async def exposition(self, request: Request) -> Response:
        if self.guard is not None and (refusal := self.guard.refusal(request)) is not None:
            return refusal
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class StoreRoutes:
    """The store's part of ``/healthz`` (and ``/readyz``): whether the database answers."""

    name = "store"

    def __init__(self, store: Store | None) -> None:
        self.store = store

    def routes(self) -> list[BaseRoute]:
        return []

    def health(self) -> dict[str, object] | None:
        if self.store is None:
            return None
        try:
            self.store.count("counters")
        except Exception as exc:
            # The detail is for the operator's log, not for whoever asks /healthz.
            log.warning("/healthz: the database is unreachable: %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return {"status": "failing", "reason": "database unreachable"}
        return {"status": "ok"}


class _Health:
    """``GET /healthz``: each part's ``{"status": "ok"|"failing"|"starting", "reason"?}``."""

    def __init__(self, parts: Sequence[Component],
                 extra: Callable[[], Mapping[str, object]] | None) -> None:  # fmt: skip
        self.parts = parts
        self.extra = extra

    def checks(self) -> dict[str, object]:
        checks: dict[str, object] = {}
        for part in self.parts:
            status = part.health()
            if status is not None:
                checks[part.name] = dict(status)
        if self.extra is not None:
            try:
                checks.update(self.extra())
            except Exception:
                log.exception("/healthz: a health check failed")
                checks["service"] = {"status": "failing", "reason": "health check failed"}
        return checks

    async def respond(self, request: Request) -> Response:
        return self._answer(await run_in_threadpool(self.checks))

    async def ready(self, request: Request) -> Response:
        """Ready: the store answers (a service without one is not) and no part fails."""
        checks = await run_in_threadpool(self.checks)
        if "store" not in checks:
            checks["store"] = {"status": "failing", "reason": "no store"}
        return self._answer(checks)

    def _answer(self, checks: dict[str, object]) -> Response:
        failing = sorted(_failing(checks))
        body: dict[str, object] = {"status": "failing" if failing else "ok",
                                   "version": __version__, **checks}  # fmt: skip
        if failing:
            body["failing"] = failing
        return JSONResponse(body, status_code=503 if failing else 200)


def build_app(
    components: Sequence[Component],
    *,
    health: Callable[[], Mapping[str, object]] | None = None,
) -> Starlette:
    """One app of ``components``; ``health`` adds parts of its own to ``/healthz`` (a name ->
    a status dict, or a name -> a mapping of them, e.g. each followed log)."""
    checks = _Health(components, health)
    routes: list[BaseRoute] = [Route("/healthz", checks.respond), Route("/readyz", checks.ready)]
    for component in components:
        routes += component.routes()
    # What a person can open: the GET routes (the ingest endpoints take POSTs).
    listing = "".join(f"{r.path}\n" for r in routes
                      if isinstance(r, Route) and r.methods and "GET" in r.methods)  # fmt: skip

    async def index(request: Request) -> Response:
        return PlainTextResponse(f"mailmon {__version__}\n{listing}")

    async def not_found(request: Request, exc: Exception) -> Response:
        # JSON like every other answer (a path the routes cannot match, e.g. holding a newline).
        return JSONResponse({"error": "not found"}, status_code=404)

    # A component's own "/" (the overview page) comes first; without one, "/" lists the paths.
    return Starlette(routes=[*routes, Route("/", index)], exception_handlers={404: not_found})


class _NoPipeline:
    """``POST /ingest/kumomta`` where nothing can be stored: 404, said plainly."""

    name = "hook"

    def health(self) -> None:
        return None

    def routes(self) -> list[BaseRoute]:
        return [Route("/ingest/kumomta", self.refuse, methods=["POST"])]

    async def refuse(self, request: Request) -> Response:
        return JSONResponse({"error": "no pipeline"}, status_code=404)


def create_app(
    metrics: Metrics,
    *,
    health: Callable[[], Mapping[str, object]] | None = None,
    pipeline: Pipeline | None = None,
    store: Store | None = None,
    hook_token: str | None = None,
    hook_username: str | None = None,
    api_token: str | None = None,
    protect_metrics: bool = False,
    max_body_bytes: int = MAX_HOOK_BODY_BYTES,
    endpoints: Sequence[SourceEndpoint] = (),
    send: SendConfig | None = None,
) -> Starlette:
    """The service's app: ``/metrics`` (behind ``api_token`` with ``protect_metrics``); with a
    ``store``, its health and the read API (``/api/...``, behind ``api_token``); with a
    ``pipeline``, KumoMTA's log hook at ``POST /ingest/kumomta`` (``hook_token`` makes it
    require ``Authorization: Bearer TOKEN``, or Basic ``hook_username:TOKEN`` when a username
    is given); each of ``endpoints`` at its path.  With a ``store``, ``/`` is the overview page
    (``monitor.service.overview``, behind the API's token rule)."""
    guard = BearerGuard(api_token)
    components: list[Component] = [
        MetricsRoutes(metrics, guard if protect_metrics else None), StoreRoutes(store),
        ApiRoutes(store, guard, send=send),
    ]
    if store is not None:
        # The overview page reads what the API reads: the same token rule (docs/security.md).
        store_health = StoreRoutes(store)
        components.append(OverviewRoutes(
            store, metrics.registry, PageGuard(api_token),
            health=lambda: {"store": store_health.health() or {}, **(health() if health else {})},
        ))  # fmt: skip
    if pipeline is not None:
        components.append(kumomta_hook(pipeline, metrics, token=hook_token, username=hook_username,
                                       max_body_bytes=max_body_bytes))  # fmt: skip
    else:
        components.append(_NoPipeline())
    components += endpoints
    return build_app(components, health=health)


def _failing(checks: Mapping[str, object], prefix: str = "") -> list[str]:
    """Names of the parts whose status is "failing" (nested ones as ``logs:PATH``)."""
    names = []
    for name, check in checks.items():
        if not isinstance(check, Mapping):
            continue
        if "status" in check:
            if check["status"] == "failing":
                names.append(prefix + name)
        else:
            names += _failing(check, f"{prefix}{name}:")
    return names
