"""Deferred Claude requests through Anthropic Message Batches: the real scheduler, the
real lane and the Anthropic emulator on one ManualClock, in process. Per-result outcomes
(succeeded, errored retryable / permanent, canceled, expired), the 24-hour expiry, and
reconciliation of a create whose answer was lost (Anthropic batches have no metadata:
the local batch id rides in the items' custom ids, readable once the batch has ended).
The flow runs on both engines; the reconciliation tests run on SQLite, whose leases
follow the ManualClock (PostgreSQL's follow the server's clock, exercised by the
replica drill), and what they test is the lane's, the same on either engine."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
from openai.types.chat import ChatCompletion

from adapters.anthropic.batch import AnthropicBatchLane, split_id
from adapters.anthropic.chat import AnthropicAdapter
from adapters.emulators.anthropic.batches import BatchSettings
from adapters.emulators.anthropic.server import AnthropicEmulatorConfig, create_app
from adapters.http import HttpxUpstream
from proxy.deferral.scheduler import RECONCILE_GRACE_MS
from tests.deferral.harness import Stack, stack

BASE = "http://anthropic.test/v1"
PROVIDERS = {"anthropic": {"type": "anthropic", "base_url": BASE, "api_key_env": "ANT_KEY"}}
MODEL = "claude-sonnet-4-5"
MODELS = {MODEL: {"provider": "anthropic"}, "claude-gone": {"provider": "anthropic"}}
DONE = 600.0  # the emulator's processing time, seconds of ManualClock


class LoseCreate(httpx.AsyncBaseTransport):
    """The provider creates the batch, and the answer never arrives."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.armed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.armed and request.method == "POST" and request.url.path.endswith("/batches"):
            self.armed = False
            raise httpx.ReadTimeout("lost", request=request)
        return response


@contextlib.asynccontextmanager
async def claude(
    tmp_path: Path, target: str | None = None, *, active: int = 1, **batches: object
) -> AsyncIterator[tuple[Stack, LoseCreate]]:
    providers = {"anthropic": {**PROVIDERS["anthropic"], "max_active_batches": active}}
    async with stack(tmp_path, providers=providers, models=MODELS, target=target) as s:
        settings = BatchSettings(**{"complete_after": DONE, **batches})  # type: ignore[arg-type]
        app = create_app(AnthropicEmulatorConfig(batches=settings), clock=s.clock)
        s.services.extras["anthropic_app"] = app
        transport = LoseCreate(httpx.ASGITransport(app))
        lane = AnthropicBatchLane(
            httpx.AsyncClient(transport=transport, base_url=BASE), api_key="ak", clock=s.clock
        )
        s.services.batch["anthropic"] = lane
        s.services.chat["anthropic"] = AnthropicAdapter(
            HttpxUpstream(httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE)),
            api_key="ak",
        )
        yield s, transport


async def enqueue(s: Stack, n: int, *, model: str = MODEL, prefix: str = "c") -> list[str]:
    return [(await s.enqueue(f"{prefix}{i}", model=model))[1]["id"] for i in range(n)]


async def upstream_ids(s: Stack) -> Counter[str]:
    """How often each ticket ran in an ended provider batch (never more than once)."""
    app = s.services.extras["anthropic_app"]
    seen: Counter[str] = Counter()
    for batch in list(app.state.batches._batches.values()):
        if app.state.batches.ended_at(batch) is None:
            continue
        for line in app.state.batches.results(batch):
            if line["result"]["type"] == "succeeded":
                ids = split_id(line["custom_id"])
                assert ids is not None
                seen[ids[1]] += 1
    return seen


async def test_deferred_claude_requests_complete_through_a_message_batch(
    tmp_path: Path, db_target: str
) -> None:
    async with claude(tmp_path, db_target) as (s, _):
        ids = await enqueue(s, 3)
        summary = await s.scheduler.flush_once(force=True)
        assert summary.tickets == 3
        sent = [r for r in s.services.extras["anthropic_app"].state.requests
                if r["path"] == "/v1/messages/batches" and r["method"] == "POST"]  # fmt: skip
        assert len(sent) == 1
        assert sent[0]["headers"]["x-api-key"] == "ak"  # the provider's key, not a caller's
        assert set(await s.statuses(ids)) == {"submitted"}
        s.clock.advance(DONE / 2)
        await s.scheduler.poll_once()
        assert set(await s.statuses(ids)) == {"submitted"}  # counts stay zero until it ends
        s.clock.advance(DONE)
        await s.scheduler.poll_once()
        assert set(await s.statuses(ids)) == {"completed"}
        for ticket_id in ids:
            ticket = await s.ticket(ticket_id)
            assert ticket.result is not None
            completion = ChatCompletion.model_validate(orjson.loads(ticket.result), strict=True)
            assert completion.model == MODEL
            assert completion.choices[0].message.content
            assert completion.usage is not None
            assert completion.usage.prompt_tokens > 0
        rows = [r for r in await s.routes() if r["ticket_id"] in ids and r["status"] == 200]
        assert sorted(r["lane"] for r in rows) == ["batch"] * 3
        assert await upstream_ids(s) == Counter(ids)


async def test_errored_results_are_retried_or_failed_by_their_type(tmp_path: Path) -> None:
    async with claude(tmp_path, line_failure_rate=1.0) as (s, _):
        retried = await enqueue(s, 2)
        await s.run_batches(seconds=DONE + 1)
        # api_error is the provider's fault: back to the queue, a try charged.
        for ticket_id in retried:
            ticket = await s.ticket(ticket_id)
            assert (ticket.status.value, ticket.attempts) == ("queued", 1)
    async with claude(tmp_path / "b") as (s, _):
        # The emulator knows no "claude-gone": the batch accepts it and the request fails
        # when it runs, as a permanent not_found_error.
        gone = await enqueue(s, 1, model="claude-gone", prefix="g")
        await s.run_batches(seconds=DONE + 1)
        ticket = await s.ticket(gone[0])
        assert ticket.status.value == "failed"
        assert ticket.error is not None
        assert "claude-gone" in ticket.error["message"]


async def test_expired_and_cancelled_requests_go_back_to_the_queue(tmp_path: Path) -> None:
    async with claude(tmp_path, complete_after=None) as (s, _):
        ids = await enqueue(s, 2)
        await s.scheduler.flush_once(force=True)
        s.clock.advance(24 * 3600 + 1)
        await s.scheduler.poll_once()
        batch = await s.db.fetchone("SELECT status FROM batches")
        assert batch is not None
        assert batch[0] == "expired"
        for ticket_id in ids:
            ticket = await s.ticket(ticket_id)
            assert (ticket.status.value, ticket.batch_id) == ("queued", None)
    async with claude(tmp_path / "b") as (s, _):
        ids = await enqueue(s, 4)
        await s.scheduler.flush_once(force=True)
        row = await s.db.fetchone("SELECT provider_batch_id FROM batches")
        assert row is not None
        s.clock.advance(DONE / 2)  # half the requests have run
        info = await s.services.batch["anthropic"].cancel(row[0])
        assert info.status.value == "cancelling"
        s.clock.advance(5)
        await s.scheduler.poll_once()
        statuses = Counter(await s.statuses(ids))
        assert statuses == Counter({"completed": 2, "queued": 2})


async def test_lost_create_is_adopted_once_the_batch_ends(tmp_path: Path) -> None:
    async with claude(tmp_path) as (s, lose):
        ids = await enqueue(s, 3)
        lose.armed = True
        summary = await s.scheduler.flush_once(force=True)
        assert summary.batches == ()
        assert len(summary.failed) == 1
        # Past the lease and the grace: reconciliation lists the provider's batches. The
        # one it made is still running, so its id cannot be read: it waits.
        s.clock.advance(s.settings.store.lease + RECONCILE_GRACE_MS / 1000 + 1)
        await s.scheduler.poll_once()
        row = await s.db.fetchone("SELECT status FROM batches")
        assert row is not None
        assert row[0] == "created"
        assert set(await s.statuses(ids)) == {"submitted"}
        s.clock.advance(DONE)
        await s.scheduler.poll_once()  # ended: read, adopted, polled, ingested
        assert set(await s.statuses(ids)) == {"completed"}
        app = s.services.extras["anthropic_app"]
        assert len(app.state.batches._batches) == 1  # nothing was created twice
        assert await upstream_ids(s) == Counter(ids)


async def test_a_create_that_never_arrived_is_requeued_when_nothing_running_can_be_it(
    tmp_path: Path,
) -> None:
    async with claude(tmp_path, active=2) as (s, _):
        # Someone else's bigger batch is running on the same key.
        other = await enqueue(s, 5, prefix="o")
        await s.scheduler.flush_once(force=True)
        ids = await enqueue(s, 2, prefix="n")
        s.services.extras["anthropic_app"].state.faults.add(
            path="/v1/messages/batches", drop=True, times=1
        )
        summary = await s.scheduler.flush_once(force=True)
        assert len(summary.failed) == 1
        s.clock.advance(s.settings.store.lease + RECONCILE_GRACE_MS / 1000 + 1)
        await s.scheduler.poll_once()
        # The running batch holds 5 items, more than ours: it cannot be it.
        for ticket_id in ids:
            assert (await s.ticket(ticket_id)).status.value == "queued"
        await s.run_batches(seconds=DONE + 1, rounds=2)
        assert set(await s.statuses([*other, *ids])) == {"completed"}
        assert await upstream_ids(s) == Counter([*other, *ids])
