"""``mailmon serve``: the HTTP service, the log followers and the scheduled jobs."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from fnmatch import fnmatch
from typing import Any

from monitor.cli.common import config_of, open_store, resolver_for
from monitor.config import HOOK_TOKEN_ENV, hook_token, resolve_db_url
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
        description="Serve /metrics, /healthz, /api/incidents and the KumoMTA log hook "
        "(POST /ingest/kumomta), follow the logs named in the config file and run the "
        "scheduled jobs (the rollup engine; `mailmon jobs` lists them).",
    )
    p.add_argument("--host", help="listen address (default: [service] listen_host, 127.0.0.1); "
                   "any but a loopback address needs the hook token (MAILMON_HOOK_TOKEN or "
                   "[service] hook_token_file)")  # fmt: skip
    p.add_argument("--port", type=int, help="listen port (default: [service] listen_port, 8465)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from prometheus_client import disable_created_metrics
    from sqlalchemy.engine import make_url

    from monitor.cli.rollup import engine_for
    from monitor.gauges import DomainLabeler, IpLabeler
    from monitor.jobs import Scheduler, builtin
    from monitor.metrics import Metrics
    from monitor.pipeline import Pipeline
    from monitor.service.app import create_app
    from monitor.service.follow import Follower
    from monitor.service.server import bind, build_server, is_loopback
    from monitor.service.webhooks import webhook_endpoints

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
    # Before anything is started or said: a port in use is one error and a non-zero exit.
    sock = bind(host, port)
    port = sock.getsockname()[1]
    store = open_store(args, config)
    labeler = DomainLabeler(config.metrics.domains, store.top_domains(config.metrics.top_domains))
    # A `_created` series per counter would double what every scrape carries, to tell what
    # a drop to zero already tells rate(): the counters restarted with the process.
    disable_created_metrics()
    m = config.metrics
    metrics = Metrics(
        labeler=labeler,
        ips=IpLabeler(m.sending_ips, m.top_sending_ips),
        sender_domains=IpLabeler(m.sender_domains, m.top_sender_domains),
        streams=IpLabeler(m.streams, m.top_streams),
    )
    pipeline = Pipeline(
        store,
        resolver=resolver_for(config, store),
        metrics=metrics,
        batch_size=config.database.batch_size,
        max_future_seconds=config.ingest.max_future_seconds,
    )
    stop = threading.Event()
    follower = Follower(
        config.logs, pipeline, metrics, stop=stop, instance=config.service.instance
    )

    follow_failure: list[str] = []  # why the last poll failed, for /healthz
    engine = engine_for(config, store, gauges=metrics.rollup)
    work = {
        "rollup": builtin.rollup(config, store, engine),
        "top_domains": builtin.top_domains(config, store, labeler),
    }
    scheduler = Scheduler(store.engine, builtin.jobs_for(config, work), metrics=metrics,
                          instance=config.service.instance)  # fmt: skip

    def follow() -> None:
        first = True
        while not stop.is_set():
            try:
                follower.poll_once()
                follow_failure.clear()
                if first and "top_domains" in scheduler.jobs:
                    # The first poll (a catch-up read) tells most about the busiest domains.
                    scheduler.run_now("top_domains")
                first = False
            except Exception:  # the service keeps running; the next poll retries
                log.exception("log follower failed; retrying")
                follow_failure[:] = ["the log follower failed (see the service log)"]
            min_interval = min((s.poll_interval_seconds for s in config.logs), default=1.0)
            stop.wait(min_interval)

    def health() -> dict[str, object]:
        """Each followed log's status (the app adds the store's and the hook's)."""
        files = follower.files.copy()  # atomic: the follower thread adds and drops files
        logs: dict[str, dict[str, object]] = {
            s.path: {"status": "starting"} for s in config.logs  # not polled yet
        }
        for path, followed in files.items():
            for source in config.logs:
                if fnmatch(path, source.path):
                    logs.pop(source.path, None)
            error = followed.tailer.error
            logs[path] = {"status": "failing", "reason": error} if error else {"status": "ok"}
        checks: dict[str, object] = {"logs": logs}
        if follow_failure:
            checks["follower"] = {"status": "failing", "reason": follow_failure[0]}
        return checks

    db = make_url(resolve_db_url(args.db, config)).render_as_string(hide_password=True)
    # Its lines per job and run say nothing the job state does not; its warnings (a run
    # skipped while the last one still runs, a run missed) still show.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler.start()  # before the follower, whose first poll calls on it
    thread = threading.Thread(target=follow, name="mailmon-follow", daemon=True)
    if config.logs:
        thread.start()
    hook_pipeline = Pipeline(store, resolver=resolver_for(config, store), metrics=metrics,
                             batch_size=config.database.batch_size,
                             max_future_seconds=config.ingest.max_future_seconds)
    app = create_app(metrics, health=health, pipeline=hook_pipeline, store=store,
                     endpoints=webhook_endpoints(config, hook_pipeline, metrics),
                     hook_token=token, max_body_bytes=config.service.max_body_bytes)
    server = build_server(app, request_timeout_seconds=config.service.request_timeout_seconds,
                          max_connections=config.service.max_connections)
    shown_host = f"[{host}]" if ":" in host else host
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
        stop.set()
        if thread.is_alive():
            thread.join(timeout=10)
        scheduler.stop(timeout=10)
        pipeline.flush()
        store.close()
        sock.close()
    return 0
