"""``POST /webhooks/NAME``: one endpoint per ESP configured in ``[webhooks.NAME]``."""

from __future__ import annotations

from monitor.collectors.esp import base
from monitor.config import Config
from monitor.errors import ConfigError
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.service.hook import SourceEndpoint

__all__ = ["webhook_endpoints"]


def webhook_endpoints(config: Config, pipeline: Pipeline, metrics: Metrics) -> list[SourceEndpoint]:
    """The enabled providers' endpoints; a provider that needs a secret and has none is a
    configuration error (its route would take anyone's events)."""
    known = base.webhooks()
    endpoints = []
    for name, settings in sorted(config.webhooks.items()):
        if not settings.enabled:
            continue
        hook = known.get(name)
        if hook is None:
            raise ConfigError(f"webhooks.{name}: no such provider; known: {', '.join(known)}")
        if hook.secret and settings.secret_env is None and settings.secret_file is None:
            raise ConfigError(f"webhooks.{name}: set secret_env or secret_file (its signing key, "
                              "password or token): an endpoint without one would take anyone's "
                              "events")  # fmt: skip
        endpoints.append(SourceEndpoint(
            pipeline, metrics, hook.source(), hook.split, path=f"/webhooks/{name}",
            name=f"webhook:{name}", verifier=hook.verifier(settings),
            max_body_bytes=config.service.max_body_bytes,
        ))  # fmt: skip
    return endpoints
