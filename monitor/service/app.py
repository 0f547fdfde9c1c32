"""The HTTP app: ``/metrics`` for Prometheus and ``/healthz`` for orchestrators."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from monitor import __version__
from monitor.metrics import Metrics

__all__ = ["create_app"]


def create_app(
    metrics: Metrics, *, health: Callable[[], dict[str, object]] | None = None
) -> Starlette:
    """The ASGI app; ``health`` returns extra detail for ``/healthz`` and raises when unhealthy."""

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
        return PlainTextResponse(f"mailmon {__version__}\n/metrics\n/healthz\n")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/metrics", metrics_endpoint),
            Route("/healthz", healthz),
        ]
    )
