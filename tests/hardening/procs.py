"""Real processes for the tests that need them: ``python -m proxy serve`` (uvicorn as
``costroute serve`` configures it; SIGKILL-able; its RSS readable from /proc) and
``python -m adapters.emulators.run`` emulators on port 0."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (http://\S+)")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    raise TypeError(type(value))


def write_toml(path: Path, data: Mapping[str, Any]) -> Path:
    """Enough TOML for a costroute config: tables of scalars, inline tables, and the
    ``[[auth.keys]]`` array of tables."""
    lines: list[str] = []
    for section, values in data.items():
        if section == "auth":
            for key in values.get("keys", []):
                lines.append("[[auth.keys]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in key.items()]
            continue
        if section in ("providers", "models"):
            for name, table in values.items():
                lines.append(f'[{section}."{name}"]')
                lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Serve:
    """``python -m proxy serve`` on a free loopback port."""

    def __init__(self, config: Path, env: Mapping[str, str], *, log: Path | None = None) -> None:
        self.config = config
        self.env = {**os.environ, **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or Path(tempfile.mkstemp(prefix="costroute-serve-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 30) -> Serve:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(self.config),
             "--port", str(self.port), "--log-level", "warning"],
            env=self.env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
        handle.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited {self.proc.returncode}: {self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(self.url + "/healthz").status_code == 200:
                        return self
                if time.monotonic() > deadline:
                    raise TimeoutError(f"serve did not start: {self.output()}")
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushes, exactly like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def output(self, *, full: bool = False) -> str:
        text = self.log.read_text(errors="replace")
        return text if full else text[-4000:]


def run_serve_once(config: Path, env: Mapping[str, str], timeout: float = 20) -> tuple[int, str]:
    """Run serve expecting it to exit (e.g. refusing its config): (code, output)."""
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", "0"],
        env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


@contextlib.contextmanager
def serving(config: Path, env: Mapping[str, str]) -> Iterator[Serve]:
    server = Serve(config, env).start()
    try:
        yield server
    finally:
        server.stop()


class Emulator:
    """``python -m adapters.emulators.run KIND --port 0 ...``; reads back its URL."""

    def __init__(self, kind: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.emulators.run", kind, "--port", "0", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = _LISTENING.search(line)
        if found is None:
            self.proc.kill()
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.url = found.group(1)
        # Keep reading, so warnings can never fill the pipe and block the emulator.
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for _ in self.proc.stdout:
                pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._drain.join(5)
