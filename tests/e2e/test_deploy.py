"""The several-replicas deployment (deploy/): no Docker engine runs here, so this checks
what can be checked. The compose file parses and wires PostgreSQL, two replicas of the
repository's image and a load balancer; every secret the replicas' config names reaches
them from the environment; the load balancer's servers are the compose services on the
config's port and its health check is a route costroute serves; uploaded files go to one
volume every replica mounts; and the replicas' config passes ``costroute check-config``
against a real PostgreSQL (the server version shown)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from proxy.settings import parse_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONFIG = ROOT / "config" / "costroute.replicas.toml"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def replicas(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in data["services"].items()
        if "costroute" in " ".join(service.get("command", []))
    }


def settings_env() -> tuple[Any, set[str]]:
    raw = tomllib.loads(CONFIG.read_text())
    settings = parse_settings(raw)
    names = {k.key_env for k in settings.auth.keys}
    names |= {p.api_key_env for p in settings.providers.values() if p.api_key_env}
    assert settings.store.url_env is not None
    names.add(settings.store.url_env)
    return settings, names


def test_compose_runs_postgres_two_replicas_and_a_load_balancer() -> None:
    data = compose()
    services = data["services"]
    found = replicas(data)
    assert len(found) == 2
    settings, needed = settings_env()
    assert settings.files.dir is not None, "replicas need [files] dir on shared storage"
    shared: list[str] = []
    for name, service in found.items():
        # Built from this repository's Dockerfile, serving the shipped replicas config.
        assert service["build"]["context"] == ".."
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        mounts = [v.split(":") for v in service["volumes"]]
        [(source, target, mode)] = [m for m in mounts if m[0].startswith(".")]
        assert (DEPLOY / source).resolve() == CONFIG
        assert mode == "ro"
        command = service["command"]
        assert command[command.index("--config") + 1] == target
        # File bytes live on disk, their records in the database: [files] dir must be on
        # a named volume every replica mounts, or a file uploaded through one replica is
        # missing on the other.
        folder = settings.files.folder(settings.store)
        [volume] = [m[0] for m in mounts if folder.is_relative_to(m[1])]
        shared.append(volume)
        assert volume in data["volumes"]
        assert command[command.index("--port") + 1] == str(settings.server.port)
        # Every secret the config names comes from the environment, nothing else.
        assert set(service["environment"]) == needed, name
        assert service["environment"]["COSTROUTE_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in service["environment"]["COSTROUTE_DATABASE_URL"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert len(set(shared)) == 1, shared
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    lb = services["lb"]
    assert set(lb["depends_on"]) == set(found)
    assert lb["ports"] == ["8080:8080"]


def test_the_load_balancer_checks_health_and_routes_to_every_replica() -> None:
    from proxy.app import create_app

    text = (DEPLOY / "haproxy.cfg").read_text()
    settings, _ = settings_env()
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+):(\d+)\s+check", text, re.MULTILINE)
    assert {(name, host) for name, host, _ in servers} == {(n, n) for n in replicas(compose())}
    assert {int(port) for _, _, port in servers} == {settings.server.port}
    [path] = re.findall(r"option httpchk GET (\S+)", text)
    _, needed = settings_env()
    app = create_app(settings, environ={name: f"x-{name}" for name in needed}, loops=False)
    paths = {getattr(route, "path", None) for route in app.routes}
    assert path in paths
    # A long-poll waits up to 60 s: the balancer must not cut it.
    [server_timeout] = re.findall(r"timeout server (\d+)s", text)
    assert int(server_timeout) > 60
    # Only connection failures are retried (no "retry-on" that could resend a POST).
    assert "retry-on" not in text


def check_config(config: Path, url: str) -> subprocess.CompletedProcess[str]:
    _, needed = settings_env()
    env = {name: f"test-{name.lower()}" for name in needed}
    env["COSTROUTE_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip


def test_the_replicas_config_passes_check_config_on_postgresql(
    pg_schema_url: str, tmp_path: Path
) -> None:
    # With a password (the test cluster trusts local sockets and ignores it), which
    # check-config must not print.
    url = pg_schema_url.replace("postgres@", "postgres:pw-s3cret@")
    result = check_config(CONFIG, url)
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    assert re.search(r"PostgreSQL \d+", result.stdout), result.stdout
    assert "pw-s3cret" not in result.stdout + result.stderr
    assert "[files] dir" not in result.stdout
    # Without [files] dir each replica would keep uploads on its own disk: said out loud.
    text = CONFIG.read_text()
    start = text.index("[files]")
    end = text.index("\n[", start)
    unshared = tmp_path / "unshared.toml"
    unshared.write_text(text[:start] + text[end + 1 :])
    result = check_config(unshared, url)
    assert result.returncode == 0, result.stderr
    assert "note: [files] dir is not set" in result.stdout, result.stdout
