"""``mailmon serve``: the HTTP service, the log followers and the scheduled jobs."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path
from typing import Any

from monitor.cli.common import config_of, open_store
from monitor.config import (
    API_TOKEN_ENV,
    HOOK_TOKEN_ENV,
    Config,
    LogSource,
    api_token,
    data_dir,
    find_config_file,
    hook_token,
    resolve_db_url,
)
from monitor.errors import ConfigError

__all__ = ["register"]

log = logging.getLogger(__name__)

#: The log ``--first-run`` follows when there is no config file (Debian's syslog of Postfix).
SYSTEM_LOG = "/var/log/mail.log"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="run the service",
        description="Serve the overview page (/, and /trace?q= for a search; the API's "
        "token rule), /metrics, /healthz, /readyz, the read API (/api/messages, "
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
    demo = p.add_argument_group("demo", "simulated traffic through the real service "
                                "(docs/getting-started.md)")  # fmt: skip
    demo.add_argument("--demo", action="store_true",
                      help="feed the service simulated traffic: a Postfix log, signed webhook "
                      "posts and DMARC reports, in DIR (--demo-dir); Gmail starts rejecting "
                      "--demo-incident-after in")  # fmt: skip
    demo.add_argument("--first-run", action="store_true",
                      help="what `make run` uses: with no config file, no database yet and no "
                      f"readable {SYSTEM_LOG}, start the demo; with no config file and a "
                      f"readable {SYSTEM_LOG}, follow it; else serve as configured")  # fmt: skip
    demo.add_argument("--demo-dir", metavar="DIR",
                      help="the demo's log, reports and database, emptied at each start "
                      "(default: DATA_DIR/demo)")  # fmt: skip
    demo.add_argument("--demo-incident-after", metavar="DURATION", type=duration, default=120.0,
                      help="when Gmail starts rejecting, after the start (default 120s)")
    demo.add_argument("--demo-history", metavar="DURATION", type=duration, default=1800.0,
                      help="traffic written from this long before the start (default 30m)")
    demo.add_argument("--demo-speed", metavar="X", type=float, default=60.0,
                      help="how many times faster than real time the history is written "
                      "until it catches up with the clock (default 60)")  # fmt: skip
    demo.add_argument("--demo-rate", metavar="N", type=float, default=120.0,
                      help="recipients a minute (default 120)")
    p.set_defaults(run=run)


def duration(text: str) -> float:
    """An argparse ``type``: seconds, or a number with s, m or h (``90``, ``180s``, ``3m``)."""
    value, unit = (text[:-1], text[-1]) if text[-1:] in "smh" else (text, "s")
    try:
        seconds = float(value) * {"s": 1, "m": 60, "h": 3600}[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds, or 90s, 3m, 1h") from None
    if not 0 <= seconds <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 to 7 days")
    return seconds


def _first_run(args: argparse.Namespace, config: Config) -> str:
    """What ``--first-run`` does here: ``demo``, ``system-log`` or ``configured``."""
    if find_config_file(args.config) is not None or config.logs:
        return "configured"
    if args.db or os.environ.get("MAILMON_DB_URL") or config.database.url:
        return "configured"
    if os.access(SYSTEM_LOG, os.R_OK):
        return "system-log"
    if (data_dir(config) / "mailmon.db").exists():
        return "configured"  # a store from earlier runs: serve it, do not start a demo
    return "demo"


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from monitor.demo import Demo, DemoSettings, demo_config, prepare
    from monitor.service.compose import Service
    from monitor.service.server import bind, build_server, is_loopback

    config = config_of(args)
    mode = "demo" if args.demo else _first_run(args, config) if args.first_run else "configured"
    settings = None
    if mode == "demo":
        directory = Path(args.demo_dir) if args.demo_dir else data_dir(config) / "demo"
        settings = DemoSettings(directory=directory, history_seconds=args.demo_history,
                                speed=max(1.0, args.demo_speed), per_minute=args.demo_rate,
                                incident_after_seconds=args.demo_incident_after)  # fmt: skip
        prepare(settings)
        config = demo_config(config, settings)
        if not args.db and not os.environ.get("MAILMON_DB_URL"):
            args.db = f"sqlite:///{directory / 'mailmon.db'}"  # the demo's own, never yours
        print(f"mailmon: DEMO MODE: simulated traffic (a Postfix log, Mailgun webhooks, DMARC "
              f"reports in {directory}) through the real collectors; Gmail starts rejecting "
              f"{args.demo_incident_after:g} s after the start. Your own mail: "
              f"docs/getting-started.md", flush=True)  # fmt: skip
    elif mode == "system-log":
        config = config.model_copy(update={"logs": (LogSource(kind="postfix", path=SYSTEM_LOG),)})
        print(f"mailmon: no config file: following {SYSTEM_LOG} (Postfix); settings: "
              "docs/configuration.md", flush=True)  # fmt: skip
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
    demo = None
    if settings is not None:
        local = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else shown_host
        demo = Demo(settings, url=f"http://{local}:{port}")
        demo.start()
        print(f"mailmon: demo running: open http://{local}:{port}/ ; the incident should "
              f"show there, at /metrics and in `mailmon incidents --db {db}` a few "
              "minutes in", flush=True)  # fmt: skip
    # uvicorn re-raises SIGTERM once it has shut down; with the default action the
    # process would die before the cleanup below. Turn it into an orderly exit.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.run(sockets=[sock])
    except SystemExit:
        pass
    finally:
        if demo is not None:
            demo.stop()
        service.stop()
        store.close()
        sock.close()
    return 0
