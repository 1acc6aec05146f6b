"""The benchmark suite: ``python -m tests.benchmarks`` from the repository root (or
``costroute bench``). Everything runs on loopback and stops by itself; the output ends
with one table of every target, PASS or MISS.

    python -m tests.benchmarks                  # everything, about 15 minutes on 2 cores
    python -m tests.benchmarks --quick          # one short repeat of everything
    python -m tests.benchmarks --parts realtime,memory --repeats 5
    python -m tests.benchmarks --candidate ../costroute-fix   # a proposed fix, side by side
    python -m tests.benchmarks --write-results tests/benchmarks/RESULTS.md
    python -m tests.benchmarks.simulated        # simulated days: the policy regression benchmark
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks import deferred, memory, profile_run, profiling, realtime, report
from tests.benchmarks.loop import loop_name, new_event_loop
from tests.benchmarks.machine import describe
from tests.benchmarks.procs import Server
from tests.benchmarks.results import write_results

PARTS = ("realtime", "variant", "memory", "enqueue", "batch", "profile")
# The asyncio + h11 comparison (uvicorn's pure-Python stack, for platforms without
# uvloop): the cases the targets are read from.
VARIANT_CASES = (
    realtime.Case(False, "instant", 1),
    realtime.Case(False, "instant", 64),
    realtime.Case(False, "50ms", 64),
    realtime.Case(True, "instant", 1),
    realtime.Case(True, "instant", 64),
)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m tests.benchmarks")
    parser.description = "costroute benchmarks: real-time overhead, enqueue, flush, ingest, memory"
    add = parser.add_argument
    add("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    add("--quick", action="store_true", help="one short repeat and small rounds (a smoke run)")
    add("--repeats", type=int, default=3)
    add("--duration", type=float, default=2.0, help="seconds measured per run")
    add("--warmup", type=float, default=0.5, help="seconds discarded before each run")
    add("--concurrency", default="1,16,64")
    add("--memory-requests", type=int, default=50_000, help="requests per memory round")
    add("--memory-rounds", type=int, default=3, help="memory rounds (the figures use 3)")
    add("--batch-tickets", type=int, default=50_000)
    # `costroute serve` runs on uvloop + httptools (both are dependencies).
    add("--server-loop", default="uvloop", help="uvicorn --loop for the proxies under test")
    add("--server-http", default="httptools", help="uvicorn --http for the proxies under test")
    add("--no-extra-floors", action="store_true", help="skip the httpx-aiohttp floor")
    add("--candidate", type=Path, help="another checkout of costroute to measure side by side")
    add("--out", type=Path, help="directory for logs, profiles and results.json")
    add("--write-results", type=Path, metavar="PATH", help="also write the figures as markdown")
    return parser


@dataclass
class Run:
    args: argparse.Namespace
    out: Path
    rows: list[report.Row] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def server(self) -> dict[str, str]:
        return {"loop": self.args.server_loop, "http": self.args.server_http}

    @property
    def timing(self) -> dict[str, Any]:
        a = self.args
        return {"repeats": a.repeats, "duration": a.duration, "warmup": a.warmup, "progress": say}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.repeats, args.duration, args.warmup = 1, 1.0, 0.3
        args.memory_requests, args.batch_tickets = 5_000, 5_000
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        say(f"unknown parts: {sorted(unknown)}; choose from {', '.join(PARTS)}")
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="costroute-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    with asyncio.Runner(loop_factory=lambda: new_event_loop("auto")) as runner:
        return runner.run(run(Run(args, out), set(parts)))


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run(state: Run, parts: set[str]) -> int:
    args = state.args
    machine = describe(load_generator_loop=loop_name("auto"))
    state.raw.update(machine=machine, args={k: str(v) for k, v in vars(args).items()})
    say(f"costroute benchmarks -> {state.out}\n{machine['summary']}")
    started = time.time()
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(
            Server("upstream", "tests.benchmarks.upstream", [], log_dir=state.out)
        )
        if "realtime" in parts:
            await _realtime(state, upstream)
        if "variant" in parts:
            await _variant(state, upstream)
        if "memory" in parts:
            result = await memory.measure(
                upstream, state.out, requests_per_round=args.memory_requests,
                rounds=args.memory_rounds, progress=say,
                **state.server,
            )  # fmt: skip
            state.rows += report.memory_rows(result)
            state.raw["memory"] = asdict(result)
        if "enqueue" in parts:
            enqueued = await deferred.enqueue(upstream, state.out, **state.timing, **state.server)
            state.rows += report.enqueue_rows(enqueued)
            state.raw["enqueue"] = asdict(enqueued)
            if args.candidate:
                enqueued = await deferred.enqueue(
                    upstream, state.out, **state.timing, **state.server, tag="-candidate",
                    tree=args.candidate,
                )  # fmt: skip
                state.rows += report.enqueue_rows(enqueued, tag="[candidate] ")
                state.raw["enqueue-candidate"] = asdict(enqueued)
        if "profile" in parts:
            if profiling.have_py_spy():
                state.profiles = await profile_run.profiles(
                    upstream, state.out, progress=say, **state.server
                )
            else:
                say("profile skipped: pip install py-spy")
    if "batch" in parts:
        batch = await asyncio.to_thread(
            deferred.batch_flush_ingest, state.out, tickets=args.batch_tickets, progress=say
        )
        state.rows += report.batch_rows(batch)
        state.raw["batch"] = batch
        user_batch = await asyncio.to_thread(
            deferred.user_batch_api, lines=args.batch_tickets, progress=say
        )
        state.rows += report.user_batch_rows(user_batch)
        state.raw["user_batch"] = user_batch
    _finish(state, machine, time.time() - started)
    return 0


async def _realtime(state: Run, upstream: Server) -> None:
    args = state.args
    concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    with contextlib.ExitStack() as servers:
        targets = realtime.start_targets(
            servers, upstream, state.out, extra_floors=not args.no_extra_floors,
            candidate=args.candidate, **state.server,
        )  # fmt: skip
        await realtime.check_targets(targets)
        stack_name = f"{args.server_loop} + {args.server_http}"
        matrix = await realtime.run_matrix(
            stack_name, targets, realtime.all_cases(concurrencies), **state.timing
        )
    state.tables.append(report.matrix_table(matrix))
    state.rows += report.realtime_rows(matrix)
    if args.candidate:
        state.rows += report.realtime_rows(matrix, tag="[candidate] ", target="candidate")
    state.raw["realtime"] = _matrix_json(matrix)


async def _variant(state: Run, upstream: Server) -> None:
    """The same proxies on uvicorn's pure-Python stack (asyncio + h11)."""
    slow = {"loop": "asyncio", "http": "h11"}
    tag = "[asyncio+h11] "
    with contextlib.ExitStack() as servers:
        targets = realtime.start_targets(
            servers, upstream, state.out, extra_floors=False, tag="-asyncio",
            candidate=state.args.candidate, **slow,
        )  # fmt: skip
        await realtime.check_targets(targets)
        matrix = await realtime.run_matrix(
            "asyncio + h11", targets, list(VARIANT_CASES), **state.timing
        )
    state.tables.append(report.matrix_table(matrix))
    state.rows += report.realtime_rows(matrix, tag=tag)
    if state.args.candidate:
        state.rows += report.realtime_rows(matrix, tag=f"[candidate] {tag}", target="candidate")
    state.raw["variant"] = {"realtime": _matrix_json(matrix)}


def _finish(state: Run, machine: dict[str, Any], seconds: float) -> None:
    state.raw["seconds"] = seconds
    state.raw["rows"] = [asdict(r) for r in state.rows]
    (state.out / "results.json").write_text(json.dumps(state.raw, indent=1, default=str))
    if state.profiles:
        (state.out / "profiles.md").write_text("\n".join(state.profiles))
    print()
    for table in state.tables:
        print(table)
    print("Targets (medians over repeats; ratios and deltas per repeat, then the median)\n")
    print(report.targets_table(state.rows))
    passed = sum(r.verdict == "PASS" for r in state.rows)
    missed = sum(r.verdict == "MISS" for r in state.rows)
    print(f"{passed} PASS, {missed} MISS in {seconds:.0f} s; logs, profiles, raw data: {state.out}")
    if state.args.write_results:
        write_results(
            state.args.write_results, machine, state.args, state.rows, state.tables, state.profiles
        )
        say(f"wrote {state.args.write_results}")


def _matrix_json(matrix: realtime.Matrix) -> list[dict[str, Any]]:
    return [
        {"case": case.label, "target": target, "samples": [asdict(s) for s in samples]}
        for (case, target), samples in matrix.samples.items()
    ]


if __name__ == "__main__":
    sys.exit(main())
