"""The HTTP app: ``/metrics`` for Prometheus, ``/healthz`` for orchestrators, ``/api/incidents``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from monitor import __version__
from monitor.collectors.mta.kumomta import KumoParser
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline

if TYPE_CHECKING:
    from monitor.store import Store

__all__ = ["create_app"]


MAX_HOOK_BODY_BYTES = 10 << 20
#: The checkpoint key under which the log hook keeps its input counts.
HOOK_CHECKPOINT = "hook:kumomta"


def create_app(
    metrics: Metrics,
    *,
    health: Callable[[], dict[str, object]] | None = None,
    pipeline: Pipeline | None = None,
    store: Store | None = None,
) -> Starlette:
    """The ASGI app; ``health`` returns extra detail for ``/healthz`` and raises when unhealthy.

    With a ``pipeline``, ``POST /ingest/kumomta`` takes KumoMTA log-hook records (one
    JSON object, an array of them, or one per line) into it.  With a ``store``,
    ``GET /api/incidents[?open=1][&since=UNIX seconds][&kind=KIND]`` lists the rollup engine's
    incidents.
    """
    hook_lock = threading.Lock()  # the pipeline batches; one request at a time fills it
    # What the hook has read, kept in a checkpoint stored with each request's events, so a
    # restarted service's counters (seeded from the store) include it.
    saved = (pipeline.store.checkpoint(HOOK_CHECKPOINT) or {}) if pipeline is not None else {}
    hook_counts: dict[str, Any] = saved.get("counts") or {
        "source": "kumomta", "lines": 0, "rejected": {},
    }  # fmt: skip

    def _store_hook_counts(lines: int, rejected: dict[str, int]) -> None:
        """Add to the hook's counts and store them with the pending events (hold hook_lock)."""
        counts = {
            "source": "kumomta",
            "lines": hook_counts["lines"] + lines,
            "rejected": dict(hook_counts["rejected"]),
        }
        for reason, n in rejected.items():
            if n:
                counts["rejected"][reason] = counts["rejected"].get(reason, 0) + n
        pipeline.flush(checkpoint=(HOOK_CHECKPOINT, {"counts": counts}))  # type: ignore[union-attr]
        hook_counts.update(counts)

    async def kumomta_hook(request: Request) -> Response:
        if pipeline is None:
            return JSONResponse({"error": "no pipeline"}, status_code=404)
        body = await request.body()
        if len(body) > MAX_HOOK_BODY_BYTES:
            await run_in_threadpool(_too_large)
            return JSONResponse({"error": "body too large"}, status_code=413)
        return JSONResponse(await run_in_threadpool(_ingest_kumomta, body))

    def _too_large() -> None:
        with hook_lock:
            _store_hook_counts(0, {"too_large": 1})
        metrics.rejected.labels("kumomta", "too_large").inc()

    def _ingest_kumomta(body: bytes) -> dict[str, int]:
        text = body.decode("utf-8", "replace").strip()
        records: list[str]
        if text.startswith("["):
            try:
                records = [json.dumps(r) for r in json.loads(text)]
            except ValueError:
                records = [text]
        else:
            records = text.splitlines()
        parser = KumoParser()
        with hook_lock:
            for line in records:
                for event in parser.feed(line, "http:/ingest/kumomta"):
                    pipeline.put(event)  # type: ignore[union-attr]
            bad = sum(parser.stats.unparsed.values())
            _store_hook_counts(parser.stats.lines, {"unparsed": bad})
        metrics.count_input("kumomta", parser.stats.lines, bad)
        return {"records": parser.stats.lines, "events": parser.stats.events, "rejected": bad}

    async def api_incidents(request: Request) -> Response:
        if store is None:
            return JSONResponse({"error": "no store"}, status_code=404)
        open_only = request.query_params.get("open", "") in ("1", "true", "yes")
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

    async def healthz(request: Request) -> Response:
        body: dict[str, object] = {"status": "ok", "version": __version__}
        if health is not None:
            try:
                body.update(health())
            except Exception as exc:  # any failure of a check means unhealthy
                return JSONResponse({"status": "error", "error": str(exc)}, status_code=503)
        return JSONResponse(body)

    async def index(request: Request) -> Response:
        return PlainTextResponse(f"mailmon {__version__}\n/metrics\n/healthz\n/api/incidents\n")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/metrics", metrics_endpoint),
            Route("/healthz", healthz),
            Route("/ingest/kumomta", kumomta_hook, methods=["POST"]),
            Route("/api/incidents", api_incidents),
        ]
    )


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()
