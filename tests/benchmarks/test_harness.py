"""Checks of the benchmark harness itself (marked ``bench``, so outside the default run):
``pytest -m bench tests/benchmarks -q``. The one end-to-end check drives the fake
upstream and the floor as subprocesses with a few hundred requests."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest

from proxy.cli.bench import find_repo, suite_argv
from tests.benchmarks import profiling, report
from tests.benchmarks.loadgen import LoadResult, run_load
from tests.benchmarks.procs import REPO, Server
from tests.benchmarks.realtime import Case, Matrix, Sample, Target, request_body
from tests.benchmarks.upstream import stream_events

pytestmark = pytest.mark.bench


def _sample(rps: float, p50: float = 1.0, p99: float = 2.0, ttfb: float = 0.5) -> Sample:
    return Sample(rps=rps, p50=p50, p99=p99, ttfb=ttfb, cpu_us=100.0, errors=0)


def test_matrix_ratios_are_medians_of_per_repeat_ratios() -> None:
    case = Case(False, "instant", 64)
    matrix = Matrix("asyncio + h11", [case], ["floor", "costroute"])
    matrix.samples[(case, "floor")] = [_sample(1000), _sample(500), _sample(2000)]
    matrix.samples[(case, "costroute")] = [_sample(450), _sample(100), _sample(900)]
    # Per repeat: 0.45, 0.2, 0.45 -> median 0.45 (the median of medians would be 0.45 too,
    # but a drifting machine breaks that; pairing is what matters).
    assert matrix.ratio(case, "costroute", "floor") == pytest.approx(0.45)
    assert matrix.value(case, "costroute", "rps") == 450
    rows = report.realtime_rows(matrix)
    assert [r.verdict for r in rows] == ["PASS"]
    matrix.samples[(case, "costroute")] = [_sample(350), _sample(100), _sample(700)]
    assert [r.verdict for r in report.realtime_rows(matrix)] == ["MISS"]


def test_latency_target_reads_ttfb_for_streams() -> None:
    case = Case(True, "instant", 1)
    matrix = Matrix("x", [case], ["floor", "costroute"])
    matrix.samples[(case, "floor")] = [_sample(100, p50=9.0, ttfb=2.0)]
    matrix.samples[(case, "costroute")] = [_sample(90, p50=20.0, ttfb=2.8)]
    (row,) = report.realtime_rows(matrix)
    assert row.figure.startswith("TTFB added over floor")
    assert row.measured == "+0.80 ms"
    assert row.verdict == "PASS"


def test_percentiles() -> None:
    result = LoadResult(latencies=[float(i) for i in range(1, 101)])
    assert result.p50 == 50.5
    assert result.p99 == 99.0
    assert result.pct(100) == 100.0


def test_profile_summary_counts_inclusive_and_self(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "main (a.py:1);Starlette.__call__ (s.py:2);Authenticator.authenticate (auth.py:3) 3\n"
        "main (a.py:1);Starlette.__call__ (s.py:2);read_body (io.py:9) 1\n"
        "main (a.py:1);Thread._bootstrap (t.py:5);work (t.py:6) 4\n"
    )
    summary = profiling.summarise(raw)
    parts = dict(summary.components)
    assert summary.samples == 8
    assert parts["starlette app (middleware, routing, handler)"] == 50.0
    assert parts["  auth"] == 37.5
    assert parts["threads (aiosqlite, anyio workers)"] == 50.0
    assert summary.top_self[0] == ("work (t.py)", 50.0)


def test_fake_upstream_stream_ends_with_usage_and_done() -> None:
    events = stream_events(include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n"
    last = orjson.loads(events[-2][6:])
    assert last["choices"] == []
    assert last["usage"]["total_tokens"] == 28
    assert all(b'"usage":null' in e for e in events[:-2])
    assert not any(b"usage" in e for e in stream_events(include_usage=False))


def test_bench_cli_passes_options_through() -> None:
    args = argparse.Namespace(
        quick=True, parts="realtime", repeats=None, out=None, write_results="R.md",
        candidate=None, extra=["--", "--duration", "3"],
    )  # fmt: skip
    assert suite_argv(args) == ["--quick", "--parts", "realtime", "--write-results", "R.md",
                                "--duration", "3"]  # fmt: skip
    assert find_repo(REPO / "proxy") == REPO
    assert find_repo(Path("/")) is None


async def test_floor_and_upstream_answer_json_and_sse(tmp_path: Path) -> None:
    with (
        Server("upstream", "tests.benchmarks.upstream", [], log_dir=tmp_path) as upstream,
        Server(
            "floor", "tests.benchmarks.floor", ["--upstream", upstream.url], log_dir=tmp_path
        ) as floor,
    ):
        target = Target("floor", floor.url, floor.pid)
        for case in (Case(False, "instant", 4), Case(True, "50ms", 4)):
            result = await run_load(
                target.endpoint(case),
                request_body(case),
                headers={"content-type": "application/json"},
                concurrency=case.concurrency,
                requests=40,
                stream=case.stream,
            )
            assert result.completed == 40
            assert result.errors == 0
            if case.upstream == "50ms":
                assert result.p50 >= 50.0
                assert min(result.ttfbs) >= 50.0
