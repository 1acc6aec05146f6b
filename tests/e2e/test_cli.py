"""The command line: check-config, serve's safety refusal, logs, python -m proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import free_port


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def write(tmp: Path, text: str) -> Path:
    path = tmp / "costroute.toml"
    path.write_text(text)
    return path


def test_check_config_accepts_the_example_and_names_bad_keys(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "costroute.example.toml"
    ok = run(
        "check-config",
        "--config",
        str(example),
        env={"TEAM_A_KEY": "a", "COSTROUTE_ADMIN_KEY": "b"},
    )
    assert ok.returncode == 0, ok.stderr
    assert "config OK" in ok.stdout
    missing = run(
        "check-config", "--config", str(example), env={"TEAM_A_KEY": "", "COSTROUTE_ADMIN_KEY": "b"}
    )
    assert missing.returncode == 2
    assert "TEAM_A_KEY" in missing.stderr
    bad = write(tmp_path, '[server]\nport = "x"\n[models.m]\nprovider = "openai"\nflex = "maybe"\n')
    result = run("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert "server.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_to_run_open_on_a_network_address(tmp_path: Path) -> None:
    config = write(tmp_path, f'[store]\npath = "{tmp_path / "x.db"}"\n')
    result = run("serve", "--config", str(config), "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 2
    assert "auth.keys" in result.stderr


def test_serve_then_logs(tmp_path: Path) -> None:
    port = free_port()
    config = write(
        tmp_path,
        f'[server]\nport = {port}\n[store]\npath = "{tmp_path / "c.db"}"\n'
        '[[auth.keys]]\nname = "team-a"\nkey_env = "CLI_TEST_KEY"\n',
    )
    env = {**os.environ, "CLI_TEST_KEY": "sk-cli-test-secret"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            for _ in range(200):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                import time

                time.sleep(0.05)
            response = client.post(
                "/v1/chat/completions",
                headers={"authorization": "Bearer sk-cli-test-secret"},
                json={"model": "none", "messages": [{"role": "user", "content": "x"}]},
            )
            assert response.status_code == 400
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=15)
    assert "sk-cli-test-secret" not in output
    logs = run(
        "logs", "--config", str(config), "--since", "1h", "--json", env={"CLI_TEST_KEY": "x"}
    )
    assert logs.returncode == 0, logs.stderr
    rows = [json.loads(line) for line in logs.stdout.splitlines()]
    assert [(r["key_name"], r["status"], r["error_code"]) for r in rows] == [
        ("team-a", 400, "model_not_found")
    ]
    table = run("logs", "--config", str(config), env={"CLI_TEST_KEY": "x"})
    assert "model_not_found" not in table.stdout  # the table shows the reason, not codes
    assert "team-a" in table.stdout
