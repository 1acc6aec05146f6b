"""The SIGKILL crash drill: ``costroute serve`` as a real process in front of the
OpenAI emulator (another process, on a manual clock), deferred requests sent with
Idempotency-Keys by clients that retry through the crashes, and the proxy SIGKILLed at
random points while it enqueues, flushes and uploads, polls and ingests. Then the
evidence: the database, the emulator's batches and their input and output files."""

from __future__ import annotations

import collections
import contextlib
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.hardening.procs import Emulator, Serve, write_toml
from tests.hardening.stack import CLIENT_A, ENV, OPENAI_KEY

FINAL = ("completed", "failed", "cancelled")


def config(tmp: Path, emulator_url: str, *, max_lines: int) -> Path:
    return write_toml(
        tmp / "crash.toml",
        {
            "store": {"path": str(tmp / "crash.db")},
            "auth": {"keys": [{"name": "team-a", "key_env": "HARD_A_KEY"}]},
            "providers": {
                "openai": {
                    "type": "openai",
                    "base_url": emulator_url + "/v1",
                    "api_key_env": "HARD_OPENAI_KEY",
                    "max_active_batches": 2,
                },
            },
            "models": {"gpt-4o-mini": {"provider": "openai"}},
            # Flush whatever is queued every 0.2 s and poll every tick: many small
            # batches, many moments to die in.
            "batch": {
                "min_tolerance": "1h",
                "max_wait": "0",
                "flush_interval": "0",
                "poll_interval": "0",
                "max_lines": max_lines,
            },
        },
    )


@dataclass
class Drill:
    tmp: Path
    jobs: int
    kills: int
    seed: int
    max_lines: int = 50
    ids: dict[int, str] = field(default_factory=dict)
    killed_at: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.emulator = Emulator("openai", "--manual-clock", "--api-key", OPENAI_KEY)
        self.proxy = Serve(config(self.tmp, self.emulator.url, max_lines=self.max_lines), ENV)
        self.db = self.tmp / "crash.db"

    def close(self) -> None:
        self.proxy.stop()
        self.emulator.stop()

    # --- the actors ------------------------------------------------------------------

    def crash(self, phase: str) -> None:
        self.proxy.kill()
        self.killed_at.append(phase)
        self.proxy.start()

    def _client(self, jobs: list[int]) -> None:
        headers = {"authorization": f"Bearer {CLIENT_A}", "x-latency-tolerance": "4h"}
        with httpx.Client(base_url=self.proxy.url, timeout=10) as http:
            for job in jobs:
                body = {"model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": f"job {job}"}]}  # fmt: skip
                deadline = time.monotonic() + 60
                while job not in self.ids:
                    try:
                        key = {"idempotency-key": f"job-{job}"}
                        answer = http.post(
                            "/v1/chat/completions", json=body, headers={**headers, **key}
                        )
                    except httpx.TransportError:
                        answer = None
                    if answer is not None and answer.status_code == 202:
                        self.ids[job] = answer.json()["id"]
                    elif answer is not None and answer.status_code < 500:
                        self.errors.append(f"job {job}: {answer.status_code} {answer.text}")
                        return
                    elif time.monotonic() > deadline:
                        self.errors.append(f"job {job}: never accepted")
                        return
                    else:
                        time.sleep(0.05)

    def enqueue_with_crashes(self, crashes: int) -> None:
        """Send every job from 8 clients, killing the proxy ``crashes`` times meanwhile."""
        order = list(range(self.jobs))
        clients = [
            threading.Thread(target=self._client, args=(order[i::8],), daemon=True)
            for i in range(8)
        ]
        for thread in clients:
            thread.start()
        for _ in range(crashes):
            target = self.random.uniform(0.1, 0.9) * self.jobs
            while len(self.ids) < target and any(t.is_alive() for t in clients):
                time.sleep(0.005)
            self.crash("enqueue")
        for thread in clients:
            thread.join(120)
        assert not self.errors, self.errors[:5]
        assert len(self.ids) == self.jobs

    def advance_emulator(self, seconds: float = 100) -> None:
        httpx.post(self.emulator.url + "/_emulator/clock", json={"advance": seconds}, timeout=10)

    def upstream_batches(self, http: httpx.Client) -> int:
        return len(http.get(self.emulator.url + "/_emulator/batches/state").json()["batches"])

    def crash_when_a_batch_is_created(self) -> None:
        """Kill the proxy the moment the provider has accepted a new batch: the window
        in which only the provider knows the batch (start-up reconciliation must adopt
        it by its metadata instead of submitting the tickets again)."""
        # The batch controls sit behind the emulator's key check (unlike /_emulator/*).
        auth = {"authorization": f"Bearer {OPENAI_KEY}"}
        with httpx.Client(timeout=10, headers=auth) as http:
            seen = self.upstream_batches(http)
            self.advance_emulator()  # live batches end; the proxy ingests and flushes
            deadline = time.monotonic() + 5
            while self.upstream_batches(http) == seen and time.monotonic() < deadline:
                pass
        self.crash("create")

    def finish_with_crashes(self, crashes: int, timeout: float = 120) -> None:
        """Let batches run (flush, upload, create, poll, ingest), killing the proxy
        ``crashes`` times: when a batch was just created upstream, or at a random moment
        of the poll and ingest, until every ticket is final."""
        deadline = time.monotonic() + timeout
        left = crashes
        while self.unfinished():
            assert time.monotonic() < deadline, f"unfinished: {self.statuses()}"
            if left and self.unfinished():
                # The first kill always aims at the create window, the rarest to hit.
                if left == crashes or self.random.random() < 0.5:
                    self.crash_when_a_batch_is_created()
                else:
                    self.advance_emulator()
                    time.sleep(self.random.uniform(0, 0.4))
                    self.crash("poll/ingest")
                left -= 1
            self.advance_emulator()
            time.sleep(0.25)

    def adopted(self) -> int:
        """Batches the proxy found upstream by metadata after a restart (its log)."""
        return self.proxy.output(full=True).count("adopted provider batch")

    # --- the evidence ----------------------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]

    def statuses(self) -> dict[str, int]:
        return dict(self.query("SELECT status, COUNT(*) FROM tickets GROUP BY status"))

    def unfinished(self) -> int:
        marks = ",".join("?" * len(FINAL))
        return int(self.query(f"SELECT COUNT(*) FROM tickets WHERE status NOT IN ({marks})",
                              FINAL)[0][0])  # fmt: skip

    def upstream(self) -> tuple[collections.Counter[str], dict[str, Any]]:
        """(ticket id -> provider batches whose input holds it, ticket id -> the body
        its successful output line carries)."""
        auth = {"authorization": f"Bearer {OPENAI_KEY}"}
        with httpx.Client(base_url=self.emulator.url, headers=auth, timeout=30) as http:
            state = http.get("/_emulator/batches/state").json()
            placed: collections.Counter[str] = collections.Counter()
            answered: dict[str, Any] = {}
            for batch in state["batches"]:
                lines = http.get(f"/v1/files/{batch['input_file_id']}/content").content
                for line in lines.splitlines():
                    placed[orjson.loads(line)["custom_id"]] += 1
                if batch.get("output_file_id"):
                    out = http.get(f"/v1/files/{batch['output_file_id']}/content").content
                    for line in out.splitlines():
                        item = orjson.loads(line)
                        if (item.get("response") or {}).get("status_code") == 200:
                            answered[item["custom_id"]] = item["response"]["body"]
        return placed, answered

    def verify(self) -> None:
        ids = set(self.ids.values())
        assert len(ids) == self.jobs  # one ticket per Idempotency-Key
        rows = self.query("SELECT id, idempotency_key, status FROM tickets")
        assert {row[0] for row in rows} == ids  # no orphan ticket from an unanswered 202
        assert collections.Counter(row[2] for row in rows) == {"completed": self.jobs}
        finals = collections.Counter(
            row[0]
            for row in self.query(
                "SELECT ticket_id FROM ticket_events WHERE to_status IN (?, ?, ?)", FINAL
            )
        )
        assert finals == dict.fromkeys(ids, 1), "a ticket ended more than once"
        placed, answered = self.upstream()
        doubled = {t: n for t, n in placed.items() if n != 1}
        assert not doubled, f"tickets in several provider batches: {list(doubled.items())[:5]}"
        assert set(placed) == ids
        results = dict(
            self.query("SELECT ticket_id, result FROM ticket_results WHERE ticket_id IN "
                       "(SELECT id FROM tickets)")
        )  # fmt: skip
        for ticket in ids:
            assert orjson.loads(results[ticket]) == answered[ticket], ticket
        logged = collections.Counter(
            row[0] for row in self.query("SELECT ticket_id FROM routes WHERE status = 200")
        )
        assert logged == dict.fromkeys(ids, 1), "a final routing-log row is missing or doubled"
