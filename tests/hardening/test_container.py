"""The container, checked from the Dockerfile (no Docker engine here): a non-root user,
the database on a volume, a healthcheck against /healthz, and a README that says how to
run it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath

from proxy.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _words(argument: str) -> list[str]:
    """Exec form (a JSON list) or shell form."""
    if argument.startswith("["):
        words: list[str] = json.loads(argument)
        return words
    return shlex.split(argument)


def _volumes() -> list[str]:
    paths: list[str] = []
    for word, rest in instructions():
        if word == "VOLUME":
            paths += _words(rest)
    return paths


def _cmd() -> list[str]:
    commands = [_words(rest) for word, rest in instructions() if word in ("CMD", "ENTRYPOINT")]
    assert commands, "no CMD"
    return [w for command in commands for w in command]


def test_runs_as_a_non_root_user() -> None:
    steps = instructions()
    users = [rest for word, rest in steps if word == "USER"]
    assert users, "no USER instruction: the proxy would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    last_user = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    last_cmd = max(i for i, (word, _) in enumerate(steps) if word in ("CMD", "ENTRYPOINT"))
    assert last_user < last_cmd


def test_keeps_data_on_a_volume_owned_by_that_user() -> None:
    volumes = _volumes()
    assert volumes, "no VOLUME: the queue and routing log would die with the container"
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    user = [rest for word, rest in instructions() if word == "USER"][-1].split(":")[0]
    for volume in volumes:
        assert re.search(rf"chown\s+(-R\s+)?{user}(:\S+)?\s+{re.escape(volume)}", runs), volume


def test_has_a_healthcheck_on_healthz_at_the_served_port() -> None:
    checks = [rest for word, rest in instructions() if word == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK"
    assert "/healthz" in checks[-1]
    cmd = _cmd()
    port = cmd[cmd.index("--port") + 1] if "--port" in cmd else "8080"
    assert f":{port}/healthz" in checks[-1]


def _config_in_image() -> Path:
    """The repository file that becomes the CMD's --config inside the image."""
    cmd = _cmd()
    target = cmd[cmd.index("--config") + 1]
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    copied = re.search(rf"cp\s+(\S+)\s+{re.escape(target)}", runs)
    assert copied, f"nothing in the image provides {target}"
    return ROOT / copied.group(1)


def test_the_images_config_keeps_the_store_on_the_volume() -> None:
    settings = load_settings(_config_in_image())
    store = PurePosixPath(settings.store.path)
    assert store.is_absolute(), store
    assert any(store.is_relative_to(volume) for volume in _volumes()), (store, _volumes())


def test_the_readme_says_how_to_run_the_container() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docker run" in readme
    assert any(f"{volume}" in readme for volume in _volumes())
    assert "docker build" in readme
