"""``mailmon dashboards``: push the Grafana dashboards to a Grafana, or export them to files.

``push`` uses Grafana's HTTP API through ``grafana-client``: it makes sure the folder
exists, then creates or overwrites each dashboard by uid, and leaves alone the ones
whose content is already the same, so running it twice changes nothing.  The API token
comes from ``--token``, ``--token-file``, ``MAILMON_GRAFANA_TOKEN`` or
``MAILMON_GRAFANA_TOKEN_FILE``; it is never printed or logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import urllib.parse
from http import HTTPStatus
from pathlib import Path
from typing import Any

from monitor.cli.common import print_json
from monitor.errors import ConfigError, InputError, MailmonError

__all__ = ["load_dashboards", "push", "register"]

log = logging.getLogger(__name__)

TOKEN_ENV = "MAILMON_GRAFANA_TOKEN"
TOKEN_FILE_ENV = "MAILMON_GRAFANA_TOKEN_FILE"
DIR_ENV = "MAILMON_DASHBOARDS_DIR"
# Where the dashboards are without --dir: a source checkout, then the container image.
_SEARCH = (
    Path(__file__).resolve().parents[2] / "dashboards",
    Path("/usr/share/mailmon/dashboards"),
)
# Keys Grafana adds to a stored dashboard; they do not make its content differ.
_SERVER_KEYS = ("id", "version")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dashboards",
        parents=[common],
        help="push the Grafana dashboards to Grafana, or export them",
        description="Mailmon's Grafana dashboards (overview, domain drill-down, bounces, "
        "latency, ingestion): push them to a Grafana or export them as JSON files.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    push_p = actions.add_parser(
        "push",
        help="create or update the dashboards in a Grafana folder (idempotent)",
        description="Create or update every dashboard in a Grafana folder through the HTTP "
        f"API. The token (a service account token with Editor rights) comes from --token, "
        f"--token-file, {TOKEN_ENV} or {TOKEN_FILE_ENV}.",
    )
    push_p.add_argument("--url", required=True, help="Grafana's base URL, e.g. http://grafana:3000")
    push_p.add_argument("--token", help=f"API token (prefer --token-file or {TOKEN_ENV})")
    push_p.add_argument("--token-file", metavar="FILE", help="file holding the API token")
    push_p.add_argument("--folder", default="Mailmon", help="folder title (default: Mailmon)")
    push_p.add_argument("--folder-uid", default="mailmon", help="folder uid (default: mailmon)")
    push_p.add_argument("--dir", metavar="DIR", help=f"dashboards directory (default: {DIR_ENV} "
                        "or the bundled dashboards)")  # fmt: skip
    push_p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="HTTP timeout per request (default: 10)")  # fmt: skip
    push_p.add_argument("--json", action="store_true", help="machine output: a JSON array")
    push_p.set_defaults(run=run_push)
    export_p = actions.add_parser(
        "export",
        help="write the dashboards as JSON files into a directory",
        description="Write every dashboard as <uid>.json into DIR (created if needed), for "
        "Grafana's import page or a provisioning directory.",
    )
    export_p.add_argument("target", metavar="DIR", help="directory to write into")
    export_p.add_argument("--dir", metavar="SOURCE", help="dashboards directory to read from "
                          f"(default: {DIR_ENV} or the bundled dashboards)")
    export_p.set_defaults(run=run_export)


def dashboards_dir(explicit: str | None) -> Path:
    """The directory holding the dashboard JSON files."""
    chosen = explicit or os.environ.get(DIR_ENV)
    if chosen:
        path = Path(chosen)
        if not path.is_dir():
            raise InputError(f"dashboards directory {path} does not exist")
        return path
    for path in _SEARCH:
        if any(path.glob("*.json")):
            return path
    raise InputError(f"no dashboards found (looked in {', '.join(map(str, _SEARCH))}); use --dir")


def load_dashboards(directory: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` dashboard in ``directory``, sorted by file name."""
    boards = []
    for path in sorted(directory.glob("*.json")):
        try:
            board = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: {exc}") from None
        if not isinstance(board, dict) or not board.get("uid") or not board.get("title"):
            raise InputError(f"{path}: not a dashboard (needs uid and title)")
        boards.append(board)
    if not boards:
        raise InputError(f"no dashboards (*.json) in {directory}")
    return boards


def read_token(args: argparse.Namespace) -> str:
    """The API token from the first of --token, --token-file, the two environment variables."""
    if args.token:
        return str(args.token).strip()
    file = args.token_file or os.environ.get(TOKEN_FILE_ENV)
    if file:
        try:
            token = Path(file).read_text("utf-8").strip()
        except OSError as exc:
            raise InputError(f"token file {file}: {exc.strerror or exc}") from None
        if not token:
            raise ConfigError(f"token file {file} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"no Grafana API token: use --token-file, {TOKEN_ENV} or --token")
    return token


def _public_url(url: str) -> str:
    """``url`` without user info, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _check_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"--url {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {_public_url(url)!r}: expected http(s)://HOST[:PORT][/PATH]")
    return url.rstrip("/")


def _same(stored: dict[str, Any], ours: dict[str, Any]) -> bool:
    strip = lambda d: {k: v for k, v in d.items() if k not in _SERVER_KEYS}  # noqa: E731
    return bool(strip(stored) == strip(ours))


def _answered(where: str, status: int) -> str:
    """An error answer in one line: its status, never its body (a proxy in front of Grafana
    may echo the request, Authorization header included)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "server error" if status >= 500 else "request refused"
    return f"Grafana at {where} answered {status} {phrase}"


def push(
    url: str,
    token: str,
    boards: list[dict[str, Any]],
    *,
    folder: str = "Mailmon",
    folder_uid: str = "mailmon",
    timeout: float = 10.0,
) -> list[dict[str, str]]:
    """Create or update ``boards`` in the folder; one {uid, title, action} per dashboard."""
    from grafana_client import GrafanaApi
    from grafana_client.client import (
        GrafanaClientError,
        GrafanaException,
        GrafanaUnauthorizedError,
    )

    where = _public_url(url)
    api = GrafanaApi.from_url(_check_url(url), credential=token, timeout=timeout)
    try:
        try:
            if not isinstance(api.folder.get_folder(folder_uid), dict):
                raise ValueError("the folder lookup did not answer JSON")
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.folder.create_folder(folder, uid=folder_uid)
            log.info("created folder %s (%s) in Grafana at %s", folder, folder_uid, where)
        results = []
        for board in boards:
            try:
                stored = api.dashboard.get_dashboard(board["uid"])
            except GrafanaClientError as exc:
                if exc.status_code != 404:
                    raise
                stored = None
            if stored is not None and not isinstance(stored, dict):
                raise ValueError("the dashboard lookup did not answer JSON")
            if (
                stored is not None
                and stored.get("meta", {}).get("folderUid") == folder_uid
                and _same(stored.get("dashboard", {}), board)
            ):
                action = "unchanged"
            else:
                api.dashboard.update_dashboard(
                    {
                        "dashboard": {k: v for k, v in board.items() if k != "id"} | {"id": None},
                        "folderUid": folder_uid,
                        "overwrite": True,
                        "message": "mailmon dashboards push",
                    }
                )
                action = "created" if stored is None else "updated"
            results.append({"uid": board["uid"], "title": board["title"], "action": action})
        return results
    except GrafanaUnauthorizedError:
        raise MailmonError(
            f"Grafana at {where} refused the token (401 Unauthorized): check the token"
        ) from None
    except GrafanaClientError as exc:
        if exc.status_code == 403:
            raise MailmonError(
                f"Grafana at {where} denied access (403 Forbidden): the token needs the "
                "Editor role (or dashboards:write and folders:create)"
            ) from None
        raise MailmonError(_answered(where, exc.status_code)) from None
    except GrafanaException as exc:  # status 0: no HTTP answer at all (timeout, TLS ...)
        if exc.status_code:
            raise MailmonError(_answered(where, exc.status_code)) from None
        raise MailmonError(f"cannot reach Grafana at {where}: {exc.message}") from None
    except OSError as exc:  # the HTTP library's connection errors (refused, DNS) are OSErrors
        errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
        reason = errno.group(1) if errno else type(exc).__name__
        raise MailmonError(f"cannot reach Grafana at {where}: {reason}") from None
    except ValueError as exc:  # a 2xx answer that is not JSON: not Grafana's API
        raise MailmonError(f"{where} does not answer like Grafana's HTTP API ({exc})") from None


def run_push(args: argparse.Namespace) -> int:
    boards = load_dashboards(dashboards_dir(args.dir))
    results = push(
        args.url,
        read_token(args),
        boards,
        folder=args.folder,
        folder_uid=args.folder_uid,
        timeout=args.timeout,
    )
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(f"{r['action']:<10} {r['uid']:<24} {r['title']}")
        print(f"{len(results)} dashboards in folder {args.folder!r} of {_public_url(args.url)}",
              file=sys.stderr)  # fmt: skip
    return 0


def run_export(args: argparse.Namespace) -> int:
    boards = load_dashboards(dashboards_dir(args.dir))
    target = Path(args.target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for board in boards:
            text = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
            (target / f"{board['uid']}.json").write_text(text, "utf-8")
    except OSError as exc:
        raise InputError(f"cannot write to {target}: {exc.strerror or exc}") from None
    for board in boards:
        print(target / f"{board['uid']}.json")
    return 0
