"""Several replicas on one PostgreSQL database (tests/hardening/replicas.py): SIGKILLs
during enqueue, flush and ingest lose and double nothing; a replica killed under
real-time load leaves the others serving; a long-poll on one replica wakes within a
second of another replica ending its ticket. Figures are printed (``-s`` shows them)
and quoted in the README."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hardening.replicas import ReplicaDrill, summary
from tests.hardening.stack import CLIENT_A

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def drill(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schema_url: str
) -> Iterator[ReplicaDrill]:
    jobs = getattr(request, "param", 1000)
    seed = int(os.environ.get("CRASH_SEED", str(int.from_bytes(os.urandom(4), "big"))))
    made = ReplicaDrill(tmp_path, pg_schema_url, jobs=jobs, seed=seed)
    made.start()
    try:
        yield made
    finally:
        made.close()
        print(f"\nreplica drill seed {seed} (CRASH_SEED={seed} repeats it)")


def test_three_replicas_lose_and_double_nothing_through_sigkills(drill: ReplicaDrill) -> None:
    started = time.monotonic()
    drill.enqueue_with_kills(3)
    enqueued = time.monotonic()
    drill.finish_with_kills(4)
    finished = time.monotonic()
    try:
        counters = drill.verify()
    except AssertionError:
        print(drill.output())
        raise
    phases = [(k.phase, k.held, k.taken_over_s) for k in drill.kills]
    print(
        f"\n{counters['tickets']} tickets over 3 replicas, {len(drill.kills)} SIGKILLs "
        f"{phases}\nenqueue {enqueued - started:.1f} s (client requests that moved to "
        f"another replica: {drill.failovers_seen}), batches {finished - enqueued:.1f} s\n"
        f"counters: {counters}\nfailover (SIGKILL to the dead replica's work taken over): "
        f"{summary(drill.failover_times())}\nbatches adopted by another replica: "
        f"{drill.log_count('adopted provider batch')}, found never created and requeued: "
        f"{drill.log_count('never reached the provider')}, zombie batches cancelled: "
        f"{drill.log_count('lease lost while creating it')}"
    )
    assert [k.phase for k in drill.kills].count("enqueue") == 3
    assert {"create", "upload"} <= {k.phase for k in drill.kills}


def _realtime_client(
    drill: ReplicaDrill, stop: threading.Event, outcomes: list[tuple[int, int]], offset: int
) -> None:
    """Real-time calls round-robin; a call that fails on one replica is retried on the
    next (what a load balancer's retry does). Records (tries, final status)."""
    headers = {"authorization": f"Bearer {CLIENT_A}"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    turn = offset
    with httpx.Client(timeout=10) as http:
        while not stop.is_set():
            tries, status = 0, 0
            while tries < 6 and status != 200:
                server = drill.servers[turn % len(drill.servers)]
                turn += 1
                tries += 1
                try:
                    status = http.post(
                        server.url + "/v1/chat/completions", json=body, headers=headers
                    ).status_code
                except httpx.TransportError:
                    status = 0
            outcomes.append((tries, status))


@pytest.mark.parametrize("drill", [200], indirect=True)
def test_a_replica_killed_under_realtime_load_leaves_the_others_serving(
    drill: ReplicaDrill,
) -> None:
    stop = threading.Event()
    outcomes: list[tuple[int, int]] = []
    clients = [
        threading.Thread(target=_realtime_client, args=(drill, stop, outcomes, i), daemon=True)
        for i in range(6)
    ]
    for thread in clients:
        thread.start()
    time.sleep(1.0)
    before = len(outcomes)
    # Deferred requests at the same time; one replica dies halfway through them.
    enqueue = threading.Thread(target=drill.enqueue_with_kills, args=(1,), daemon=True)
    enqueue.start()
    enqueue.join(180)
    time.sleep(1.0)
    stop.set()
    for thread in clients:
        thread.join(30)
    drill.finish_with_kills(0)
    counters = drill.verify()
    assert all(status == 200 for _, status in outcomes), outcomes[-20:]
    moved = sum(1 for tries, _ in outcomes if tries > 1)
    print(
        f"\nreal-time calls: {len(outcomes)} ({before} before the kill), all answered 200; "
        f"{moved} needed a second replica; deferred: {counters}"
    )


def test_a_long_poll_wakes_within_a_second_of_another_replica_ending_its_ticket(
    drill: ReplicaDrill,
) -> None:
    drill.enqueue_with_kills(0)
    cross, local = drill.long_poll_wakes()
    assert cross, "no ticket ended on another replica than its long-poll's"
    print(
        f"\nlong-poll wake after the ticket ended on another replica: {summary(cross)}; "
        f"on the same replica: {summary(local)}"
    )
    assert statistics.quantiles(cross, n=100)[98] < 1.0 if len(cross) > 1 else cross[0] < 1.0
