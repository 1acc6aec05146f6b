"""``costroute flush``: the offline flush submits what a server would, on the same
database, and a running scheduler picks the batches up from there."""

from __future__ import annotations

from pathlib import Path

import httpx

from proxy.cli.flush import flush_offline
from proxy.cli.main import main
from tests.deferral.harness import RUN, stack


async def test_offline_flush_submits_every_queue(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        chat = [(await s.enqueue(f"c{i}"))[1]["id"] for i in range(3)]
        embed = (await s.enqueue("e", model="text-embedding-3-small"))[1]["id"]
        s.services.settings.providers["openai"].__dict__["max_active_batches"] = 2
        summary = await flush_offline(
            s.settings,
            {"openai": "sk-test"},
            clock=s.clock,
            transports={"openai": httpx.ASGITransport(s.openai)},
            environ={"WEBHOOK_SECRET": "x"},
        )
        assert summary.tickets == 4
        assert len(summary.batches) == 2
        assert summary.failed == ()
        assert set(await s.statuses([*chat, embed])) == {"submitted"}
        s.clock.advance(RUN)
        await s.scheduler.poll_once()  # the server's scheduler finishes the job
        assert set(await s.statuses([*chat, embed])) == {"completed"}


def test_flush_command_reports_config_errors(tmp_path: Path, capsys: object) -> None:
    assert main(["flush", "--config", str(tmp_path / "missing.toml")]) == 2
