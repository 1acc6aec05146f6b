"""Real-time overhead: the same load against the upstream directly, the floor passthrough
(and optionally the floor over costroute's client stack) and costroute, side by side.

For every case (JSON or SSE, instant or 50 ms upstream, concurrency 1/16/64) the targets
run back to back, and the whole matrix is repeated; figures are medians over repeats, and
ratios/deltas are medians of the per-repeat ratios/deltas, so slow drift of a shared
machine cancels out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from tests.benchmarks.costroute_server import CLIENT_KEY, MODELS
from tests.benchmarks.loadgen import run_load
from tests.benchmarks.procs import REPO, Server, fresh_db
from tests.benchmarks.stats import cpu_seconds, median

PATH = "/v1/chat/completions"
HEADERS = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class Case:
    stream: bool
    upstream: str  # "instant" | "50ms"
    concurrency: int

    @property
    def label(self) -> str:
        return f"{'SSE' if self.stream else 'JSON'} {self.upstream} c={self.concurrency}"


@dataclass(frozen=True, slots=True)
class Target:
    name: str  # direct | floor | floor-hx | costroute
    url: str
    pid: int

    def endpoint(self, case: Case) -> str:
        if self.name in ("costroute", "candidate"):
            return self.url + PATH
        return self.url + ("/slow" if case.upstream == "50ms" else "") + PATH


@dataclass(frozen=True, slots=True)
class Sample:
    rps: float
    p50: float
    p99: float
    ttfb: float
    cpu_us: float  # server CPU per request, all threads
    errors: int


@dataclass(slots=True)
class Matrix:
    stack: str
    cases: list[Case]
    targets: list[str]
    samples: dict[tuple[Case, str], list[Sample]] = field(default_factory=dict)

    def value(self, case: Case, target: str, attr: str) -> float:
        return median(getattr(s, attr) for s in self.samples.get((case, target), []))

    def compare(
        self, case: Case, target: str, ref: str, attr: str, op: Callable[[float, float], float]
    ) -> float:
        """Median over repeats of op(target's figure, the reference's figure)."""
        pairs = zip(
            self.samples.get((case, target), []), self.samples.get((case, ref), []), strict=False
        )
        return median(op(getattr(a, attr), getattr(b, attr)) for a, b in pairs)

    def ratio(self, case: Case, target: str, ref: str, attr: str = "rps") -> float:
        return self.compare(case, target, ref, attr, lambda a, b: a / b if b else float("nan"))

    def delta(self, case: Case, target: str, ref: str, attr: str) -> float:
        return self.compare(case, target, ref, attr, lambda a, b: a - b)


def request_body(case: Case) -> bytes:
    body: dict[str, object] = {
        "model": MODELS["slow" if case.upstream == "50ms" else "instant"],
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello to the benchmark in one short sentence."},
        ],
        "max_tokens": 32,
    }
    if case.stream:
        body["stream"] = True
    return orjson.dumps(body)


def all_cases(concurrencies: tuple[int, ...] = (1, 16, 64)) -> list[Case]:
    return [
        Case(stream, upstream, c)
        for stream in (False, True)
        for upstream in ("instant", "50ms")
        for c in concurrencies
    ]


def start_targets(
    stack: contextlib.ExitStack,
    upstream: Server,
    log_dir: Path,
    *,
    loop: str,
    http: str,
    extra_floors: bool,
    tag: str = "",
    candidate: Path | None = None,
) -> list[Target]:
    """direct, floor(s) and costroute; ``candidate``: another checkout of the project
    (a proposed fix) measured as one more target."""
    server_args = ["--loop", loop, "--http", http]
    targets = [Target("direct", upstream.url, upstream.pid)]
    floors = {"floor": "aiohttp", "floor-hx": "httpx-aiohttp"}
    for name, client in floors.items():
        if name != "floor" and not extra_floors:
            continue
        args = ["--upstream", upstream.url, "--client", client, *server_args]
        floor = stack.enter_context(
            Server(f"{name}{tag}", "tests.benchmarks.floor", args, log_dir=log_dir)
        )
        targets.append(Target(name, floor.url, floor.pid))
    trees = {"costroute": REPO, **({"candidate": candidate} if candidate else {})}
    for name, tree in trees.items():
        db = str(fresh_db(log_dir / f"{name}{tag}.db"))
        proxy = stack.enter_context(
            Server(
                f"{name}{tag}",
                "tests.benchmarks.costroute_server",
                ["--upstream", upstream.url, "--db", db, *server_args],
                log_dir=log_dir,
                tree=tree,
            )
        )
        targets.append(Target(name, proxy.url, proxy.pid))
    return targets


async def check_targets(targets: list[Target]) -> None:
    """Each target must really answer: a JSON completion, and an SSE stream to [DONE]."""
    async with aiohttp.ClientSession() as session:
        for target in targets:
            for case in (Case(False, "instant", 1), Case(True, "instant", 1)):
                async with session.post(
                    target.endpoint(case), data=request_body(case), headers=HEADERS
                ) as response:
                    content = await response.read()
                ok = response.status == 200 and (
                    content.endswith(b"data: [DONE]\n\n")
                    if case.stream
                    else orjson.loads(content).get("object") == "chat.completion"
                )
                if not ok:
                    raise RuntimeError(
                        f"{target.name} answered {response.status} {content[:300]!r} "
                        f"for {case.label}"
                    )


async def run_matrix(
    stack_name: str,
    targets: list[Target],
    cases: list[Case],
    *,
    repeats: int,
    duration: float,
    warmup: float,
    progress: Callable[[str], None],
) -> Matrix:
    matrix = Matrix(stack_name, cases, [t.name for t in targets])
    for repeat in range(repeats):
        for case in cases:
            for target in targets:
                cpu_before = cpu_seconds(target.pid)
                result = await run_load(
                    target.endpoint(case),
                    request_body(case),
                    headers=HEADERS,
                    concurrency=case.concurrency,
                    duration=duration,
                    warmup=warmup,
                    stream=case.stream,
                )
                cpu = cpu_seconds(target.pid) - cpu_before
                sample = Sample(
                    rps=result.rps,
                    p50=result.p50,
                    p99=result.p99,
                    ttfb=result.ttfb_p50,
                    cpu_us=cpu / result.sent * 1e6 if result.sent else float("nan"),
                    errors=result.errors,
                )
                matrix.samples.setdefault((case, target.name), []).append(sample)
                progress(
                    f"[{stack_name} {repeat + 1}/{repeats}] {case.label:<20} {target.name:<10} "
                    f"{sample.rps:8.0f} req/s  p50 {sample.p50:7.2f} ms  p99 {sample.p99:7.2f} ms"
                    + (f"  ttfb {sample.ttfb:6.2f} ms" if case.stream else "")
                    + (f"  errors {sample.errors}" if sample.errors else "")
                )
    return matrix
