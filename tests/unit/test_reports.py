"""Reports equal the sums of the routing-log rows (and pending tickets) they cover."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import random
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from proxy.costs import reports
from proxy.costs.reports import (
    GROUPINGS,
    Report,
    build_report,
    render_csv,
    render_json,
    render_table,
)
from proxy.settings import ConfigError
from proxy.store.db import Database
from proxy.store.routes import COLUMNS, insert_routes

DAY_MS = 86_400_000
NOW_MS = int(datetime(2026, 11, 25, 12, tzinfo=UTC).timestamp() * 1000)
SINCE_MS = NOW_MS - 7 * DAY_MS
TICKET_FINAL = {"completed", "failed", "cancelled"}


def make_routes(rng: random.Random, count: int, now_ms: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        # Some rows fall before the window and some after "now": they must not count.
        ts = now_ms - rng.randrange(-DAY_MS, 9 * DAY_MS)
        status = rng.choice([200, 200, 200, 200, 202, 400, 429, 499, 502])
        ticket = f"t{i}" if status == 202 or rng.random() < 0.3 else None
        answered = status < 400 and status != 202
        priced = answered and rng.random() < 0.85
        cost = round(rng.uniform(0, 0.05), 6) if priced else None
        saved = round(rng.uniform(-0.01, 0.05), 6) if priced else None
        rows.append(
            {
                "ts_ms": ts,
                "request_id": f"r{i}",
                "key_name": rng.choice(["alice", "bob", None]),
                "endpoint": "/v1/chat/completions",
                "model": rng.choice(["gpt-4o", "gpt-4o-mini", "flash", None]),
                "provider": rng.choice(["oa", "ds", "gm"]),
                "lane": rng.choice(["realtime", "batch", "flex", "offpeak", "realtime+cache"]),
                "reason": "test",
                "status": status,
                "prompt_tokens": rng.randrange(1, 5000) if answered else None,
                "completion_tokens": rng.randrange(1, 2000) if answered else None,
                "cached_tokens": rng.randrange(0, 500) if answered else None,
                "cost_usd": cost,
                "baseline_usd": None if cost is None or saved is None else cost + saved,
                "saved_usd": saved,
                "ticket_id": ticket,
                "stream": 0,
                "attempts": 1,
            }
        )
    return rows


def make_tickets(rng: random.Random, count: int, now_ms: int) -> list[dict[str, Any]]:
    statuses = ["queued", "submitted", "realtime", "completed", "failed", "cancelled"]
    return [
        {
            "id": f"tk{i}",
            "key_name": rng.choice(["alice", "bob"]),
            "endpoint": "/v1/chat/completions",
            "model": rng.choice(["gpt-4o", "flash"]),
            "provider": rng.choice(["oa", "gm"]),
            "upstream_model": "gpt-4o",
            "lane": rng.choice(["batch", "offpeak"]),
            "reason": "test",
            "status": rng.choice(statuses),
            "body_bytes": 2,
            "created_ms": now_ms - rng.randrange(-DAY_MS, 9 * DAY_MS),
            "deadline_ms": now_ms + DAY_MS,
            "updated_ms": now_ms,
        }
        for i in range(count)
    ]


async def insert(db: Database, routes: list[dict[str, Any]], tickets: list[dict[str, Any]]) -> None:
    async with db.transaction() as conn:
        await insert_routes(conn, [tuple(row.get(c) for c in COLUMNS) for row in routes])
        for ticket in tickets:
            names = ", ".join(ticket)
            marks = ", ".join("?" for _ in ticket)
            await conn.execute(
                f"INSERT INTO tickets ({names}) VALUES ({marks})", tuple(ticket.values())
            )


def group_of(row: dict[str, Any], ts: int, by: str) -> str:
    if by == "day":
        return datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d")
    value = row["key_name" if by == "key" else by]
    return "(none)" if value is None else value


def expected(
    routes: list[dict[str, Any]], tickets: list[dict[str, Any]], by: str
) -> dict[str, dict[str, Any]]:
    """The report's rules, written out a second time over plain dicts."""
    groups: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for row in routes:
        if not SINCE_MS <= row["ts_ms"] <= NOW_MS:
            continue
        if row["ticket_id"] is not None and row["status"] == 202:
            continue  # the acceptance of a deferred request, counted by its final row
        g = groups[group_of(row, row["ts_ms"], by)]
        g["requests"] += 1
        g["failed"] += row["status"] >= 400 and row["status"] != 499
        g["unpriced"] += row["status"] < 400 and row["cost_usd"] is None
        for field in ("prompt_tokens", "completion_tokens", "cached_tokens"):
            g[field] += row[field] or 0
        g["cost"] += row["cost_usd"] or 0.0
        g["baseline"] += row["baseline_usd"] or 0.0
        g["savings"] += row["saved_usd"] or 0.0
    for ticket in tickets:
        if ticket["status"] in TICKET_FINAL or not SINCE_MS <= ticket["created_ms"] <= NOW_MS:
            continue
        g = groups[group_of(ticket, ticket["created_ms"], by)]
        g["requests"] += 1
        g["pending"] += 1
    return groups


# ``db``: one fresh store per engine (tests/conftest.py).


@pytest.fixture
async def data(db: Database) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(7)
    routes, tickets = make_routes(rng, 400, NOW_MS), make_tickets(rng, 80, NOW_MS)
    await insert(db, routes, tickets)
    return routes, tickets


FIELDS = (
    "requests",
    "failed",
    "pending",
    "unpriced",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
)


@pytest.mark.parametrize("by", GROUPINGS)
async def test_report_equals_the_sum_of_the_rows(
    db: Database, data: tuple[list[dict[str, Any]], list[dict[str, Any]]], by: str
) -> None:
    report = await build_report(db, since_ms=SINCE_MS, by=by, now_ms=NOW_MS)
    want = expected(*data, by)
    assert [row.group for row in report.rows] == sorted(want, key=lambda g: (g != "(none)", g))
    for row in report.rows:
        w = want[row.group]
        assert {f: getattr(row, f) for f in FIELDS} == {f: w[f] for f in FIELDS}, row.group
        assert row.cost == pytest.approx(w["cost"])
        assert row.baseline == pytest.approx(w["baseline"])
        assert row.savings == pytest.approx(w["savings"])
    total = report.total
    assert total.group == "(total)"
    for f in FIELDS:
        assert getattr(total, f) == sum(w[f] for w in want.values())
    assert total.cost == pytest.approx(sum(w["cost"] for w in want.values()))
    assert total.savings == pytest.approx(sum(w["savings"] for w in want.values()))
    assert total.requests > 100
    # The data exercises every rule.
    assert total.failed > 0
    assert total.pending > 0
    assert total.unpriced > 0
    assert total.failure_rate == pytest.approx(total.failed / (total.requests - total.pending))


async def test_the_window_is_inclusive(db: Database) -> None:
    rng = random.Random(1)
    rows = make_routes(rng, 3, NOW_MS)
    for row, ts in zip(rows, (SINCE_MS - 1, SINCE_MS, NOW_MS), strict=True):
        row.update(ts_ms=ts, status=200, ticket_id=None, lane="realtime")
    await insert(db, rows, [])
    report = await build_report(db, since_ms=SINCE_MS, by="lane", now_ms=NOW_MS)
    assert report.total.requests == 2


async def test_empty_report(db: Database) -> None:
    report = await build_report(db, since_ms=SINCE_MS, by="model", now_ms=NOW_MS)
    assert report.rows == ()
    assert report.total.requests == 0
    assert report.total.failure_rate == 0.0
    assert render_csv(report).splitlines()[1].startswith("(total),0,0,0.0,")


async def test_unknown_grouping(db: Database) -> None:
    with pytest.raises(ValueError, match="cannot group by"):
        await build_report(db, since_ms=0, by="colour", now_ms=NOW_MS)


async def test_json_and_csv_renderings(
    db: Database, data: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    report = await build_report(db, since_ms=SINCE_MS, by="provider", now_ms=NOW_MS)
    parsed = json.loads(render_json(report))
    assert parsed["by"] == "provider"
    assert parsed["since"] == "2026-11-18T12:00:00Z"
    assert (parsed["since_ms"], parsed["until_ms"]) == (SINCE_MS, NOW_MS)
    assert [row["group"] for row in parsed["rows"]] == [row.group for row in report.rows]
    for mine, theirs in zip(report.rows, parsed["rows"], strict=True):
        assert theirs["requests"] == mine.requests
        assert theirs["cost"] == pytest.approx(mine.cost)
        assert theirs["failure_rate"] == pytest.approx(mine.failure_rate, abs=1e-6)
        assert theirs["cost_unknown"] == (mine.unpriced > 0)
    assert parsed["total"]["requests"] == report.total.requests

    lines = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [line["group"] for line in lines] == [*(r.group for r in report.rows), "(total)"]
    for line, row in zip(lines, (*report.rows, report.total), strict=True):
        assert int(line["requests"]) == row.requests
        assert int(line["prompt_tokens"]) == row.prompt_tokens
        assert float(line["savings"]) == pytest.approx(row.savings)
        assert float(line["failure_rate"]) == pytest.approx(row.failure_rate, abs=1e-6)


async def test_table_flags_unknown_costs(
    db: Database, data: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    report = await build_report(db, since_ms=SINCE_MS, by="lane", now_ms=NOW_MS)
    text = render_table(report)
    lines = text.splitlines()
    assert lines[0] == "costroute report, 2026-11-18 12:00 UTC to 2026-11-25 12:00 UTC, by lane"
    assert lines[2].split()[:3] == ["lane", "requests", "failed"]
    total_line = next(line for line in lines if line.startswith("(total)"))
    assert f"{report.total.requests:,}" in total_line.split()
    assert "*" in total_line
    assert f"* {report.total.unpriced:,} successful requests have no known price" in text
    assert f"{report.total.pending:,} deferred requests are still pending." in text


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "costroute.db"
    config = tmp_path / "costroute.toml"
    config.write_text(f'[store]\npath = "{path}"\n')
    now_ms = int(time.time() * 1000)
    rows = make_routes(random.Random(3), 50, now_ms)
    for row in rows:
        row["ts_ms"] = now_ms - 3_600_000  # an hour ago: inside 1d, outside 30m

    async def setup() -> None:
        db = await Database.open(path)
        await insert(db, rows, [])
        await db.close()

    asyncio.run(setup())
    counted = sum(1 for r in rows if r["ticket_id"] is None or r["status"] != 202)

    def report(*argv: str) -> str:
        parser = argparse.ArgumentParser()
        reports.add_parser(parser.add_subparsers())
        args = parser.parse_args(["report", "--config", str(config), *argv])
        assert args.func(args) == 0
        return capsys.readouterr().out

    assert (
        json.loads(report("--since", "1d", "--by", "key", "--json"))["total"]["requests"] == counted
    )
    assert json.loads(report("--since", "30m", "--json"))["total"]["requests"] == 0
    assert json.loads(report("--since", "0", "--json"))["total"]["requests"] == counted
    assert report("--csv").startswith("group,requests,failed,failure_rate,")
    assert "by lane" in report().splitlines()[0]


def test_report_command_errors(tmp_path: Path) -> None:
    config = tmp_path / "costroute.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "missing.db"}"\n')
    parser = argparse.ArgumentParser()
    reports.add_parser(parser.add_subparsers())
    args = parser.parse_args(["report", "--config", str(config)])
    with pytest.raises(ConfigError, match="no database"):
        args.func(args)
    assert not (tmp_path / "missing.db").exists()
    args = parser.parse_args(["report", "--config", str(config), "--since", "1w"])
    with pytest.raises(ConfigError, match="--since"):
        args.func(args)


def test_report_is_a_value() -> None:
    row = reports.ReportRow("x", 4, 1, 2, 0, 1, 2, 3, 1.0, 2.0, 1.0)
    assert row.failure_rate == 0.5
    assert Report("lane", 0, 1, (row,), row).as_dict()["rows"][0]["failure_rate"] == 0.5
