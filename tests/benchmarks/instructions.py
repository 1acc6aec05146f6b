"""Instructions per request, counted by valgrind's callgrind: a figure that does not move
with the load on a shared machine (wall-clock and CPU time here vary by 20-50 % from run
to run), for comparing two versions of the request path.

The app under test is driven in process through ASGI (no uvicorn, no load generator),
64 requests at a time, against the benchmark upstream in its own process; counting is
zeroed after a warm-up and dumped after the measured requests, so start-up is excluded.
The aiosqlite thread's instructions are included (callgrind counts every thread).

    python -m tests.benchmarks.instructions costroute floor     # needs valgrind
    # costroute: 1,234,567 instructions/request (1,920 requests)
    python -m tests.benchmarks.instructions --runs 5 costroute  # the median of 5 runs

The floor repeats within 0.2 %, costroute's count within about ±4 % from run to run
(seen 924 k-1,006 k on one tree): how many requests share one event-loop turn, one
socket read and one routing-log batch (the aiosqlite thread is counted too) depends on
timing. Compare medians of several runs (``--runs``), not single runs.

Targets: ``costroute`` (as ``costroute serve`` runs it, collector tuning included) and
``floor`` (the raw aiohttp passthrough). About 3 minutes a target for 1,920 requests
(Debian: ``apt-get install valgrind``). The command re-runs itself under callgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.benchmarks import realtime
from tests.benchmarks.costroute_server import ENV, bench_settings
from tests.benchmarks.loop import new_event_loop
from tests.benchmarks.procs import Server

CONCURRENCY = 64
WARMUP = 640


async def _drive(app: Any, body: bytes, requests: int) -> None:
    headers = [(k.encode(), v.encode()) for k, v in realtime.HEADERS.items()]
    headers += [(b"content-length", str(len(body)).encode()), (b"host", b"127.0.0.1")]
    scope_base = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": realtime.PATH, "raw_path": realtime.PATH.encode(),
        "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }  # fmt: skip

    async def one() -> None:
        delivered = False
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect while the request runs
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app({**scope_base, "state": {}}, receive, send)
        if status != [200]:
            raise RuntimeError(f"request answered {status}")

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    await asyncio.gather(*(worker(requests // CONCURRENCY) for _ in range(CONCURRENCY)))


def _callgrind(*command: str) -> None:
    """Zero (``-z``) or dump (``-d``) this process's counters (we run under callgrind)."""
    tool = shutil.which("callgrind_control") or "callgrind_control"
    subprocess.run([tool, *command, str(os.getpid())], capture_output=True, check=False)


async def measure(target: str, requests: int) -> None:
    out = Path(tempfile.mkdtemp(prefix="costroute-instructions-"))
    with Server("upstream", "tests.benchmarks.upstream", [], log_dir=out) as upstream:
        if target == "floor":
            from tests.benchmarks.floor import build_app

            app: Any = build_app(upstream.url, "aiohttp")
        else:
            from proxy.app import create_app

            settings = bench_settings(upstream.url, str(out / "costroute.db"))
            app = create_app(settings, environ=ENV, tune_gc=True)
        body = realtime.request_body(realtime.Case(False, "instant", CONCURRENCY))
        async with app.router.lifespan_context(app):
            await _drive(app, body, WARMUP)
            _callgrind("-z")
            await _drive(app, body, requests)
            _callgrind("-d", MARK)


MARK = "measured"


def count(target: str, requests: int) -> int:
    """Instructions per request of ``target``, from a callgrind run of this module."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [
                *("valgrind", "--tool=callgrind", "--cache-sim=no"),
                f"--callgrind-out-file={folder}/cg.%p",
                *(sys.executable, "-m", "tests.benchmarks.instructions", target),
                *("--requests", str(requests), "--inner"),
            ],
            capture_output=True,
            check=True,
        )
        for dump in Path(folder).iterdir():
            text = dump.read_text(errors="replace")
            if MARK in text.split("\nevents:", 1)[0]:
                totals = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
                if totals:
                    return int(totals.group(1)) // requests
    raise RuntimeError("callgrind wrote no measured dump")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.instructions")
    parser.add_argument("targets", nargs="+", choices=["costroute", "floor"])
    parser.add_argument("--requests", type=int, default=1920)
    parser.add_argument("--runs", type=int, default=1, help="runs per target; prints the median")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    requests = args.requests - args.requests % CONCURRENCY
    if args.inner:
        with asyncio.Runner(loop_factory=lambda: new_event_loop("auto")) as runner:
            runner.run(measure(args.targets[0], requests))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    for target in args.targets:
        counts = sorted(count(target, requests) for _ in range(max(1, args.runs)))
        median = counts[len(counts) // 2]
        if len(counts) % 2 == 0:
            median = (counts[len(counts) // 2 - 1] + median) // 2
        runs = f", median of {len(counts)}: {', '.join(f'{c:,}' for c in counts)}"
        print(
            f"{target}: {median:,} instructions/request ({requests:,} requests"
            f"{runs if len(counts) > 1 else ''})"
        )


if __name__ == "__main__":
    main()
