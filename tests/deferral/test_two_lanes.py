"""One scheduler, two providers' batch lanes on one fake clock: OpenAI (Files + Batches)
and Gemini (Batch Mode) behind the same ``BatchLane`` interface, flushed, polled and
ingested by the same code. A slow batch on one never holds the other."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from openai.types.chat import ChatCompletion

from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.server import create_app as gemini_emulator
from adapters.gemini.batch import GeminiBatchLane
from tests.deferral.harness import RUN, stack

GEMINI = {"gemini": {"type": "gemini", "base_url": "http://gemini.test/v1beta",
                     "api_key_env": "GEMINI_KEY"}}  # fmt: skip
MODELS = {"gemini-2.5-flash": {"provider": "gemini"}}


async def test_openai_and_gemini_lanes_through_one_scheduler(tmp_path: Path) -> None:
    async with stack(tmp_path, providers=GEMINI, models=MODELS) as s:
        # Gemini's batch takes 60 s; OpenAI's (the harness timings) RUN seconds.
        app = gemini_emulator(GeminiEmulatorConfig(batch_complete_after=3 * RUN), clock=s.clock)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gemini.test/v1beta"
        )
        s.services.batch["gemini"] = GeminiBatchLane(client, api_key="g", clock=s.clock)
        openai_ids = [(await s.enqueue(f"o{n}"))[1]["id"] for n in range(3)]
        gemini_ids = [(await s.enqueue(f"g{n}", model="gemini-2.5-flash"))[1]["id"]
                      for n in range(2)]  # fmt: skip

        summary = await s.scheduler.flush_once(force=True)
        assert summary.tickets == 5
        assert len(summary.batches) == 2
        providers = await s.db.fetchall("SELECT provider, line_count FROM batches ORDER BY 1")
        assert [tuple(r) for r in providers] == [("gemini", 2), ("openai", 3)]

        s.clock.advance(RUN)
        await s.scheduler.poll_once()
        assert set(await s.statuses(openai_ids)) == {"completed"}
        assert set(await s.statuses(gemini_ids)) == {"submitted"}  # still running

        # The next OpenAI tickets are not held by Gemini's slow batch (nor by their own
        # provider's finished one).
        more = (await s.enqueue("o-late"))[1]["id"]
        assert (await s.scheduler.flush_once(force=True)).tickets == 1
        s.clock.advance(3 * RUN)
        await s.scheduler.poll_once()
        assert (await s.ticket(more)).status == "completed"
        for ticket_id in gemini_ids:
            ticket = await s.ticket(ticket_id)
            assert ticket.status == "completed"
            assert ticket.result is not None
            ChatCompletion.model_validate(orjson.loads(ticket.result))
        rows = [r for r in await s.routes() if r["ticket_id"] in gemini_ids and r["status"] == 200]
        assert [r["lane"] for r in rows] == ["batch", "batch"]
        await s.services.batch["gemini"].aclose()
