"""Server subprocesses for the benchmarks: start one module per process, wait for its
port, read its resident size, stop it. Each server gets its own process so the load
generator, the upstream and the server under test never share an event loop or a GIL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]


def fresh_db(path: Path) -> Path:
    """``path`` with no database left from an earlier run in the same ``--out`` folder
    (a reused batch database once held 150,000 tickets and skewed flush and ingest)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size from /proc (Linux); 0.0 where /proc is unavailable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class Server:
    """``python -m <module> --port N <args>`` from the repository root."""

    def __init__(
        self,
        name: str,
        module: str,
        args: list[str],
        *,
        log_dir: Path,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        tree: Path = REPO,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._cmd = [
            *(wrapper or []),
            sys.executable,
            "-m",
            module,
            "--port",
            str(self.port),
            *args,
        ]
        # ``tree``: another checkout of the project (e.g. a candidate fix) to run from.
        self._tree = tree
        self._env = {**os.environ, **(env or {}), "PYTHONPATH": _pythonpath(tree)}
        self._log_path = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 30.0) -> Server:
        log = self._log_path.open("ab")
        self._proc = subprocess.Popen(
            self._cmd, cwd=self._tree, env=self._env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up; see {self._log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.name} did not open port {self.port}; see {self._log_path}")

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        # SIGINT: uvicorn and aiohttp shut down cleanly (lifespan, routing-log drain).
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _pythonpath(tree: Path) -> str:
    # Subprocesses import tests.benchmarks.* from the repository root even when the
    # package is installed elsewhere; extra paths (e.g. for uvloop) are kept.
    extra = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(tree), *([extra] if extra else [])])
