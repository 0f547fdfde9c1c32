"""``docker-compose.yml``: paths, ports and configs agree, with no Docker engine to run it.

The file is parsed as Compose reads it (``${VAR:-default}`` takes its default); every bind
mount must exist in the repository, every published port must be the one the service's
own config listens on and the others reach it at, and the Prometheus config is checked by
``promtool check config`` inside a copy of the container's file tree.
"""

from __future__ import annotations

import re
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers.prometheus import tool

from monitor.cli.dashboards import load_dashboards
from monitor.config import DEFAULT_PORT, load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
_DEFAULT = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _expand(value: str) -> str:
    """``${VAR:-default}`` -> default, as Compose does with VAR unset."""
    return _DEFAULT.sub(lambda m: m.group(2) or "", value)


COMPOSE_DOC: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE_DOC["services"]


def _mounts(service: str) -> list[tuple[str, str, bool]]:
    """(source, target, is_bind) of a service's short-syntax volumes."""
    out = []
    for entry in SERVICES[service].get("volumes", []):
        source, target = _expand(entry).split(":")[:2]
        out.append((source, target, source.startswith((".", "/"))))
    return out


def _host_path(source: str) -> Path:
    return (ROOT / source).resolve() if source.startswith(".") else Path(source)


def _source_of(service: str, target: str) -> Path:
    """The host path mounted at ``target`` (or at a directory above it) in ``service``."""
    for source, mounted, bind in _mounts(service):
        if bind and (target == mounted or target.startswith(mounted.rstrip("/") + "/")):
            return _host_path(source) / Path(target).relative_to(mounted)
    raise AssertionError(f"{service}: nothing mounted at {target}")


def _published(service: str) -> list[int]:
    """Container ports a service publishes ("[ip:]host:container")."""
    return [int(str(p).rsplit(":", 1)[1]) for p in SERVICES[service].get("ports", [])]


def _flag(service: str, name: str) -> str:
    for arg in SERVICES[service]["command"]:
        if arg.startswith(f"{name}="):
            return str(arg.split("=", 1)[1])
    raise AssertionError(f"{service}: no {name}")


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _prometheus_yml() -> dict[str, Any]:
    path = _source_of("prometheus", _flag("prometheus", "--config.file"))
    return dict(yaml.safe_load(path.read_text()))


def _targets(job: str) -> list[str]:
    config = _prometheus_yml()
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == job]
    return [t for j in jobs for sc in j["static_configs"] for t in sc["targets"]]


def test_every_bind_mount_exists_and_every_volume_is_declared() -> None:
    """Bind-mounted files and directories exist; named volumes are declared and all used."""
    declared = set(COMPOSE_DOC.get("volumes") or {})
    used = set()
    for name in SERVICES:
        for source, target, bind in _mounts(name):
            assert target.startswith("/"), f"{name}: {target}"
            if bind:
                assert _host_path(source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
    assert used == declared


def test_services_have_healthchecks_and_the_stack_is_complete() -> None:
    """mailmon, Prometheus, Alertmanager and Grafana are there, each with a healthcheck."""
    assert set(SERVICES) == {"mailmon", "prometheus", "alertmanager", "grafana"}
    for name, service in SERVICES.items():
        assert service.get("healthcheck", {}).get("test"), name
        assert service.get("restart") == "unless-stopped", name
    assert SERVICES["mailmon"]["build"] == "."


def test_no_secret_is_written_inline() -> None:
    """Secret-looking settings point at files; the secret files are git-ignored and documented."""
    for name, service in SERVICES.items():
        for key in service.get("environment", {}):
            if re.search(r"PASSWORD|TOKEN|SECRET|API_KEY", key):
                assert key.endswith("__FILE"), f"{name}: {key} is inline"
    readme = (ROOT / "deploy" / "secrets" / "README.md").read_text()
    secret_files = [_host_path(s["file"]) for s in COMPOSE_DOC["secrets"].values()]
    am = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    for receiver in am["receivers"]:
        for configs in receiver.values():
            for config in configs if isinstance(configs, list) else []:
                for key, value in config.items():
                    if key.endswith("_file"):
                        secret_files.append(_source_of("alertmanager", value))
    assert len(secret_files) >= 3
    for path in secret_files:
        assert path.is_relative_to(ROOT / "deploy" / "secrets"), path
        assert path.relative_to(ROOT / "deploy" / "secrets").as_posix() in readme, path
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT)
        assert ignored.returncode == 0, f"{path} is not git-ignored"


def test_mailmon_port_matches_its_config_and_the_scrape_target() -> None:
    """mailmon publishes 8465, listens there on all interfaces, and Prometheus scrapes it there."""
    config_path = SERVICES["mailmon"]["command"][SERVICES["mailmon"]["command"].index("--config") + 1]
    config = load_config(_source_of("mailmon", config_path))
    assert config.service.listen_port == DEFAULT_PORT == 8465
    assert config.service.listen_host == "0.0.0.0"
    assert _published("mailmon") == [DEFAULT_PORT]
    assert _targets("mailmon") == [f"mailmon:{DEFAULT_PORT}"]
    assert f"127.0.0.1:{DEFAULT_PORT}/healthz" in " ".join(SERVICES["mailmon"]["healthcheck"]["test"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^EXPOSE {DEFAULT_PORT}$", dockerfile, re.M)
    assert f"127.0.0.1:{DEFAULT_PORT}/healthz" in dockerfile
    log_dirs = [t for _, t, bind in _mounts("mailmon") if bind and t.startswith("/var/log")]
    for source in config.logs:
        assert any(source.path.startswith(d + "/") for d in log_dirs), source.path


def _published_on(service: str) -> list[str]:
    """Host addresses a service's ports are published on ("" for every interface)."""
    out = []
    for entry in SERVICES[service].get("ports", []):
        parts = str(entry).rsplit(":", 2)
        out.append(parts[0] if len(parts) == 3 else "")
    return out


def test_only_authenticated_routes_are_published_beyond_the_host() -> None:
    """mailmon's unauthenticated read routes are published on the host's loopback only, and its
    hook (listening on the compose network) takes its token from a compose secret."""
    assert _published_on("mailmon") == ["127.0.0.1"]
    for name in ("prometheus", "alertmanager"):
        assert _published_on(name) == ["127.0.0.1"], name
    command = SERVICES["mailmon"]["command"]
    config = load_config(_source_of("mailmon", command[command.index("--config") + 1]))
    token_file = config.service.hook_token_file
    assert token_file is not None and token_file.startswith("/run/secrets/")
    secret = token_file.removeprefix("/run/secrets/")
    assert secret in SERVICES["mailmon"]["secrets"]
    assert _host_path(COMPOSE_DOC["secrets"][secret]["file"]).is_relative_to(
        ROOT / "deploy" / "secrets"
    )


def test_prometheus_alertmanager_and_grafana_ports_agree() -> None:
    """Each published port is the one its server listens on and the one its clients use."""
    prom_port = _port_of(_flag("prometheus", "--web.listen-address"))
    assert _published("prometheus") == [prom_port]
    am_port = _port_of(_flag("alertmanager", "--web.listen-address"))
    assert _published("alertmanager") == [am_port]
    alerting = _prometheus_yml()["alerting"]["alertmanagers"]
    assert [t for a in alerting for sc in a["static_configs"] for t in sc["targets"]] == [
        f"alertmanager:{am_port}"
    ]
    grafana_port = int(SERVICES["grafana"]["environment"]["GF_SERVER_HTTP_PORT"])
    assert _published("grafana") == [grafana_port]
    datasources = yaml.safe_load(
        _source_of("grafana", "/etc/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    url = urllib.parse.urlsplit(datasources[0]["url"])
    assert (url.hostname, url.port) == ("prometheus", prom_port)
    for name, port in (("prometheus", prom_port), ("alertmanager", am_port),
                       ("grafana", grafana_port)):  # fmt: skip
        assert f"127.0.0.1:{port}/" in " ".join(SERVICES[name]["healthcheck"]["test"]), name


def test_prometheus_config_passes_promtool_in_the_container_layout(tmp_path: Path) -> None:
    """The mounted prometheus.yml and rule files pass promtool check config as mounted."""
    promtool = tool("promtool")
    for source, target, bind in _mounts("prometheus"):
        if bind:
            place = tmp_path / target.lstrip("/")
            place.parent.mkdir(parents=True, exist_ok=True)
            place.symlink_to(_host_path(source))
    config = tmp_path / _flag("prometheus", "--config.file").lstrip("/")
    result = subprocess.run([promtool, "check", "config", str(config)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout + result.stderr


def test_alertmanager_config_passes_amtool() -> None:
    """The mounted alertmanager.yml passes amtool check-config."""
    amtool = tool("amtool")
    config = _source_of("alertmanager", _flag("alertmanager", "--config.file"))
    result = subprocess.run([amtool, "check-config", str(config)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_every_dashboard_in_the_push_folder() -> None:
    """The dashboard provider reads the mounted dashboards/ into the folder push uses."""
    providers = yaml.safe_load(
        _source_of("grafana", "/etc/grafana/provisioning/dashboards/mailmon.yml").read_text()
    )["providers"]
    assert len(providers) == 1 and providers[0]["folderUid"] == "mailmon"
    directory = _source_of("grafana", providers[0]["options"]["path"])
    assert directory == ROOT / "dashboards"
    assert len(load_dashboards(directory)) == len(list((ROOT / "dashboards").glob("*.json")))
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _source_of("grafana", home).is_file()


@pytest.mark.parametrize("line", [
    ln for ln in (ROOT / "Dockerfile").read_text().splitlines() if ln.startswith("COPY ")
    and "--from=" not in ln
])  # fmt: skip
def test_dockerfile_copies_what_exists(line: str) -> None:
    """Every COPY source of the Dockerfile exists and is not excluded by .dockerignore."""
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}  # fmt: skip
    for source in line.split()[1:-1]:
        assert list(ROOT.glob(source)), source
        assert source.split("/")[0] not in ignored, source
