"""SIGKILL the proxy (a real ``costroute serve`` process) right after 202s, in the middle
of a batch upload and in the middle of result ingestion; restart it each time on the
same database, and check that every ticket finishes exactly once.

The OpenAI emulator runs in this test process on a ManualClock, so it outlives the
proxy and its batches only move when the test says so."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.clock import ManualClock
from adapters.emulators.faults import Fault
from adapters.emulators.openai.batch.emulator import BatchEmulatorConfig
from adapters.emulators.openai.batch.lines import LineFault
from adapters.emulators.openai.server import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as openai_emulator
from tests.support import ServerThread, free_port

CLIENT = "sk-crash-client-0000000"
OPS = "sk-crash-ops-00000000000"
RUN = 103.0
HANG = 6.0
ROOT = Path(__file__).resolve().parents[2]


class Proxy:
    def __init__(self, tmp: Path, emulator_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "costroute.db"
        self.log = tmp / "proxy.log"
        self.config = tmp / "costroute.toml"
        self.config.write_text(
            f"""
[server]
host = "127.0.0.1"
port = {self.port}

[store]
path = "{self.db}"

[[auth.keys]]
name = "client"
key_env = "CRASH_CLIENT_KEY"

[[auth.keys]]
name = "ops"
key_env = "CRASH_OPS_KEY"
admin = true

[providers.openai]
type = "openai"
base_url = "{emulator_url}/v1"
api_key_env = "CRASH_OPENAI_KEY"

[models.gpt-4o-mini]
provider = "openai"

[batch]
max_wait = "1d"
poll_interval = "1s"
flush_interval = "1s"
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "CRASH_CLIENT_KEY": CLIENT,
            "CRASH_OPS_KEY": OPS,
            "CRASH_OPENAI_KEY": "sk-upstream",
            "PYTHONPATH": str(ROOT),
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "--config", str(self.config)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise TimeoutError(self.log.read_text())

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no shutdown, no flushing, no finally blocks
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def client(self, key: str = CLIENT, timeout: float = 30) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=timeout
        )

    def defer(self, content: str) -> str:
        with self.client() as client:
            response = client.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]},
                headers={"X-Latency-Tolerance": "1d"},
            )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def ticket(self, ticket_id: str, wait: int = 0) -> dict[str, Any]:
        with self.client(timeout=wait + 30) as client:
            response = client.get(f"/v1/tickets/{ticket_id}", params={"wait": wait})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def flush(self) -> dict[str, Any]:
        with self.client(OPS, timeout=60) as client:
            response = client.post("/admin/flush")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def until(condition: Callable[[], bool], seconds: float = 40) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Proxy, Any, ManualClock]]:
    clock = ManualClock()
    config = BatchEmulatorConfig(validation_delay=1, processing_time=100, finalize_delay=1)
    emulator = ServerThread(
        openai_emulator(OpenAIEmulatorConfig(), clock=clock, batch_config=config)
    ).start()
    proxy = Proxy(tmp_path, emulator.url)
    try:
        yield proxy, emulator.app.state, clock
    finally:
        proxy.stop()
        emulator.stop()


def requests_to(state: Any, method: str, fragment: str) -> int:
    return sum(1 for r in list(state.requests) if r["method"] == method and fragment in r["path"])


def test_sigkill_after_202_mid_upload_and_mid_ingest(world: tuple[Proxy, Any, ManualClock]) -> None:
    proxy, state, clock = world
    proxy.start()

    # 1. Killed right after the 202s: the tickets were already on disk.
    ids = [proxy.defer(f"question {i}") for i in range(6)]
    proxy.kill()
    proxy.start()
    assert {proxy.ticket(t)["status"] for t in ids} == {"queued"}

    # 2. Killed while the batch file is being uploaded.
    # Long enough to be killed inside it, short enough to be over before teardown.
    state.faults.add(Fault(path="/v1/files", latency=HANG))
    flushing = threading.Thread(target=lambda: _swallow(proxy.flush), daemon=True)
    flushing.start()
    until(lambda: requests_to(state, "POST", "/v1/files") >= 1)
    proxy.kill()
    state.faults.clear()
    proxy.start()  # start-up reconciliation: the provider never saw that batch
    assert {proxy.ticket(t)["status"] for t in ids} == {"queued"}
    assert state.batches.batches_state() == []

    # 3. Killed in the middle of ingestion: the output file was applied, the error
    #    file was being downloaded.
    permanent, retryable = ids[0], ids[1]
    error = {"message": "no", "type": "invalid_request_error", "param": None, "code": "bad"}
    state.batches.line_faults.add(LineFault(custom_id=permanent, status_code=400, error=error))
    state.batches.line_faults.add(LineFault(custom_id=retryable, code="batch_expired"))
    assert proxy.flush()["tickets"] == 6
    state.faults.add(Fault(path="/content", times=1))  # the output file: served normally
    state.faults.add(Fault(path="/content", times=1, latency=HANG))  # the error file: hangs
    clock.advance(RUN)
    until(lambda: requests_to(state, "GET", "/content") >= 2)
    # Applied before the kill: results that arrived are committed once the stream stalls.
    until(lambda: proxy.ticket(ids[5])["status"] == "completed", seconds=10)
    proxy.kill()
    state.faults.clear()
    state.batches.line_faults.clear()
    proxy.start()
    assert proxy.ticket(permanent, wait=20)["status"] == "failed"
    until(lambda: proxy.ticket(retryable)["status"] == "queued")
    proxy.flush()
    clock.advance(RUN)
    finals = {t: proxy.ticket(t, wait=20)["status"] for t in ids}
    assert finals == {t: "failed" if t == permanent else "completed" for t in ids}
    proxy.stop()

    # Exactly once, from the database itself.
    with sqlite3.connect(proxy.db) as db:
        done = Counter(
            row[0]
            for row in db.execute(
                "SELECT ticket_id FROM ticket_events WHERE to_status IN "
                "('completed', 'failed', 'cancelled') AND from_status != to_status"
            )
        )
        assert done == Counter(ids)
        logged = Counter(
            row[0]
            for row in db.execute(
                "SELECT ticket_id FROM routes WHERE ticket_id IS NOT NULL AND status != 202"
            )
        )
        assert logged == Counter(ids)
        results = db.execute("SELECT COUNT(*) FROM ticket_results").fetchone()[0]
        assert results == 5
    # No ticket ran successfully in two provider batches.
    served: Counter[str] = Counter()
    for batch in state.batches.batches_state():
        assert batch["metadata"]["costroute_batch_id"].startswith("cb_")
        if batch["output_file_id"]:
            stored = state.batches.files.get(batch["output_file_id"])
            for line in stored.path.read_bytes().splitlines():
                served[httpx.Response(200, content=line).json()["custom_id"]] += 1
    assert set(served) == set(ids) - {permanent}
    assert max(served.values()) == 1


def _swallow(call: Callable[[], Any]) -> None:
    # The proxy dies under this request, as intended.
    with contextlib.suppress(httpx.HTTPError, AssertionError):
        call()
