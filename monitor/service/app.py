"""The HTTP app: ``/metrics`` for Prometheus, ``/healthz`` for orchestrators, ``/api/incidents``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from monitor import __version__
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.service.hook import MAX_HOOK_BODY_BYTES, SourceEndpoint, kumomta_hook

if TYPE_CHECKING:
    from monitor.store import Store

__all__ = ["MAX_HOOK_BODY_BYTES", "create_app"]

log = logging.getLogger(__name__)


#: ``?open=`` values, as the CLI's flags would say them.
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


def create_app(
    metrics: Metrics,
    *,
    health: Callable[[], Mapping[str, object]] | None = None,
    pipeline: Pipeline | None = None,
    store: Store | None = None,
    hook_token: str | None = None,
    max_body_bytes: int = MAX_HOOK_BODY_BYTES,
    endpoints: Sequence[SourceEndpoint] = (),
) -> Starlette:
    """The ASGI app.

    ``/healthz`` reports each part's ``{"status": "ok"|"failing"|"starting", "reason"?}``: the
    store (with a ``store``), the log hook (with a ``pipeline``) and what ``health`` returns
    (a name -> such a dict, or a name -> a mapping of them, e.g. each followed log); any part
    failing makes it answer 503, with the failing parts named.  With a ``pipeline``,
    ``POST /ingest/kumomta`` takes KumoMTA log-hook records into it (``monitor.service.hook``;
    ``hook_token`` makes it require ``Authorization: Bearer TOKEN``).  With a ``store``,
    ``GET /api/incidents[?open=1][&since=UNIX seconds][&kind=KIND]`` lists the rollup engine's
    incidents.  Each of ``endpoints`` takes its source's records at ``POST`` its path
    (``monitor.service.hook``), its health under ``ingest:KIND``.
    """
    hook = (kumomta_hook(pipeline, metrics, token=hook_token, max_body_bytes=max_body_bytes)
            if pipeline is not None else None)  # fmt: skip

    async def no_hook(request: Request) -> Response:
        return JSONResponse({"error": "no pipeline"}, status_code=404)

    async def api_incidents(request: Request) -> Response:
        if store is None:
            return JSONResponse({"error": "no store"}, status_code=404)
        raw_open = request.query_params.get("open", "").lower()
        if raw_open not in _TRUE + _FALSE:
            return JSONResponse({"error": "open: expected 1 or 0 (true/false, yes/no)"},
                                status_code=400)  # fmt: skip
        open_only = raw_open in _TRUE
        raw_since = request.query_params.get("since")
        try:
            since = None if raw_since is None else float(raw_since)
        except ValueError:
            return JSONResponse({"error": "since: expected UNIX seconds"}, status_code=400)
        kind = request.query_params.get("kind")
        return JSONResponse(await run_in_threadpool(_incidents, open_only, since, kind))

    def _incidents(
        open_only: bool, since: float | None, kind: str | None
    ) -> list[dict[str, object]]:
        from monitor.rollup import list_incidents

        with store.engine.connect() as conn:  # type: ignore[union-attr]
            rows = list_incidents(conn, open_only=open_only, since=since, kind=kind)
        return [r | {"started_at": _iso(r["started_at"]), "ended_at": _iso(r["ended_at"])}
                for r in rows]

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def _check_store() -> dict[str, object]:
        try:
            store.count("counters")  # type: ignore[union-attr]
        except Exception as exc:
            # The detail is for the operator's log, not for whoever asks /healthz.
            log.warning("/healthz: the database is unreachable: %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return {"status": "failing", "reason": "database unreachable"}
        return {"status": "ok"}

    def _checks() -> dict[str, object]:
        checks: dict[str, object] = {}
        if store is not None:
            checks["store"] = _check_store()
        if hook is not None:
            checks["hook"] = hook.health()
        for endpoint in endpoints:
            checks[f"ingest:{endpoint.source.kind}"] = endpoint.health()
        if health is not None:
            try:
                checks.update(health())
            except Exception:
                log.exception("/healthz: a health check failed")
                checks["service"] = {"status": "failing", "reason": "health check failed"}
        return checks

    async def healthz(request: Request) -> Response:
        checks = await run_in_threadpool(_checks)
        failing = sorted(_failing(checks))
        body: dict[str, object] = {"status": "failing" if failing else "ok",
                                   "version": __version__, **checks}  # fmt: skip
        if failing:
            body["failing"] = failing
        return JSONResponse(body, status_code=503 if failing else 200)

    async def index(request: Request) -> Response:
        return PlainTextResponse(f"mailmon {__version__}\n/metrics\n/healthz\n/api/incidents\n")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/metrics", metrics_endpoint),
            Route("/healthz", healthz),
            Route("/ingest/kumomta", hook or no_hook, methods=["POST"]),
            Route("/api/incidents", api_incidents),
            *(Route(e.path, e, methods=["POST"]) for e in endpoints),
        ]
    )


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


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
