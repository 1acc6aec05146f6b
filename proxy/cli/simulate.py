"""``costroute simulate``: what would this traffic cost, what would it save, and would
every deadline hold? See ``proxy.simulate`` for how the run works.

    costroute simulate                                  # the seed guide's day, nominal
    costroute simulate mixed-day --scenario slow        # a shipped workload, slow providers
    costroute simulate my-day.jsonl --config costroute.toml --chart day.svg
    costroute simulate --from-log costroute.db --since 7d --tolerance reports=4h
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from proxy.costs.pricing import Pricer
from proxy.durations import DurationError, parse_duration
from proxy.settings import ConfigError, Settings, load_settings
from proxy.simulate import chart, replay, scenario, workload
from proxy.simulate.engine import DEFAULT_START, simulate
from proxy.simulate.reference import WORKLOADS, shipped_file, shipped_path
from proxy.simulate.report import build, render

DEFAULT_WORKLOAD = "seed-guide"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run a workload through the real scheduler on a virtual clock and report "
        "cost, savings against the best possible, and deadlines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "workload",
        nargs="?",
        help=f"a workload JSONL file, or a shipped one: {', '.join(WORKLOADS)} "
        f"(default {DEFAULT_WORKLOAD})",
    )
    p.add_argument(
        "--config",
        help="the costroute config whose policy to simulate (default: the shipped "
        "simulation config, every provider with default settings)",
    )
    p.add_argument(
        "--scenario",
        default="nominal",
        help=f"provider behaviour: {', '.join(scenario.SHIPPED)} or a TOML file (default nominal)",
    )
    p.add_argument("--seed", type=int, help="seed (default: the scenario's)")
    p.add_argument(
        "--scale", type=int, default=1, help="send every request N times (same day, N x volume)"
    )
    p.add_argument(
        "--from-log",
        metavar="DATABASE",
        help="replay costroute's own routing log (a store.path database) instead of a file",
    )
    p.add_argument("--since", default="1d", help="with --from-log: how far back (default 1d)")
    p.add_argument(
        "--until", default="0", help="with --from-log: up to this long ago (default: now)"
    )
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="KEY=DURATION",
        help="what if KEY's requests could wait DURATION (0: real time); repeatable",
    )
    p.add_argument(
        "--start",
        help="with a file workload: when the simulated day starts (ISO date/time, UTC; "
        "default 2026-11-30, a Monday)",
    )
    p.add_argument(
        "--quantum",
        type=float,
        default=1.0,
        help="arrivals are sent on this grid of seconds (default 1)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--chart", metavar="PATH", help="write the cost-over-time chart (SVG)")
    p.add_argument(
        "--keep", metavar="DIR", help="keep the run's database and files in DIR (a new folder)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The run's own INFO lines (a flush, an ingest) would be thousands; its warnings
    # (queue age, slow batches) are what the report sums up. Errors still show.
    for name in ("proxy", "adapters"):
        logging.getLogger(name).setLevel(logging.ERROR)
    started = time.perf_counter()
    settings = _settings(args.config)
    world = scenario.load(args.scenario)
    start = _start(args.start)
    if args.from_log:
        requests, start, name = _from_log(args)
    else:
        requests, name = _workload(args.workload or DEFAULT_WORKLOAD)
    for item in args.tolerance:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--tolerance {item!r}: use KEY=DURATION, e.g. reports=4h")
        # 0 is sent as "X-Latency-Tolerance: 0s" (wanted now): the key's default_tolerance,
        # which applies to requests without the header, does not.
        requests = workload.with_tolerance(requests, key, _duration(value, "--tolerance"))
    seed = world.seed if args.seed is None else args.seed
    requests = workload.scale(requests, args.scale, seed=seed)
    unknown = sorted({r.model for r in requests} - set(settings.models))
    if unknown:
        raise ConfigError(
            f"the workload names models the config does not have: {', '.join(unknown)}"
        )
    if not requests:
        print("costroute simulate: the workload is empty", file=sys.stderr)
        return 1
    progress = None if args.quiet or args.json else _progress
    report = asyncio.run(_run(args, settings, world, requests, seed, start, name, progress))
    # The figure printed is the whole command's: loading, the run and the report.
    report = dataclasses.replace(report, wall_seconds=time.perf_counter() - started)
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        print(render(report))
    if args.chart:
        Path(args.chart).write_text(chart.svg(report))
        if not args.json:
            print(f"  chart: {args.chart}")
    return 0


async def _run(
    args: argparse.Namespace,
    settings: Settings,
    world: scenario.Scenario,
    requests: list[workload.Request],
    seed: int,
    start: float,
    name: str,
    progress: Any,
) -> Any:
    with tempfile.TemporaryDirectory(prefix="costroute-simulate-") as scratch:
        workdir = Path(args.keep) if args.keep else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        result = await simulate(
            settings,
            world,
            requests,
            workdir=workdir,
            seed=seed,
            start=start,
            quantum=args.quantum,
            progress=progress,
        )
        pricer = Pricer.from_settings(result.settings)
        return build(result, pricer, workload=name)


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def _settings(path: str | None) -> Settings:
    if path is not None:
        return load_settings(path)
    return load_settings(str(shipped_file("config.toml")))


def _workload(name: str) -> tuple[list[workload.Request], str]:
    if name in WORKLOADS:
        return workload.load(shipped_path(name)), name
    try:
        return workload.load(name), Path(name).name
    except workload.WorkloadError as exc:
        raise ConfigError(str(exc)) from None


def _from_log(args: argparse.Namespace) -> tuple[list[workload.Request], float, str]:
    now_ms = int(time.time() * 1000)
    since_ms = now_ms - _duration(args.since, "--since") * 1000
    until_ms = now_ms - _duration(args.until, "--until") * 1000
    if not Path(args.from_log).is_file():
        raise ConfigError(f"--from-log: no costroute database at {args.from_log}")
    found = asyncio.run(replay.from_log(args.from_log, since_ms=since_ms, until_ms=until_ms))
    if found.skipped:
        print(
            f"  replay: {found.skipped} rows without usage or for other endpoints skipped",
            file=sys.stderr,
        )
    return found.requests, found.start, f"{Path(args.from_log).name} (last {args.since})"


def _duration(value: str, option: str) -> int:
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def _start(value: str | None) -> float:
    if value is None:
        return DEFAULT_START
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--start: {value!r} is not an ISO date or date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
