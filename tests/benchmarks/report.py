"""The printed tables: the real-time matrix (absolute figures with ratios and deltas
against the floor and direct), then one table with every target and PASS/MISS."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tests.benchmarks.deferred import EnqueueResult
from tests.benchmarks.memory import MemoryResult
from tests.benchmarks.realtime import Case, Matrix

# "No growth" between two equal rounds, allowing for allocator noise.
GROWTH_ALLOWANCE_MB = 2.0
MATRIX_HEAD = (
    "| case | target | req/s | p50 ms | p99 ms | TTFB p50 ms | server CPU µs/req "
    "| req/s vs floor | req/s vs direct | p50 Δ floor ms | p99 Δ direct ms | TTFB Δ floor ms |"
)


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    measured: str
    reference: str
    target: str
    verdict: str  # PASS | MISS | n/a


def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:{spec}}{unit}"


def verdict(value: float, ok: bool) -> str:
    return "n/a" if math.isnan(value) else ("PASS" if ok else "MISS")


def matrix_table(matrix: Matrix) -> str:
    lines = [f"Real-time matrix, proxies on {matrix.stack} (medians)", "", MATRIX_HEAD]
    lines.append("|" + "---|" * 12)
    for case in matrix.cases:
        for target in matrix.targets:
            lines.append(_matrix_line(matrix, case, target))
    return "\n".join(lines) + "\n"


def _matrix_line(matrix: Matrix, case: Case, target: str) -> str:
    def value(attr: str, spec: str = ".2f") -> str:
        return fmt(matrix.value(case, target, attr), spec)

    proxy = target != "direct"
    above_floor = proxy and target != "floor"
    sse = case.stream
    cells = [
        case.label,
        target,
        value("rps", ",.0f"),
        value("p50"),
        value("p99"),
        value("ttfb") if sse else "",
        value("cpu_us", ",.0f") if proxy else "",
        fmt(matrix.ratio(case, target, "floor") * 100, ".0f", "%") if above_floor else "",
        fmt(matrix.ratio(case, target, "direct") * 100, ".0f", "%") if proxy else "",
        fmt(matrix.delta(case, target, "floor", "p50"), "+.2f") if above_floor else "",
        fmt(matrix.delta(case, target, "direct", "p99"), "+.2f") if proxy else "",
        fmt(matrix.delta(case, target, "floor", "ttfb"), "+.2f") if above_floor and sse else "",
    ]
    return "| " + " | ".join(cells) + " |"


def realtime_rows(matrix: Matrix, tag: str = "", target: str = "costroute") -> list[Row]:
    rows: list[Row] = []
    for stream in (False, True):
        for upstream in ("instant", "50ms"):
            rows += _latency_row(matrix, Case(stream, upstream, 1), tag, target)
        rows += _floor_ratio_row(matrix, Case(stream, "instant", 64), tag, target)
        rows += _direct_rows(matrix, Case(stream, "50ms", 64), tag, target)
    return rows


def _have(matrix: Matrix, case: Case, target: str) -> bool:
    return (case, target) in matrix.samples


def _latency_row(matrix: Matrix, case: Case, tag: str, target: str) -> list[Row]:
    if not _have(matrix, case, target):
        return []
    attr, name, limit = ("ttfb", "TTFB", 1.0) if case.stream else ("p50", "p50", 0.5)
    added = matrix.delta(case, target, "floor", attr)
    floor, ours = matrix.value(case, "floor", attr), matrix.value(case, target, attr)
    return [
        Row(
            f"{tag}{name} added over floor, {case.label}",
            fmt(added, "+.2f", " ms"),
            f"floor {fmt(floor)} ms, {target} {fmt(ours)} ms",
            f"≤ {limit:g} ms",
            verdict(added, added <= limit),
        )
    ]


def _floor_ratio_row(matrix: Matrix, case: Case, tag: str, target: str) -> list[Row]:
    if not _have(matrix, case, target):
        return []
    ratio = matrix.ratio(case, target, "floor")
    floor, ours = matrix.value(case, "floor", "rps"), matrix.value(case, target, "rps")
    return [
        Row(
            f"{tag}throughput vs floor, {case.label}",
            fmt(ratio * 100, ".0f", " %"),
            f"floor {fmt(floor, ',.0f')} req/s, {target} {fmt(ours, ',.0f')} req/s",
            "≥ 40 %",
            verdict(ratio, ratio >= 0.40),
        )
    ]


def _direct_rows(matrix: Matrix, case: Case, tag: str, target: str) -> list[Row]:
    if not _have(matrix, case, target):
        return []
    ratio = matrix.ratio(case, target, "direct")
    added = matrix.delta(case, target, "direct", "p99")
    direct = matrix.value(case, "direct", "rps")
    floor = matrix.ratio(case, "floor", "direct")
    return [
        Row(
            f"{tag}throughput vs direct, {case.label}",
            fmt(ratio * 100, ".0f", " %"),
            f"direct {fmt(direct, ',.0f')} req/s; the floor reaches {fmt(floor * 100, '.0f')} %",
            "≥ 95 %",
            verdict(ratio, ratio >= 0.95),
        ),
        Row(
            f"{tag}p99 added over direct, {case.label}",
            fmt(added, "+.2f", " ms"),
            f"direct p99 {fmt(matrix.value(case, 'direct', 'p99'))} ms, "
            f"floor {fmt(matrix.delta(case, 'floor', 'direct', 'p99'), '+.2f')} ms",
            "≤ 15 ms",
            verdict(added, added <= 15.0),
        ),
    ]


def enqueue_rows(result: EnqueueResult, tag: str = "") -> list[Row]:
    durable = result.committed >= result.accepted
    return [
        Row(
            f"{tag}enqueue: deferred requests accepted/s, c=64, each committed before its 202",
            fmt(result.rate, ",.0f", "/s"),
            f"p50 {fmt(result.p50_ms)} ms, p99 {fmt(result.p99_ms)} ms; "
            f"{result.committed:,} rows for {result.accepted:,} measured 202s; "
            f"{result.errors} non-202 answers; {fmt(result.cpu_us, ',.0f')} µs server CPU/req",
            "≥ 2,000/s, no errors",
            verdict(result.rate, result.rate >= 2000 and durable and result.errors == 0),
        )
    ]


def batch_rows(result: dict[str, Any]) -> list[Row]:
    flush, ingest = result["flush"], result["ingest"]
    size = result["seed"]["avg_body_bytes"]
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(ingest["tickets"].items()))
    return [
        Row(
            f"flush: {flush['tickets']:,} queued ~{size:.0f} B tickets → one batch upload",
            fmt(flush["seconds"], ".2f", " s"),
            f"upload {flush['upload_seconds']:.2f} s ({flush['uploaded_mb']:.0f} MB JSONL, "
            f"emulator parsing included), create {flush['create_seconds']:.2f} s",
            "< 5 s",
            verdict(
                flush["seconds"], flush["seconds"] < 5.0 and flush["tickets"] == flush["queued"]
            ),
        ),
        Row(
            "flush: peak RSS growth (sampled every 5 ms)",
            fmt(flush["rss_growth_mb"], ".1f", " MB"),
            f"from {flush['rss_baseline_mb']:.0f} MB",
            "< 150 MB",
            verdict(flush["rss_growth_mb"], flush["rss_growth_mb"] < 150.0),
        ),
        Row(
            f"ingest: {ingest['lines']:,}-line result ({ingest['failed_lines']:,} error lines) "
            "→ tickets",
            fmt(ingest["seconds"], ".2f", " s"),
            f"tickets after: {statuses}; RSS +{ingest['rss_growth_mb']:.0f} MB",
            "< 5 s",
            verdict(ingest["seconds"], ingest["seconds"] < 5.0),
        ),
    ]


def user_batch_rows(result: dict[str, Any]) -> list[Row]:
    """costroute's own Batch API: upload + validate + queue, and the output file."""
    return [
        Row(
            f"batch API: {result['lines']:,}-line file ({result['input_mb']} MB) uploaded, "
            "validated, queued",
            fmt(result["create_s"], ".2f", " s"),
            f"upload {result['upload_s']:.2f} s; peak RSS +{result['create_growth_mb']:.0f} MB "
            "(the in-process test client holds the request body too)",
            "< 10 s, < 150 MB",
            verdict(
                result["create_s"],
                result["create_s"] < 10.0 and result["create_growth_mb"] < 150.0,
            ),
        ),
        Row(
            f"batch API: {result['output_lines']:,}-line output written and served streamed",
            fmt(result["finalize_s"] + result["download_s"], ".2f", " s"),
            f"write {result['finalize_s']:.2f} s, download {result['download_s']:.2f} s, "
            f"peak RSS +{result['output_growth_mb']:.0f} MB",
            "(reported)",
            "n/a",
        ),
    ]


def memory_rows(result: MemoryResult) -> list[Row]:
    total = 2 * result.requests_per_round
    return [
        Row(
            "memory: RSS of idle costroute",
            fmt(result.idle_mb, ".1f", " MB"),
            f"floor passthrough idle {result.floor_idle_mb:.1f} MB",
            "(reported)",
            "n/a",
        ),
        Row(
            f"memory: RSS after {total:,} real-time requests (⅘ JSON, ⅕ SSE, c=64)",
            fmt(result.after_round2_mb, ".1f", " MB"),
            f"after round 1: {result.after_round1_mb:.1f} MB, round 3: "
            f"{result.after_round3_mb:.1f} MB; {result.errors} errors",
            "(reported)",
            "n/a",
        ),
        Row(
            "memory: growth between two equal rounds (2nd → 3rd)",
            fmt(result.growth_mb, "+.1f", " MB"),
            f"{result.requests_per_round:,} requests per round; "
            f"warm-up, 1st → 2nd: {result.warmup_growth_mb:+.1f} MB",
            f"≤ {GROWTH_ALLOWANCE_MB:g} MB (none)",
            verdict(
                result.growth_mb, result.growth_mb <= GROWTH_ALLOWANCE_MB and not result.errors
            ),
        ),
    ]


def targets_table(rows: list[Row]) -> str:
    lines = ["| figure | measured | reference | target | verdict |", "|---|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.figure} | {r.measured} | {r.reference} | {r.target} | {r.verdict} |")
    return "\n".join(lines) + "\n"
