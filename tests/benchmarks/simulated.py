"""The policy regression benchmark: ``costroute simulate`` on the shipped reference
workloads under each scenario, and a simulated day of 100,000 requests, with PASS/MISS
against the targets of issue 17. Not a timed unit test: run it by hand, after a change
to the planner, the flusher, the poller or the guard (a few minutes on 2 cores).

    python -m tests.benchmarks.simulated                  # everything
    python -m tests.benchmarks.simulated --quick          # reference workloads only
    python -m tests.benchmarks.simulated --write-results tests/benchmarks/RESULTS.md

Each case is one ``python -m proxy simulate ... --json`` process, so its wall time is the
whole command's, start-up included. Targets:

- nominal scenario: at least 95 % of the best possible saving, every deadline met;
- slow scenario (batches up to 20 h, 5 % line failures): every deadline met (the
  saving is reported, no target; also as the mean over seeds 1-6, since one slow day
  turns on a few batches' random turnarounds);
- a day of at least 100,000 requests: the command finishes in under 2 minutes.

``--write-results`` replaces the section between ``<!-- simulate -->`` and
``<!-- /simulate -->`` in the file (appended at its end the first time): below the
main benchmark's ``<!-- analysis -->`` marker, so ``python -m tests.benchmarks
--write-results`` keeps it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.machine import describe

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("seed-guide", "mixed-day")
SCENARIOS = ("nominal", "slow")
# (workload, scale): 100,000 seed-guide requests, and 102,000 of the mixed day.
BIG_DAYS = (("seed-guide", 100), ("mixed-day", 34))
SLOW_SEEDS = (1, 2, 3, 4, 5, 6)
REALISED_TARGET = 95.0
WALL_TARGET = 120.0
BEGIN, END = "<!-- simulate -->", "<!-- /simulate -->"


@dataclass(frozen=True, slots=True)
class Case:
    workload: str
    scenario: str
    scale: int = 1
    seeds: tuple[int, ...] = ()  # several: one run each, the row shows their mean

    @property
    def label(self) -> str:
        scaled = f" x{self.scale}" if self.scale > 1 else ""
        seeds = f" (seeds {self.seeds[0]}-{self.seeds[-1]}, mean)" if self.seeds else ""
        return f"{self.workload}{scaled}, {self.scenario}{seeds}"

    def commands(self) -> list[list[str]]:
        argv = ["simulate", self.workload, "--scenario", self.scenario, "--json", "--quiet"]
        if self.scale > 1:
            argv += ["--scale", str(self.scale)]
        return [[*argv, "--seed", str(seed)] for seed in self.seeds] or [argv]


@dataclass(frozen=True, slots=True)
class Result:
    case: Case
    reports: list[dict[str, Any]]
    wall_s: float  # the whole process (the slowest one, for several seeds)

    @property
    def report(self) -> dict[str, Any]:
        return self.reports[0]

    @property
    def realised(self) -> float | None:
        values = [r["realised_pct"] for r in self.reports if r.get("realised_pct") is not None]
        return sum(values) / len(values) if values else None

    @property
    def deadlines(self) -> float | None:
        values = [r["deadlines"]["met_pct"] for r in self.reports]
        known = [float(v) for v in values if v is not None]
        return min(known) if known else None  # the worst run

    @property
    def escalations(self) -> float:
        return sum(r["escalations"]["count"] for r in self.reports) / len(self.reports)

    @property
    def requests_per_s(self) -> float:
        return self.report["requests"] / self.wall_s

    def verdict(self) -> tuple[str, str]:
        """(target, PASS/MISS)."""
        unfinished = sum(r["unfinished"] for r in self.reports)
        deadlines_ok = self.deadlines in (None, 100.0) and unfinished == 0
        if self.case.scale > 1:
            ok = self.wall_s < WALL_TARGET and deadlines_ok
            return f"< {WALL_TARGET:.0f} s, deadlines 100 %", "PASS" if ok else "MISS"
        if self.case.scenario == "nominal":
            ok = (self.realised or 0.0) >= REALISED_TARGET and deadlines_ok
            return f">= {REALISED_TARGET:.0f} % of best, deadlines 100 %", "PASS" if ok else "MISS"
        return "deadlines 100 % (saving reported)", "PASS" if deadlines_ok else "MISS"


def run_case(case: Case) -> Result:
    reports, walls = [], []
    for command in case.commands():
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "proxy", *command],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"{case.label}: exit {done.returncode}\n{done.stderr}")
        reports.append(json.loads(done.stdout))
    return Result(case, reports, max(walls))


def table(results: list[Result]) -> str:
    lines = [
        "| case | requests | realised % of best | deadlines met | escalations | wall s | req/s "
        "| target | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        target, verdict = r.verdict()
        realised = "n/a" if r.realised is None else f"{r.realised:.1f}"
        deadlines = "n/a" if r.deadlines is None else f"{r.deadlines:.2f} %"
        lines.append(
            f"| {r.case.label} | {r.report['requests']:,} | {realised} | {deadlines} "
            f"| {r.escalations:,.0f} | {r.wall_s:.1f} | {r.requests_per_s:,.0f} "
            f"| {target} | {verdict} |"
        )
    return "\n".join(lines)


def section(results: list[Result], argv: list[str]) -> str:
    machine = describe(load_generator_loop="asyncio")
    passed = sum(r.verdict()[1] == "PASS" for r in results)
    commands = "\n".join(
        f"python -m proxy {' '.join(r.case.commands()[0]).replace(' --json --quiet', '')}"
        + (f"   # and --seed 2..{r.case.seeds[-1]}" if r.case.seeds else "")
        for r in results
    )
    return "\n".join(
        [
            BEGIN,
            "",
            "## Simulated days (`costroute simulate`): the policy regression benchmark",
            "",
            f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by "
            f"`python -m tests.benchmarks.simulated {' '.join(argv)}`".rstrip()
            + f" on {machine['nproc']} CPUs ({machine['cpu']}), Python {machine['python']}, "
            f"SQLite {machine['sqlite']}, load average at start "
            f"{machine['load_average_at_start']}; {passed} PASS, "
            f"{len(results) - passed} MISS. Wall time is the whole command, start-up "
            "included; same seed, same figures (only the times move, and under the slow "
            "scenario a few cents of Gemini cache storage).",
            "",
            table(results),
            "",
            "Each row, by hand:",
            "",
            "```bash",
            commands,
            "```",
            "",
            END,
        ]
    )


def write_section(path: Path, text: str) -> None:
    current = path.read_text() if path.exists() else ""
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        path.write_text(head + text + tail)
    else:
        path.write_text(current.rstrip("\n") + "\n\n" + text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.simulated")
    parser.add_argument("--quick", action="store_true", help="skip the 100,000-request days")
    parser.add_argument("--write-results", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    cases = [Case(w, s) for w in WORKLOADS for s in SCENARIOS]
    # One slow day depends on a few batches' random turnarounds: the mean of six is the
    # figure to compare policies by.
    cases += [Case(w, "slow", seeds=SLOW_SEEDS) for w in WORKLOADS]
    if not args.quick:
        cases += [Case(w, "nominal", scale) for w, scale in BIG_DAYS]
    results = []
    for case in cases:
        print(f"  {case.label} ...", file=sys.stderr, flush=True)
        results.append(run_case(case))
    print(table(results))
    missed = [r.case.label for r in results if r.verdict()[1] != "PASS"]
    print(f"\n{len(results) - len(missed)} PASS, {len(missed)} MISS")
    if args.write_results:
        write_section(args.write_results, section(results, list(argv or sys.argv[1:])))
        print(f"wrote {args.write_results}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
