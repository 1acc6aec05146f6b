"""PostgreSQL beside SQLite, in one run on this machine (README, "Running several
replicas"):

    python -m tests.benchmarks.replicas [--out DIR] [--quick]

1. enqueue at concurrency 64, one replica: tickets/s committed before their 202, on
   SQLite and on PostgreSQL (fsync on), with the database's own work per ticket on
   PostgreSQL: statements (round trips, from ``pg_stat_statements``), transactions,
   WAL bytes and WAL syncs;
2. a 50,000-ticket flush and a 50,000-line ingest on each engine;
3. real-time calls (no database on their path but the buffered routing log): requests/s
   and CPU per request on each engine;
4. scale-out on 2 cores: the same deferred load spread over 1, 2 and 3 replicas on one
   PostgreSQL: total tickets/s and CPU per request in each replica (flat means replicas
   add no per-request cost; on 2 cores they cannot add throughput).

Prints a table and writes ``replicas.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg

from tests import pgcluster
from tests.benchmarks import deferred
from tests.benchmarks.costroute_server import environ_for
from tests.benchmarks.loadgen import run_load
from tests.benchmarks.procs import Server, fresh_db
from tests.benchmarks.realtime import HEADERS, Case, request_body
from tests.benchmarks.stats import cpu_seconds, median


def say(line: str) -> None:
    print(line, flush=True)


async def new_schema(url: str) -> str:
    schema = "b_" + secrets.token_hex(4)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return f"{url}&search_path={schema}"


async def db_counters(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,"
            " (SELECT wal_sync FROM pg_stat_wal),"
            " (SELECT COALESCE(SUM(calls), 0)::bigint FROM pg_stat_statements)"
        )
        assert row is not None
        return {"xacts": row[0], "wal_bytes": row[1], "wal_syncs": row[2], "statements": row[3]}
    finally:
        await conn.close()


async def enqueue_both(upstream: Server, out: Path, url: str, quick: bool) -> dict[str, Any]:
    timing = {"repeats": 1 if quick else 3, "duration": 3.0 if quick else 5.0, "warmup": 1.0}
    server = {"loop": "uvloop", "http": "httptools"}
    results: dict[str, Any] = {}
    for engine in ("sqlite", "postgres"):
        target = await new_schema(url) if engine == "postgres" else None
        before = await db_counters(url)
        result = await deferred.enqueue(
            upstream, out, **timing, **server, progress=say, tag=f"-{engine}", db=target
        )
        after = await db_counters(url)
        entry: dict[str, Any] = {
            "tickets_per_s": round(result.rate),
            "p50_ms": round(result.p50_ms, 2),
            "p99_ms": round(result.p99_ms, 2),
            "accepted": result.accepted,
            "committed": result.committed,
            "errors": result.errors,
            "cpu_us_per_request": round(result.cpu_us),
        }
        if engine == "postgres":
            n = max(result.committed, 1)
            entry["per_ticket"] = {
                name: round((after[name] - before[name]) / n, 3) for name in after
            }
        results[engine] = entry
    return results


def flush_ingest_both(out: Path, url: str, tickets: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for engine in ("sqlite", "postgres"):
        target = asyncio.run(new_schema(url)) if engine == "postgres" else None
        found = deferred.batch_flush_ingest(out, tickets=tickets, progress=say, db=target)
        results[engine] = {
            "flush_s": round(found["flush"]["seconds"], 2),
            "upload_s": round(found["flush"]["upload_seconds"], 2),
            "flushed": found["flush"]["tickets"],
            "ingest_s": round(found["ingest"]["seconds"], 2),
            "ingested_lines": found["ingest"]["lines"],
        }
    return results


def proxy(name: str, upstream: Server, db: str, out: Path) -> Server:
    return Server(
        name,
        "tests.benchmarks.costroute_server",
        ["--upstream", upstream.url, "--db", db, "--loop", "uvloop", "--http", "httptools"],
        log_dir=out,
        env=environ_for(db),
    )


async def realtime_both(upstream: Server, out: Path, url: str, quick: bool) -> dict[str, Any]:
    body = request_body(Case(False, "instant", 64))
    results: dict[str, Any] = {}
    for engine in ("sqlite", "postgres"):
        db = await new_schema(url) if engine == "postgres" else str(fresh_db(out / "realtime.db"))
        rps, cpu = [], []
        with proxy(f"realtime-{engine}", upstream, db, out) as server:
            for _ in range(1 if quick else 3):
                start = cpu_seconds(server.pid)
                result = await run_load(
                    server.url + "/v1/chat/completions", body, headers=HEADERS,
                    concurrency=64, duration=3.0 if quick else 5.0, warmup=1.0,
                )  # fmt: skip
                cpu.append((cpu_seconds(server.pid) - start) / max(result.sent, 1) * 1e6)
                rps.append(result.rps)
        results[engine] = {
            "requests_per_s": round(median(rps)),
            "cpu_us_per_request": round(median(cpu)),
        }
        say(f"[realtime {engine}] {results[engine]}")
    return results


async def scale_out(upstream: Server, out: Path, url: str, quick: bool) -> dict[str, Any]:
    """The same closed-loop deferred load (64 connections) over 1, 2, 3 replicas."""
    body = deferred.enqueue_body()
    headers = {**HEADERS, "x-latency-tolerance": "24h"}
    results: dict[str, Any] = {}
    for count in (1, 2, 3):
        db = await new_schema(url)
        with ExitStack() as stack:
            servers = [
                stack.enter_context(proxy(f"replica{count}-{i}", upstream, db, out))
                for i in range(count)
            ]
            start = [cpu_seconds(s.pid) for s in servers]
            loads = await asyncio.gather(
                *(
                    run_load(
                        s.url + "/v1/chat/completions", body, headers=headers,
                        concurrency=64 // count, duration=3.0 if quick else 6.0, warmup=1.0,
                        ok_status=202,
                    )
                    for s in servers
                )
            )  # fmt: skip
            cpu = [
                (cpu_seconds(s.pid) - before) / max(load.sent, 1) * 1e6
                for s, before, load in zip(servers, start, loads, strict=True)
            ]
        results[str(count)] = {
            "tickets_per_s": round(sum(load.rps for load in loads)),
            "cpu_us_per_request": [round(c) for c in cpu],
            "p99_ms": round(max(load.p99 for load in loads), 2),
            "errors": sum(load.errors for load in loads),
        }
        say(f"[scale-out {count} replicas] {results[str(count)]}")
    return results


def verdicts(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, PASS/MISS or a ratio) for the README's targets."""
    enqueue = figures["enqueue_c64"]
    realtime = figures["realtime_c64"]
    flush = figures["flush_ingest"]["postgres"]
    scale = figures["scale_out"]
    one = median(scale["1"]["cpu_us_per_request"])
    rows = [
        ("enqueue c=64, PostgreSQL, tickets/s (target >= 2000)",
         str(enqueue["postgres"]["tickets_per_s"]),
         "PASS" if enqueue["postgres"]["tickets_per_s"] >= 2000 else "MISS"),
        ("enqueue c=64, PostgreSQL / SQLite",
         f"{enqueue['postgres']['tickets_per_s'] / enqueue['sqlite']['tickets_per_s']:.2f}", ""),
        ("lost 202s (committed < accepted)",
         str(max(0, enqueue["postgres"]["accepted"] - enqueue["postgres"]["committed"])),
         "PASS" if enqueue["postgres"]["committed"] >= enqueue["postgres"]["accepted"] else "MISS"),
        ("50,000-ticket flush on PostgreSQL, s (target < 5)", str(flush["flush_s"]),
         "PASS" if flush["flush_s"] < 5 else "MISS"),
        ("50,000-line ingest on PostgreSQL, s (target < 5)", str(flush["ingest_s"]),
         "PASS" if flush["ingest_s"] < 5 else "MISS"),
        ("real time c=64, PostgreSQL / SQLite requests/s",
         f"{realtime['postgres']['requests_per_s'] / realtime['sqlite']['requests_per_s']:.2f}",
         ""),
    ]  # fmt: skip
    for count in ("2", "3"):
        cpu = median(scale[count]["cpu_us_per_request"])
        rows.append((f"CPU per request, {count} replicas / 1", f"{cpu / one:.2f}", ""))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.replicas")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="one short repeat each")
    parser.add_argument("--tickets", type=int, default=50_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="costroute-replicas-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        cluster = Path(tmp) / "pg"
        # fsync on: a 202 waits for a real WAL flush, as in production.
        url = pgcluster.start(cluster, preload=("pg_stat_statements",))
        try:
            asyncio.run(_sql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            with Server("upstream", "tests.benchmarks.upstream", [], log_dir=out) as upstream:
                figures = {
                    "enqueue_c64": asyncio.run(enqueue_both(upstream, out, url, args.quick)),
                    "realtime_c64": asyncio.run(realtime_both(upstream, out, url, args.quick)),
                    "scale_out": asyncio.run(scale_out(upstream, out, url, args.quick)),
                }
            figures["flush_ingest"] = flush_ingest_both(out, url, args.tickets)
        finally:
            pgcluster.stop(cluster)
        (out / "replicas.json").write_text(json.dumps(figures, indent=2))
        say(json.dumps(figures, indent=2))
        say("")
        for name, value, verdict in verdicts(figures):
            say(f"{name:<58} {value:>8}  {verdict}")
    return 0


async def _sql(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
