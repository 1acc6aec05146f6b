"""costroute simulate: the theoretical best on hand-worked cases, and a tiny day run
through the real app and scheduler, deterministically."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proxy.api import dispatch
from proxy.cli.main import main
from proxy.costs.best import Call, Nominal, best_costs
from proxy.costs.pricing import Pricer
from proxy.deferral import scheduler as scheduler_module
from proxy.deferral.queue import Deferral
from proxy.deferral.scheduler import Scheduler
from proxy.settings import parse_settings

_LINE = '{"at": "%s", "model": "gpt-4o", "prompt_tokens": 800, "completion_tokens": 400%s}\n'
DAY = (
    _LINE % ("00:00:00", ', "tolerance": "24h"')
    + _LINE % ("00:10:00", ', "tolerance": "24h"')
    + _LINE % ("00:20:00", "")
)


def _pricer() -> Pricer:
    settings = parse_settings(
        {"providers": {"openai": {"type": "openai", "base_url": "http://o.test/v1"}},
         "models": {"gpt-4o": {"provider": "openai"}}}
    )  # fmt: skip
    return Pricer.from_settings(settings)


def _call(tolerance: float | None, *, batch_ok: bool = True) -> Call:
    return Call(provider="openai", provider_type="openai", model="gpt-4o",
                received_at=1_767_225_600.0, tolerance=tolerance, prompt_tokens=800,
                completion_tokens=400, batch_ok=batch_ok)  # fmt: skip


def test_the_best_on_hand_worked_cases() -> None:
    # gpt-4o: $2.50 in, $10.00 out per 1M: 800 in + 400 out = $0.002 + $0.004 = $0.006.
    best = best_costs(
        [_call(None), _call(24 * 3600), _call(60), _call(24 * 3600, batch_ok=False)],
        _pricer(),
        Nominal(turnaround={"openai": 3600.0}),
    )
    assert [(b.lane, round(b.cost, 6)) for b in best if b is not None] == [
        ("realtime", 0.006),  # wanted now
        ("batch", 0.003),  # a day's tolerance: the batch lane at half price
        ("realtime", 0.006),  # a minute is shorter than the nominal batch turnaround
        ("realtime", 0.006),  # the model may not use the batch lane
    ]


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    workload = tmp_path / "day.jsonl"
    workload.write_text(DAY)
    assert main(["simulate", str(workload), "--json", "--quiet"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    report.pop("wall_seconds")
    return report


def test_a_day_goes_through_the_real_scheduler_and_repeats_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails if the simulator bypasses what ``serve`` runs: the planner on the request
    path, the deferral queue, the scheduler's flush, poll and guard steps, ingest, and
    the real-time lane are each counted as they are called."""
    calls: dict[str, int] = {}

    def counted(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)
        if asyncio.iscoroutinefunction(real):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                calls[label] = calls.get(label, 0) + 1
                return await real(*args, **kwargs)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                calls[label] = calls.get(label, 0) + 1
                return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    counted(dispatch, "plan", "plan")
    counted(dispatch, "call_with_retries", "realtime")
    counted(Deferral, "enqueue", "enqueue")
    counted(Scheduler, "flush_once", "flush")
    counted(Scheduler, "poll_once", "poll")
    counted(Scheduler, "guard_once", "guard")
    counted(scheduler_module, "ingest", "ingest")
    first = _run(tmp_path, capsys)
    assert calls["plan"] == 3  # every request planned on the request path
    assert calls["enqueue"] == 2  # the two that can wait went to the queue
    assert calls["realtime"] == 1  # the other through the real-time lane
    assert calls["ingest"] == 1  # one batch, ingested by the poller
    assert min(calls["flush"], calls["poll"], calls["guard"]) > 0
    assert first["baseline_usd"] == pytest.approx(0.018)
    assert first["best_usd"] == pytest.approx(0.012)
    assert first["cost_usd"] == pytest.approx(0.012)
    assert first["realised_pct"] == 100.0
    assert first["deadlines"] == {"with_deadline": 2, "met": 2, "met_pct": 100.0}
    assert first["batches_created"] == {"openai": 1}
    assert _run(tmp_path, capsys) == first  # same seed, same report


def test_costroute_report_shows_the_same_savings_from_the_routing_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: a simulated day leaves a real routing log; ``costroute report`` on it
    prices the same requests and finds the same best as the simulator (its nominal
    turnaround is the log's own median, close to the scenario's)."""
    workload = tmp_path / "day.jsonl"
    workload.write_text(DAY)
    kept = tmp_path / "run"
    assert main(["simulate", str(workload), "--json", "--quiet", "--keep", str(kept)]) == 0
    simulated: dict[str, Any] = json.loads(capsys.readouterr().out)
    config = tmp_path / "costroute.toml"
    shipped = Path(__file__).parents[2] / "proxy/data/simulate/config.toml"
    config.write_text(shipped.read_text() + f'\n[store]\npath = "{kept / "simulate.db"}"\n')
    assert main(["report", "--config", str(config), "--since", "0", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["best"]
    for name in ("requests", "cost_usd", "baseline_usd", "best_usd", "realised_pct"):
        assert best[name] == simulated[name], name
    assert 1200 <= best["nominal_turnaround_s"]["openai"] <= 1500  # 20 min + polling
    assert main(["report", "--config", str(config), "--since", "0"]) == 0
    assert "Savings realised: 100.0 % of the best possible saving" in capsys.readouterr().out


def test_a_recorded_day_replays_under_another_tolerance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--from-log``: the routing log of a (simulated) day replays as the same day, and
    ``--tolerance KEY=DURATION`` answers "what if" on it."""
    workload = tmp_path / "day.jsonl"
    workload.write_text(DAY)
    kept = tmp_path / "run"
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    argv = ["simulate", str(workload), "--json", "--quiet", "--keep", str(kept)]
    assert main([*argv, "--start", two_days_ago.isoformat()]) == 0
    recorded = json.loads(capsys.readouterr().out)
    replay = ["simulate", "--from-log", str(kept / "simulate.db"), "--since", "7d", "--json"]
    assert main([*replay, "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out)
    for name in ("requests", "cost_usd", "baseline_usd", "best_usd", "deadlines"):
        assert again[name] == recorded[name], name
    assert main([*replay, "--quiet", "--tolerance", "default=0"]) == 0
    now = json.loads(capsys.readouterr().out)
    assert now["cost_usd"] == pytest.approx(0.018)  # all three in real time
    assert now["deadlines"]["with_deadline"] == 0
