"""Processes for the monitoring integration tests: ``mailmon serve`` and a private Prometheus.

Everything listens on free 127.0.0.1 ports and is stopped by the caller's ``ExitStack``,
pass or fail.  Use::

    with ExitStack() as stack:
        port = free_port()
        start(stack, [prometheus, f"--config.file={yml}", ...], tmp / "prometheus.out")
        wait("first scrape", lambda: query(url, 'up{job="mailmon"} == 1'), 30, logs)
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

__all__ = [
    "INSTALL_HINT",
    "backfill",
    "free_port",
    "get",
    "prometheus_config",
    "query",
    "start",
    "tail",
    "tool",
    "wait",
]

INSTALL_HINT = (
    "install Debian's prometheus and prometheus-alertmanager: sudo scripts/install-test-deps.sh"
)


def tool(name: str) -> str:
    """The path of ``name`` on PATH; the test fails (never skips) without it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: {INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bytes(response.read())


def query(base: str, expr: str) -> list[dict[str, Any]]:
    """The instant-query result of ``expr`` at the Prometheus at ``base``."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return list(json.loads(get(url))["data"]["result"])


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars:]}"
    except OSError:
        return f"--- {path.name}: missing ---"


def wait(what: str, predicate: Callable[[], Any], timeout: float, logs: list[Path]) -> Any:
    """Poll ``predicate`` every 0.2 s until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n" + "\n".join(map(tail, logs)))
        time.sleep(0.2)


def start(stack: ExitStack, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Popen ``args`` (output to ``log``) and make sure teardown stops it."""
    with log.open("w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    stack.callback(stop)


def prometheus_config(
    tmp: Path, rule_files: list[str], mailmon_port: int, alertmanager_port: int | None = None
) -> Path:
    """A ``prometheus.yml`` in ``tmp`` scraping mailmon every second (job ``mailmon``)."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
    }
    if alertmanager_port is not None:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        }
    config["scrape_configs"] = [
        {"job_name": "mailmon", "static_configs": [{"targets": [f"127.0.0.1:{mailmon_port}"]}]}
    ]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def backfill(
    promtool: str,
    tsdb: Path,
    family: str,
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]],
) -> None:
    """Write counter samples into ``tsdb`` before Prometheus starts there, as blocks made by
    ``promtool tsdb create-blocks-from openmetrics``: the history a Prometheus that had been
    scraping for a day would hold.  ``series`` maps sorted (label, value) pairs to (time,
    value) samples of ``{family}_total``."""
    lines = [f"# TYPE {family} counter"]
    for labels, samples in series.items():
        selector = ",".join(f'{k}="{v}"' for k, v in labels)
        lines += [f"{family}_total{{{selector}}} {v:g} {t:.3f}" for t, v in sorted(samples)]
    lines.append("# EOF")
    source = tsdb.parent / f"{tsdb.name}-backfill.om"
    source.write_text("\n".join(lines) + "\n")
    tsdb.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(source), str(tsdb)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
