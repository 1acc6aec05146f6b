"""PostgreSQL beside SQLite, in one run on this machine (README, "Running several
replicas"; the figures in tests/benchmarks/RESULTS.md):

    python -m tests.benchmarks.replicas [--out DIR] [--quick] [--parts enqueue,...]
                                        [--drill-jobs 1000] [--seed N]

1. ``enqueue``: concurrency 64, one replica: tickets/s committed before their 202, on
   SQLite and on PostgreSQL (fsync on), with the database's own work per ticket on
   PostgreSQL: statements (round trips, from ``pg_stat_statements``, BEGIN and COMMIT
   included), transactions, WAL bytes (``pg_current_wal_lsn`` before and after) and WAL
   syncs;
2. ``realtime``: real-time calls (no database on their path but the buffered routing
   log): requests/s and CPU per request on each engine;
3. ``scale``: the same deferred load (64 connections) spread over 1, 2 and 3 replicas on
   one PostgreSQL: total tickets/s, CPU per request in each replica and database work
   per ticket; and the control, one replica alone at 32 and 21 connections (what each
   replica of 2 and 3 gets), which tells a cost of having replicas from a cost of
   smaller group commits. On 2 cores replicas cannot add throughput;
4. ``batch``: a 50,000-ticket flush and a 50,000-line ingest on each engine;
5. ``drill``: tests/hardening's replica drill (three ``costroute serve``, SIGKILLs
   during enqueue, upload, create, poll and ingest, restarts): lost 202s, duplicate
   submissions, double ingests, lost or doubled rows (all 0), failover times (SIGKILL
   to the dead replica's work adopted), and long-poll wake latency across replicas.

Prints every figure with its target (PASS/MISS) or its ratio to the same run's
baseline, and writes ``replicas.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
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
            "tickets": tickets,
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
    """The same closed-loop deferred load (64 connections) over 1, 2, 3 replicas, with
    the database's work per ticket for each count. Then the control: one replica alone
    at 32 and 21 connections, the load each replica of 2 and 3 gets. If CPU per request
    rises as much there, the rise comes from smaller group commits (fewer tickets share
    each transaction), not from having several replicas."""
    body = deferred.enqueue_body()
    headers = {**HEADERS, "x-latency-tolerance": "24h"}
    results: dict[str, Any] = {}
    runs = [(count, 64 // count) for count in (1, 2, 3)] + [(1, 32), (1, 21)]
    for count, each in runs:
        label = str(count) if count * each >= 63 else f"1 at c={each}"
        db = await new_schema(url)
        with ExitStack() as stack:
            servers = [
                stack.enter_context(proxy(f"replica{count}-{each}-{i}", upstream, db, out))
                for i in range(count)
            ]
            before = await db_counters(url)
            start = [cpu_seconds(s.pid) for s in servers]
            loads = await asyncio.gather(
                *(
                    run_load(
                        s.url + "/v1/chat/completions", body, headers=headers,
                        concurrency=each, duration=3.0 if quick else 6.0, warmup=1.0,
                        ok_status=202,
                    )
                    for s in servers
                )
            )  # fmt: skip
            cpu = [
                (cpu_seconds(s.pid) - before_s) / max(load.sent, 1) * 1e6
                for s, before_s, load in zip(servers, start, loads, strict=True)
            ]
            after = await db_counters(url)
        # Warm-up requests are in the database and in the counters alike.
        tickets = max(await asyncio.to_thread(deferred.count_tickets, db), 1)
        results[label] = {
            "tickets_per_s": round(sum(load.rps for load in loads)),
            "cpu_us_per_request": [round(c) for c in cpu],
            "p99_ms": round(max(load.p99 for load in loads), 2),
            "errors": sum(load.errors for load in loads),
            "per_ticket": {k: round((after[k] - before[k]) / tickets, 3) for k in after},
        }
        say(f"[scale-out {label} replicas] {results[label]}")
    return results


def drill(url: str, out: Path, jobs: int, seed: int) -> dict[str, Any]:
    """tests/hardening's replica drill, for its figures: three ``costroute serve`` on one
    PostgreSQL, ``jobs`` deferred tickets through 3 SIGKILLs during enqueue and 4 during
    upload, create, poll and ingest, with restarts; the guarantees' counters (all 0 when
    they hold; ``verify`` raises otherwise) and the failover times. Then a second drill
    without kills: every ticket long-polled on a replica, woken when it ends on any."""
    from tests.hardening.replicas import GRACE_S, LEASE_S, ReplicaDrill

    figures: dict[str, Any] = {"lease_s": LEASE_S, "reconcile_grace_s": GRACE_S, "seed": seed}
    tmp = out / "drill"
    tmp.mkdir(exist_ok=True)
    made = ReplicaDrill(tmp, asyncio.run(new_schema(url)), jobs=jobs, seed=seed)
    made.start()
    try:
        started = time.monotonic()
        made.enqueue_with_kills(3)
        made.finish_with_kills(4)
        figures["seconds"] = round(time.monotonic() - started, 1)
        figures["counters"] = made.verify()
        figures["kills"] = [
            {"phase": k.phase, "held": k.held, "taken_over_s": _round(k.taken_over_s)}
            for k in made.kills
        ]
        figures["failover_s"] = [round(t, 2) for t in made.failover_times()]
        figures["moved_requests"] = made.failovers_seen
    finally:
        made.close()
    say(f"[drill] {figures}")
    tmp = out / "wake"
    tmp.mkdir(exist_ok=True)
    made = ReplicaDrill(tmp, asyncio.run(new_schema(url)), jobs=min(jobs, 300), seed=seed)
    made.start()
    try:
        made.enqueue_with_kills(0)
        cross, local = made.long_poll_wakes()
    finally:
        made.close()
    figures["wake_cross_ms"] = _quantiles(cross)
    figures["wake_same_ms"] = _quantiles(local)
    say(f"[wake] other replica {figures['wake_cross_ms']}, same {figures['wake_same_ms']}")
    return figures


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _quantiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        "p50": round(median(ordered) * 1000, 1),
        "p99": round(p99 * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


PARTS = ("enqueue", "realtime", "scale", "batch", "drill")


def verdicts(figures: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, PASS/MISS, or empty for a figure reported as it is) for the parts
    that ran: the issue's targets, and ratios against the baselines of the same run."""
    rows: list[tuple[str, str, str]] = []

    def check(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    if "enqueue_c64" in figures:
        pg, lite = figures["enqueue_c64"]["postgres"], figures["enqueue_c64"]["sqlite"]
        per = pg["per_ticket"]
        rows += [
            ("enqueue c=64, PostgreSQL, tickets/s (target >= 2000)",
             str(pg["tickets_per_s"]), check(pg["tickets_per_s"] >= 2000 and not pg["errors"])),
            ("enqueue c=64, SQLite, tickets/s", str(lite["tickets_per_s"]), ""),
            ("enqueue c=64, PostgreSQL / SQLite",
             f"{pg['tickets_per_s'] / lite['tickets_per_s']:.2f}", ""),
            ("202s without a committed ticket (PostgreSQL)",
             str(max(0, pg["accepted"] - pg["committed"])),
             check(pg["committed"] >= pg["accepted"])),
            ("per ticket: statements / transactions",
             f"{per['statements']:.2f} / {per['xacts']:.3f}", ""),
            ("per ticket: WAL bytes / WAL syncs",
             f"{per['wal_bytes']:,.0f} / {per['wal_syncs']:.3f}", ""),
        ]  # fmt: skip
    if "flush_ingest" in figures:
        for engine in ("postgres", "sqlite"):
            found = figures["flush_ingest"][engine]
            rows += [
                (f"50,000-ticket flush, {engine}, s (target < 5)", str(found["flush_s"]),
                 check(found["flush_s"] < 5 and found["flushed"] == found["tickets"])),
                (f"50,000-line ingest, {engine}, s (target < 5)", str(found["ingest_s"]),
                 check(found["ingest_s"] < 5)),
            ]  # fmt: skip
    if "realtime_c64" in figures:
        realtime = figures["realtime_c64"]
        rt_pg, rt_lite = realtime["postgres"], realtime["sqlite"]
        rows += [
            ("real time c=64, PostgreSQL / SQLite requests/s",
             f"{rt_pg['requests_per_s'] / rt_lite['requests_per_s']:.2f}",
             ""),
            ("real time c=64, PostgreSQL / SQLite CPU per request",
             f"{rt_pg['cpu_us_per_request'] / rt_lite['cpu_us_per_request']:.2f}",
             ""),
        ]  # fmt: skip
    if "scale_out" in figures:
        scale = figures["scale_out"]
        one = median(scale["1"]["cpu_us_per_request"])
        for count, control in (("2", "1 at c=32"), ("3", "1 at c=21")):
            cpu = median(scale[count]["cpu_us_per_request"])
            rows.append((f"CPU per request, {count} replicas / 1", f"{cpu / one:.2f}", ""))
            if control in scale:
                alone = median(scale[control]["cpu_us_per_request"])
                rows.append(
                    (
                        f"  control: 1 replica at c={64 // int(count)} / c=64",
                        f"{alone / one:.2f}",
                        "",
                    )
                )
                rows.append((f"  {count} replicas / that control", f"{cpu / alone:.2f}", ""))
            statements = scale[count]["per_ticket"]["statements"]
            rows.append(
                (f"statements per ticket, {count} replicas / 1",
                 f"{statements / scale['1']['per_ticket']['statements']:.2f}", "")
            )  # fmt: skip
        errors = sum(entry["errors"] for entry in scale.values())
        rows.append(("scale-out errors (non-202 answers)", str(errors), check(errors == 0)))
    if "drill" in figures:
        found = figures["drill"]
        counters = found["counters"]
        bad = {k: v for k, v in counters.items() if k != "tickets" and v}
        rows += [
            (f"drill: {counters['tickets']} tickets, {len(found['kills'])} SIGKILLs: lost 202s, "
             "duplicate submissions, double ingests, lost/doubled rows",
             "all 0" if not bad else str(bad), check(not bad)),
        ]  # fmt: skip
        failover = found["failover_s"]
        if failover:
            rows.append(
                (f"failover, SIGKILL to work adopted, s (lease {found['lease_s']} s, "
                 f"grace {found['reconcile_grace_s']} s)",
                 f"p50 {median(failover):.2f}, max {max(failover):.2f} (n={len(failover)})", "")
            )  # fmt: skip
        cross = found["wake_cross_ms"]
        if cross.get("n"):
            rows.append(
                ("long-poll wake, ticket ended on another replica, ms (target p99 < 1000)",
                 f"p50 {cross['p50']}, p99 {cross['p99']} (n={cross['n']})",
                 check(cross["p99"] < 1000))
            )  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.replicas")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="one short repeat each")
    parser.add_argument("--tickets", type=int, default=50_000)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"a subset of {PARTS}")
    parser.add_argument("--drill-jobs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None, help="the drill's kill points")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if parts - set(PARTS):
        parser.error(f"unknown parts {sorted(parts - set(PARTS))}")
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 32)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="costroute-replicas-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        cluster = Path(tmp) / "pg"
        # fsync on: a 202 waits for a real WAL flush, as in production.
        url = pgcluster.start(cluster, preload=("pg_stat_statements",))
        try:
            asyncio.run(_sql(url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            with Server("upstream", "tests.benchmarks.upstream", [], log_dir=out) as upstream:
                if "enqueue" in parts:
                    figures["enqueue_c64"] = asyncio.run(
                        enqueue_both(upstream, out, url, args.quick)
                    )
                if "realtime" in parts:
                    figures["realtime_c64"] = asyncio.run(
                        realtime_both(upstream, out, url, args.quick)
                    )
                if "scale" in parts:
                    figures["scale_out"] = asyncio.run(scale_out(upstream, out, url, args.quick))
            if "batch" in parts:
                figures["flush_ingest"] = flush_ingest_both(out, url, args.tickets)
            if "drill" in parts:
                figures["drill"] = drill(url, out, args.drill_jobs, seed)
        finally:
            pgcluster.stop(cluster)
        (out / "replicas.json").write_text(json.dumps(figures, indent=2))
        say(json.dumps(figures, indent=2))
        say("")
        for name, value, verdict in verdicts(figures):
            say(f"{name:<72} {value:>28}  {verdict}")
    return 0


async def _sql(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
