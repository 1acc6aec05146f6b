"""Profiling costroute under load with py-spy: the real-time JSON and SSE paths at
concurrency 64, JSON at concurrency 1, and enqueue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.benchmarks import deferred, profiling, realtime
from tests.benchmarks.loadgen import run_load
from tests.benchmarks.procs import Server, fresh_db

DEFERRED = {"x-latency-tolerance": "24h"}
WORK: tuple[tuple[str, realtime.Case, dict[str, str], int], ...] = (
    ("real-time JSON, instant upstream, c=64", realtime.Case(False, "instant", 64), {}, 200),
    ("real-time SSE, instant upstream, c=64", realtime.Case(True, "instant", 64), {}, 200),
    ("real-time JSON, instant upstream, c=1", realtime.Case(False, "instant", 1), {}, 200),
    ("enqueue, c=64", realtime.Case(False, "instant", 64), DEFERRED, 202),
)


async def profiles(
    upstream: Server,
    out: Path,
    *,
    loop: str,
    http: str,
    seconds: float = 6.0,
    progress: Callable[[str], None],
) -> list[str]:
    """Markdown summaries; the raw stacks stay in ``out`` as profile-N.txt."""
    rendered: list[str] = []
    args = ["--upstream", upstream.url, "--db", str(fresh_db(out / "costroute-profile.db"))]
    args += ["--loop", loop, "--http", http]
    with Server(
        "costroute-profile", "tests.benchmarks.costroute_server", args, log_dir=out
    ) as proxy:
        for number, (title, case, extra, status) in enumerate(WORK):
            raw = out / f"profile-{number}.txt"
            spy = profiling.record(proxy.pid, seconds, raw)
            body = deferred.enqueue_body() if status == 202 else realtime.request_body(case)
            result = await run_load(
                proxy.url + realtime.PATH,
                body,
                headers={**realtime.HEADERS, **extra},
                concurrency=case.concurrency,
                duration=seconds + 0.5,
                stream=case.stream,
                ok_status=status,
            )
            await asyncio.to_thread(spy.wait)
            heading = f"{title}: {result.rps:,.0f} req/s while sampled; raw stacks {raw.name}"
            rendered.append(profiling.render(heading, profiling.summarise(raw)))
            progress(f"[profile] {heading}")
    return rendered
