"""An app serving configured ESP webhooks over a fresh SQLite store, posted to over ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from monitor.config import Config
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.service.app import create_app
from monitor.service.webhooks import webhook_endpoints
from monitor.store import Store

__all__ = ["Served", "served"]


@dataclass
class Served:
    """A store, its pipeline and metrics, and the app serving the configured webhooks."""

    store: Store
    metrics: Metrics
    app: Any

    def post(self, name: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mailmon") as c:
                return await c.post(f"/webhooks/{name}", content=body, headers=dict(headers))

        return asyncio.run(send())

    def value(self, metric: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(metric, labels) or 0.0


@contextmanager
def served(tmp_path: Path, config: Config) -> Iterator[Served]:
    """The app of ``config``'s webhooks over a fresh SQLite store."""
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        metrics = Metrics(CollectorRegistry())
        pipeline = Pipeline(store, metrics=metrics)
        app = create_app(metrics, endpoints=webhook_endpoints(config, pipeline, metrics))
        yield Served(store, metrics, app)
