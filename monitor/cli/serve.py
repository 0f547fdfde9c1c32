"""``mailmon serve``: the HTTP service, the log followers and the scheduled jobs."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from monitor.cli.common import config_of, open_store
from monitor.config import API_TOKEN_ENV, HOOK_TOKEN_ENV, api_token, hook_token, resolve_db_url
from monitor.errors import ConfigError

__all__ = ["register"]

log = logging.getLogger(__name__)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="run the service",
        description="Serve /metrics, /healthz, /readyz, the read API (/api/messages, "
        "/api/messages/{message_id:path}, /api/threads/{message_id:path}, /api/domains, "
        "/api/providers, /api/incidents; "
        "behind MAILMON_API_TOKEN or [api] token_file, described at /openapi.json) and the "
        "KumoMTA log hook "
        "(POST /ingest/kumomta), follow the logs named in the config file and run the "
        "scheduled jobs (the rollup engine; `mailmon jobs` lists them).",
    )
    p.add_argument("--host", help="listen address (default: [service] listen_host, 127.0.0.1); "
                   "any but a loopback address needs the hook token (MAILMON_HOOK_TOKEN or "
                   "[service] hook_token_file)")  # fmt: skip
    p.add_argument("--port", type=int, help="listen port (default: [service] listen_port, 8465)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from monitor.service.compose import Service
    from monitor.service.server import bind, build_server, is_loopback

    config = config_of(args)
    host = args.host or config.service.listen_host
    port = args.port if args.port is not None else config.service.listen_port
    token = hook_token(config)
    if token is None and not is_loopback(host):
        # The hook writes into the store: on an address others can reach it takes a token.
        raise ConfigError(
            f"listening on {host} needs a token for the log hook: set [service] "
            f"hook_token_file or {HOOK_TOKEN_ENV}, or listen on 127.0.0.1"
        )
    read_token = api_token(config)
    if read_token is None and config.api.protect_metrics:
        raise ConfigError(f"[api] protect_metrics needs the API token: set [api] token_file "
                          f"or {API_TOKEN_ENV}")  # fmt: skip
    if read_token is None and not is_loopback(host):
        # Not refused: the webhooks must be reachable; the API then answers loopback only.
        log.warning("no API token ([api] token_file or %s): /api answers loopback clients "
                    "only", API_TOKEN_ENV)  # fmt: skip
    # Before anything is started or said: a port in use is one error and a non-zero exit.
    sock = bind(host, port)
    port = sock.getsockname()[1]
    store = open_store(args, config)
    try:
        # A config mistake stops it here.
        service = Service(config, store, hook_token=token, api_token=read_token)
    except BaseException:
        store.close()
        sock.close()
        raise
    server = build_server(service.app,
                          request_timeout_seconds=config.service.request_timeout_seconds,
                          max_connections=config.service.max_connections)  # fmt: skip
    db = make_url(resolve_db_url(args.db, config)).render_as_string(hide_password=True)
    shown_host = f"[{host}]" if ":" in host else host
    service.start()
    print(
        f"mailmon serving on http://{shown_host}:{port}/ (metrics at /metrics), "
        f"database {db}, following {len(config.logs)} log(s)",
        flush=True,
    )
    # uvicorn re-raises SIGTERM once it has shut down; with the default action the
    # process would die before the cleanup below. Turn it into an orderly exit.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run(sockets=[sock])
    except SystemExit:
        pass
    finally:
        service.stop()
        store.close()
        sock.close()
    return 0
