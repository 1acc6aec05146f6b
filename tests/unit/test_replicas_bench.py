"""The replicas benchmark's verdicts (``python -m tests.benchmarks.replicas``), on made-up
figures: each target reads the figure it names, and a miss shows as MISS. The benchmark
itself needs minutes and both cores; it is not run here."""

from __future__ import annotations

import copy
from typing import Any

from tests.benchmarks.replicas import verdicts


def figures() -> dict[str, Any]:
    per = {"statements": 0.4, "xacts": 0.08, "wal_bytes": 3300.0, "wal_syncs": 0.04}

    def scale(cpu: list[int]) -> dict[str, Any]:
        return {"cpu_us_per_request": cpu, "errors": 0, "per_ticket": dict(per)}

    return {
        "enqueue_c64": {
            "postgres": {
                "tickets_per_s": 2500,
                "accepted": 10,
                "committed": 12,
                "errors": 0,
                "per_ticket": per,
            },
            "sqlite": {"tickets_per_s": 4000, "accepted": 10, "committed": 12, "errors": 0},
        },
        "flush_ingest": {
            engine: {"flush_s": 2.0, "ingest_s": 4.5, "flushed": 50_000, "tickets": 50_000}
            for engine in ("postgres", "sqlite")
        },
        "realtime_c64": {
            "postgres": {"requests_per_s": 2000, "cpu_us_per_request": 250},
            "sqlite": {"requests_per_s": 2000, "cpu_us_per_request": 250},
        },
        "scale_out": {
            "1": scale([200]),
            "2": scale([220, 220]),
            "3": scale([250, 240, 250]),
            "1 at c=32": scale([220]),
            "1 at c=21": scale([250]),
        },
        "drill": {
            "counters": {"tickets": 1000, "lost_202s": 0, "in_two_live_batches": 0},
            "kills": [{"phase": "enqueue"}] * 7,
            "failover_s": [4.9, 5.0],
            "lease_s": 2,
            "reconcile_grace_s": 3,
            "wake_cross_ms": {"n": 600, "p50": 60.0, "p99": 120.0},
        },
    }


def verdict_of(rows: list[tuple[str, str, str]], starts: str) -> tuple[str, str]:
    [(value, verdict)] = [(v, mark) for name, v, mark in rows if name.startswith(starts)]
    return value, verdict


def test_every_target_passes_on_good_figures() -> None:
    rows = verdicts(figures())
    assert {mark for _, _, mark in rows} <= {"PASS", ""}
    assert verdict_of(rows, "enqueue c=64, PostgreSQL, tickets/s") == ("2500", "PASS")
    assert verdict_of(rows, "enqueue c=64, PostgreSQL / SQLite") == ("0.62", "")
    assert verdict_of(rows, "CPU per request, 3 replicas / 1") == ("1.25", "")
    # The control: one replica at the load each of three gets accounts for the rise.
    assert verdict_of(rows, "  3 replicas / that control") == ("1.00", "")
    assert verdict_of(rows, "drill:")[1] == "PASS"


def test_each_missed_target_shows_as_a_miss() -> None:
    cases = [
        ("enqueue c=64, PostgreSQL, tickets/s", ("enqueue_c64", "postgres", "tickets_per_s"), 1900),
        ("202s without a committed ticket", ("enqueue_c64", "postgres", "committed"), 9),
        ("50,000-line ingest, postgres", ("flush_ingest", "postgres", "ingest_s"), 5.2),
        ("50,000-ticket flush, sqlite", ("flush_ingest", "sqlite", "flushed"), 49_000),
        ("drill:", ("drill", "counters", "lost_202s"), 1),
        ("long-poll wake", ("drill", "wake_cross_ms", "p99"), 1500.0),
    ]
    for name, (part, key, field), value in cases:
        bad = copy.deepcopy(figures())
        bad[part][key][field] = value
        assert verdict_of(verdicts(bad), name)[1] == "MISS", name


def test_only_the_parts_that_ran_are_judged() -> None:
    only = {"drill": figures()["drill"]}
    names = [name for name, _, _ in verdicts(only)]
    assert names
    assert all(not n.startswith(("enqueue", "50,000", "CPU")) for n in names)
