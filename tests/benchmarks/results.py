"""Writing a run's figures as markdown (tests/benchmarks/RESULTS.md). Anything below the
``<!-- analysis -->`` marker of an existing file is kept, so hand-written analysis
survives a re-run."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from tests.benchmarks.report import Row, targets_table

MARKER = "<!-- analysis -->"


def write_results(
    path: Path,
    machine: dict[str, Any],
    args: argparse.Namespace,
    rows: list[Row],
    tables: list[str],
    profiles: list[str],
) -> None:
    kept = ""
    if path.exists():
        text = path.read_text()
        if MARKER in text:
            kept = text[text.index(MARKER) :]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    passed = sum(r.verdict == "PASS" for r in rows)
    missed = sum(r.verdict == "MISS" for r in rows)
    parts = [
        "# costroute benchmark results",
        "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by "
        f"`python -m tests.benchmarks {_argv(args)}` (same as `costroute bench`).",
        "",
        "## Machine",
        "",
        f"- {machine['nproc']} CPUs: {machine['cpu']} (`nproc`, `/proc/cpuinfo`), shared by "
        "the load generator, the fake upstream and the server under test (and by other work on "
        f"the machine: load average {machine['load_average_at_start']} at the start)",
        f"- Python {machine['python']}, SQLite {machine['sqlite']}, {machine['platform']}",
        f"- {packages}",
        f"- load generator and fake upstream event loop: {machine['load_generator_loop']}; "
        f"proxies under test: {args.server_loop} + {args.server_http} unless a table says "
        "otherwise",
        "",
        "## How it is measured",
        "",
        "- Every server is its own process on 127.0.0.1. The real-time upstream is a minimal "
        "aiohttp app (`tests/benchmarks/upstream.py`: a fixed `chat.completion`, or a 10-event SSE "
        "stream, optionally after 50 ms) rather than the emulator, so the upstream is never the "
        "bottleneck. Flush and ingest run against the OpenAI emulator's Files + Batch API.",
        "- **direct**: the load generator calls the upstream. **floor**: the thinnest Starlette "
        "passthrough (`tests/benchmarks/floor.py`) with a raw aiohttp client, under the same "
        "uvicorn settings as costroute. **floor-hx**: the same passthrough with httpx's API over "
        "httpx-aiohttp (costroute's client stack). **costroute**: the real app with a client key "
        "(auth), planning, validation and the SQLite routing log on.",
        f"- The load generator is raw aiohttp with a keep-alive pool; each run measures "
        f"{args.duration:g} s after {args.warmup:g} s of warm-up; the targets of a case run back "
        f"to back and the whole matrix is repeated {args.repeats}×. Figures are medians; ratios "
        'and deltas are medians of the per-repeat ratios and deltas. "server CPU µs/req" is the '
        "server process's CPU time (all threads) per request: the least noise-sensitive figure.",
        "",
        f"## Targets ({passed} PASS, {missed} MISS)",
        "",
        targets_table(rows),
        "## Details",
        "",
        *tables,
        *(["## Profiles (py-spy, costroute under load)", "", *profiles] if profiles else []),
    ]
    path.write_text("\n".join(parts) + "\n" + (kept or MARKER + "\n"))


def _argv(args: argparse.Namespace) -> str:
    bits = []
    if args.quick:
        bits.append("--quick")
    elif args.repeats != 3:
        bits.append(f"--repeats {args.repeats}")
    if args.candidate:
        bits.append(f"--candidate {args.candidate}")
    return " ".join([*bits, f"--write-results {args.write_results}"])
