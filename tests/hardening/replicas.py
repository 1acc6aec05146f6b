"""The multi-replica drill: three ``costroute serve`` processes on one PostgreSQL
database, in front of one OpenAI emulator (another process, on a manual clock), with
clients that spread deferred requests round-robin over the replicas and move on to the
next replica when one does not answer. Replicas are SIGKILLed at random points while
they enqueue, while one of them flushes (the moment a provider batch was created, and at
random), and while they poll and ingest; each is restarted on the same database.

The evidence is read from the database and from the emulator's own batches and files:
every ticket ends exactly once, no ticket is in two provider batches, every 202 a client
got names a stored ticket, no result and no routing-log row is lost or doubled. The drill
also measures what scale-out costs: failover times (SIGKILL to the dead replica's work
taken over), and (``wake_latencies``) how fast a long-poll on one replica returns after
another replica ended its ticket.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from tests.hardening.procs import Emulator, Serve, write_toml
from tests.hardening.stack import CLIENT_A, ENV, OPENAI_KEY

FINAL = ("completed", "failed", "cancelled")
LEASE_S = 2
GRACE_S = 3


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """One query on its own connection (the drill itself is synchronous)."""

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(sql, *params)]
        finally:
            await conn.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run())
    # Called from inside a coroutine (the kill while a lock is held): its own loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def config(tmp: Path, emulator_url: str, *, max_lines: int) -> Path:
    return write_toml(
        tmp / "replicas.toml",
        {
            # Short leases, so a dead replica's work is taken over within seconds.
            "store": {
                "url_env": "COSTROUTE_DATABASE_URL",
                "pool_size": 4,
                "lease": f"{LEASE_S}s",
                "reconcile_grace": f"{GRACE_S}s",
            },
            "auth": {"keys": [{"name": "team-a", "key_env": "HARD_A_KEY"}]},
            "providers": {
                "openai": {
                    "type": "openai",
                    "base_url": emulator_url + "/v1",
                    "api_key_env": "HARD_OPENAI_KEY",
                    "max_active_batches": 4,
                },
            },
            "models": {"gpt-4o-mini": {"provider": "openai"}},
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
class Kill:
    phase: str
    pid: int
    at: float
    held: int  # pieces of work the replica held when it died
    taken_over_s: float | None = None


@dataclass
class ReplicaDrill:
    tmp: Path
    url: str
    jobs: int
    seed: int
    replicas: int = 3
    max_lines: int = 100
    ids: dict[int, str] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failovers_seen: int = 0  # client requests that had to move to another replica

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.emulator = Emulator("openai", "--manual-clock", "--api-key", OPENAI_KEY)
        env = {**ENV, "COSTROUTE_DATABASE_URL": self.url}
        path = config(self.tmp, self.emulator.url, max_lines=self.max_lines)
        self.servers = [
            Serve(path, env, log=self.tmp / f"replica-{i}.log") for i in range(self.replicas)
        ]
        self._lock = threading.Lock()
        self._restarts: list[threading.Thread] = []
        self._restarting: set[int] = set()

    def start(self) -> None:
        for server in self.servers:
            server.start(timeout=60)

    def close(self) -> None:
        for thread in self._restarts:
            thread.join(60)
        for server in self.servers:
            server.stop()
        self.emulator.stop()

    def output(self) -> str:
        return "\n".join(f"--- replica {i}\n{s.output()}" for i, s in enumerate(self.servers))

    # --- killing -----------------------------------------------------------------------

    def held_by(self, pid: int) -> int:
        """Pieces of work a replica holds: live batch rows under its lease, named
        leases, tickets it is sending."""
        like = f"%:{pid}:%"
        rows = query(
            self.url,
            "SELECT (SELECT COUNT(*) FROM batches WHERE owner LIKE $1 "
            "AND status IN ('created', 'submitted') AND lease_ms > 0) + "
            "(SELECT COUNT(*) FROM leases WHERE owner LIKE $1 AND expires_ms > 0) + "
            "(SELECT COUNT(*) FROM tickets WHERE lease_owner LIKE $1 AND status = 'realtime')",
            like,
        )
        return int(rows[0][0])

    def kill(self, index: int, phase: str) -> None:
        """SIGKILL replica ``index`` now; restart it in the background (the others go on
        serving meanwhile), and time how long until its work is taken over. A replica
        still restarting is left alone (the next one dies instead)."""
        for step in range(self.replicas):
            candidate = (index + step) % self.replicas
            if self.servers[candidate].alive() and candidate not in self._restarting:
                index = candidate
                break
        else:
            return
        server = self.servers[index]
        pid = server.pid
        held = self.held_by(pid)
        server.kill()
        kill = Kill(phase, pid, time.monotonic(), held)
        self.kills.append(kill)
        if held:
            threading.Thread(target=self._watch_takeover, args=(kill,), daemon=True).start()
        self._restarting.add(index)

        def restart() -> None:
            try:
                server.start(timeout=60)
            finally:
                self._restarting.discard(index)

        thread = threading.Thread(target=restart, daemon=True)
        thread.start()
        self._restarts.append(thread)

    def _watch_takeover(self, kill: Kill) -> None:
        deadline = kill.at + 60
        while time.monotonic() < deadline:
            if self.held_by(kill.pid) == 0:
                kill.taken_over_s = time.monotonic() - kill.at
                return
            time.sleep(0.05)

    def flush_holder(self) -> int | None:
        rows = query(self.url, "SELECT owner FROM leases WHERE name = 'flush' AND expires_ms > 0")
        owners = {row[0] for row in rows}
        for index, server in enumerate(self.servers):
            if server.alive() and any(f":{server.pid}:" in owner for owner in owners):
                return index
        return None

    def wait_restarts(self) -> None:
        for thread in self._restarts:
            thread.join(60)
        self._restarts.clear()

    # --- clients ------------------------------------------------------------------------

    def _client(self, jobs: list[int], offset: int) -> None:
        headers = {"authorization": f"Bearer {CLIENT_A}", "x-latency-tolerance": "4h"}
        turn = offset
        with httpx.Client(timeout=10) as http:
            for job in jobs:
                body = {"model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": f"job {job}"}]}  # fmt: skip
                deadline = time.monotonic() + 90
                tries = 0
                while job not in self.ids:
                    server = self.servers[turn % len(self.servers)]
                    turn += 1  # round robin; a failed try moves on to the next replica
                    tries += 1
                    try:
                        answer = http.post(
                            server.url + "/v1/chat/completions",
                            json=body,
                            headers={**headers, "idempotency-key": f"job-{job}"},
                        )
                    except httpx.TransportError:
                        answer = None
                    if answer is not None and answer.status_code == 202:
                        with self._lock:
                            self.ids[job] = answer.json()["id"]
                            self.failovers_seen += tries > 1
                    elif answer is not None and answer.status_code < 500:
                        self.errors.append(f"job {job}: {answer.status_code} {answer.text}")
                        return
                    elif time.monotonic() > deadline:
                        self.errors.append(f"job {job}: never accepted")
                        return
                    elif tries % len(self.servers) == 0:
                        time.sleep(0.05)

    def enqueue_with_kills(self, kills: int, clients: int = 8) -> None:
        order = list(range(self.jobs))
        threads = [
            threading.Thread(target=self._client, args=(order[i::clients], i), daemon=True)
            for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        for _ in range(kills):
            target = self.random.uniform(0.1, 0.9) * self.jobs
            while len(self.ids) < target and any(t.is_alive() for t in threads):
                time.sleep(0.005)
            self.kill(self.random.randrange(self.replicas), "enqueue")
        for thread in threads:
            thread.join(180)
        assert not self.errors, self.errors[:5]
        assert len(self.ids) == self.jobs

    # --- batches ------------------------------------------------------------------------

    def advance_emulator(self, seconds: float = 100) -> None:
        httpx.post(self.emulator.url + "/_emulator/clock", json={"advance": seconds}, timeout=10)

    def upstream_batches(self) -> int:
        auth = {"authorization": f"Bearer {OPENAI_KEY}"}
        state = httpx.get(self.emulator.url + "/_emulator/batches/state", headers=auth, timeout=10)
        return len(state.json()["batches"])

    def slow_uploads(self, seconds: float) -> None:
        """Every Files API call of the emulator waits ``seconds`` (0: none): a batch then
        spends that long uploading, a window to die in before the provider knows it."""
        faults = self.emulator.url + "/_emulator/faults"
        httpx.delete(faults, timeout=10)
        if seconds:
            fault = {"path": "/v1/files", "latency": seconds, "times": -1}
            httpx.post(faults, json=fault, timeout=10)

    def _owner_index(self, owner: str) -> int | None:
        for index, server in enumerate(self.servers):
            if server.alive() and f":{server.pid}:" in owner:
                return index
        return None

    async def _created_batch(self, conn: asyncpg.Connection, seconds: float) -> tuple[str, str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            row = await conn.fetchrow(
                "SELECT id, owner FROM batches WHERE status = 'created' ORDER BY created_ms LIMIT 1"
            )
            if row is not None and self._owner_index(row[1]) is not None:
                return str(row[0]), str(row[1])
            self.advance_emulator()  # live batches end, their ingest frees room for more
            await asyncio.sleep(0.01)
        raise TimeoutError("no batch was being created")

    def kill_during_upload(self) -> None:
        """Kill the replica uploading a batch: the provider never hears of it; another
        replica, after the lease and the grace, lists the provider's batches, does not
        find it, and requeues its tickets."""

        async def run() -> int | None:
            conn = await asyncpg.connect(self.url)
            try:
                _, owner = await self._created_batch(conn, 20)
            finally:
                await conn.close()
            return self._owner_index(owner)

        index = asyncio.run(run())
        if index is not None:
            self.kill(index, "upload")

    def kill_between_create_and_record(self) -> None:
        """Kill the replica whose batch the provider has just created, before it could
        record that: only the provider knows the batch. (The test holds a write lock on
        ``batches`` meanwhile, so the replica cannot record it first.) Another replica,
        after the lease and the grace, finds it by its metadata and adopts it."""

        async def run() -> int | None:
            conn = await asyncpg.connect(self.url)
            try:
                batch_id, owner = await self._created_batch(conn, 20)
                async with conn.transaction():
                    await conn.execute("LOCK TABLE batches IN EXCLUSIVE MODE")
                    auth = {"authorization": f"Bearer {OPENAI_KEY}"}
                    async with httpx.AsyncClient(timeout=10, headers=auth) as http:
                        deadline = time.monotonic() + 10
                        while time.monotonic() < deadline:
                            state = await http.get(self.emulator.url + "/_emulator/batches/state")
                            metadata = [b.get("metadata") or {} for b in state.json()["batches"]]
                            if any(m.get("costroute_batch_id") == batch_id for m in metadata):
                                break
                            await asyncio.sleep(0.01)
                    index = self._owner_index(owner)
                    if index is not None:
                        self.kill(index, "create")
            finally:
                await conn.close()
            return index

        asyncio.run(run())

    def finish_with_kills(self, kills: int, timeout: float = 240) -> None:
        """Run the batches to the end, killing ``kills`` replicas on the way: the first
        during an upload, the second between a batch's create and its record, then at
        random (poll, ingest, or one of those two)."""
        deadline = time.monotonic() + timeout
        kinds = ["upload", "create", "poll/ingest"]
        plan = ["upload", "create"][:kills]
        plan += [self.random.choice(kinds) for _ in range(kills - len(plan))]
        if plan:
            self.slow_uploads(0.3)
        while self.unfinished():
            assert time.monotonic() < deadline, f"unfinished: {self.statuses()}"
            if plan:
                phase = plan.pop(0)
                try:
                    if phase == "create":
                        self.kill_between_create_and_record()
                    elif phase == "upload":
                        self.kill_during_upload()
                    else:
                        self.advance_emulator()
                        time.sleep(self.random.uniform(0, 0.4))
                        self.kill(self.random.randrange(self.replicas), phase)
                except TimeoutError:
                    pass  # the work ran out before the moment came
                if not plan:
                    self.slow_uploads(0)
            self.advance_emulator()
            time.sleep(0.25)
        self.wait_restarts()

    # --- evidence -----------------------------------------------------------------------

    def statuses(self) -> dict[str, int]:
        return dict(query(self.url, "SELECT status, COUNT(*) FROM tickets GROUP BY status"))

    def unfinished(self) -> int:
        rows = query(self.url, "SELECT COUNT(*) FROM tickets WHERE status <> ALL($1)", list(FINAL))
        return int(rows[0][0])

    def upstream(self) -> tuple[collections.Counter[str], collections.Counter[str], dict[str, Any]]:
        """(ticket id -> provider batches holding it, ticket id -> live provider batches
        holding it, ticket id -> the body of its successful output line)."""
        auth = {"authorization": f"Bearer {OPENAI_KEY}"}
        with httpx.Client(base_url=self.emulator.url, headers=auth, timeout=30) as http:
            state = http.get("/_emulator/batches/state").json()
            placed: collections.Counter[str] = collections.Counter()
            live: collections.Counter[str] = collections.Counter()
            answered: dict[str, Any] = {}
            for batch in state["batches"]:
                lines = http.get(f"/v1/files/{batch['input_file_id']}/content").content
                alive = batch["status"] not in ("failed", "expired", "cancelled", "cancelling")
                for line in lines.splitlines():
                    custom_id = orjson.loads(line)["custom_id"]
                    placed[custom_id] += 1
                    live[custom_id] += alive
                if batch.get("output_file_id"):
                    out = http.get(f"/v1/files/{batch['output_file_id']}/content").content
                    for line in out.splitlines():
                        item = orjson.loads(line)
                        if (item.get("response") or {}).get("status_code") == 200:
                            answered[item["custom_id"]] = item["response"]["body"]
        return placed, live, answered

    def verify(self) -> dict[str, int]:
        """Assert the guarantees; return the counters (all zero when they hold)."""
        ids = set(self.ids.values())
        rows = query(self.url, "SELECT id, status FROM tickets")
        stored = {row[0] for row in rows}
        placed, live, answered = self.upstream()
        finals = collections.Counter(
            row[0]
            for row in query(
                self.url,
                "SELECT ticket_id FROM ticket_events WHERE to_status = ANY($1)",
                list(FINAL),
            )
        )
        results = dict(query(self.url, "SELECT ticket_id, result FROM ticket_results"))
        logged = collections.Counter(
            row[0] for row in query(self.url, "SELECT ticket_id FROM routes WHERE status = 200")
        )
        accepted = collections.Counter(
            row[0]
            for row in query(
                self.url,
                "SELECT ticket_id FROM routes WHERE status = 202 AND reason NOT LIKE 'idempotent%'",
            )
        )
        counters = {
            "tickets": len(ids),
            "tickets_per_key_extra": self.jobs - len(ids),
            "lost_202s": len(ids - stored),
            "orphan_tickets": len(stored - ids),
            "not_completed": sum(1 for row in rows if row[1] != "completed"),
            "ended_twice": sum(1 for t in ids if finals.get(t, 0) > 1),
            "in_two_live_batches": sum(1 for n in live.values() if n > 1),
            "in_two_batches": sum(1 for n in placed.values() if n > 1),
            "never_submitted": len(ids - set(placed)),
            "results_lost_or_wrong": sum(
                1 for t in ids if t not in results or orjson.loads(results[t]) != answered.get(t)
            ),
            "final_rows_lost_or_doubled": sum(1 for t in ids if logged.get(t, 0) != 1),
            "accepted_rows_lost_or_doubled": sum(1 for t in ids if accepted.get(t, 0) != 1),
        }
        problems = {k: v for k, v in counters.items() if k != "tickets" and v}
        assert not problems, problems
        return counters

    def long_poll_wakes(self) -> tuple[list[float], list[float]]:
        """Long-poll every enqueued ticket (``wait=60``) round-robin over the replicas,
        run the batches to the end, and return the seconds from each ticket's end (its
        ``finished_ms``, the database's record) to its long-poll's answer: (woken by a
        ticket that ended on another replica, on the same replica)."""
        woke: dict[str, float] = {}
        waiting: dict[str, int] = {}
        headers = {"authorization": f"Bearer {CLIENT_A}"}

        def poll(ticket_id: str, index: int) -> None:
            server = self.servers[index]
            waiting[ticket_id] = server.pid
            with httpx.Client(timeout=70) as http:
                answer = http.get(
                    f"{server.url}/v1/tickets/{ticket_id}", params={"wait": 60}, headers=headers
                )
            if answer.status_code == 200 and answer.json()["status"] == "completed":
                woke[ticket_id] = time.time()

        ids = list(self.ids.values())
        polls = [
            threading.Thread(target=poll, args=(ticket_id, n % self.replicas), daemon=True)
            for n, ticket_id in enumerate(ids)
        ]
        for thread in polls:
            thread.start()
        time.sleep(1.0)  # every long-poll is waiting
        self.finish_with_kills(0)
        for thread in polls:
            thread.join(70)
        assert len(woke) == len(ids), f"{len(ids) - len(woke)} long-polls never woke"
        rows = query(
            self.url,
            "SELECT t.id, t.finished_ms, b.owner FROM tickets t "
            "JOIN batches b ON b.id = t.batch_id",
        )
        cross: list[float] = []
        local: list[float] = []
        for ticket_id, finished_ms, owner in rows:
            if ticket_id in woke:
                same = f":{waiting[ticket_id]}:" in str(owner)
                (local if same else cross).append(woke[ticket_id] - int(finished_ms) / 1000)
        return cross, local

    def log_count(self, text: str) -> int:
        return sum(server.output(full=True).count(text) for server in self.servers)

    def failover_times(self) -> list[float]:
        return sorted(k.taken_over_s for k in self.kills if k.taken_over_s is not None)


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms (n={len(ordered)})"
    )
