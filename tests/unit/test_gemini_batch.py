"""The Gemini batch lane: pure translation on fixtures, then the lane against the Gemini
emulator (in process, on a ManualClock) through submit, retrieve, results, list, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from openai.types.chat import ChatCompletion

from adapters.base import BatchNotCreated, BatchStatus
from adapters.clock import ManualClock
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.server import create_app
from adapters.gemini.batch import (
    GeminiBatchLane,
    display_name,
    metadata_of,
    parse_batch,
    result_of,
)
from adapters.gemini.reply import parse_response
from proxy.deferral.batchfiles import outcome_of
from proxy.store.jobs import TicketStatus

CHAT = "/v1/chat/completions"
MODEL = "gemini-2.5-flash"


def chat(text: str, model: str = MODEL) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}]})


async def items(*pairs: tuple[str, bytes]) -> AsyncIterator[tuple[str, bytes]]:
    for pair in pairs:
        yield pair


# --- pure -----------------------------------------------------------------------------

OPERATION = {
    "name": "batches/abc",
    "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": "models/gemini-2.5-flash",
        "displayName": display_name({"costroute_batch_id": "cb_1"}),
        "batchStats": {
            "requestCount": "3",
            "successfulRequestCount": "2",
            "failedRequestCount": "1",
        },
        "state": "BATCH_STATE_SUCCEEDED",
        "name": "batches/abc",
    },
    "done": True,
}


def test_metadata_round_trips_through_the_display_name() -> None:
    meta = {"costroute_batch_id": "cb_x-1", "other": "a b&c=d"}
    assert metadata_of(display_name(meta)) == meta
    assert metadata_of("somebody else's batch") == {}


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("BATCH_STATE_PENDING", BatchStatus.VALIDATING),
        ("BATCH_STATE_RUNNING", BatchStatus.IN_PROGRESS),
        ("BATCH_STATE_SUCCEEDED", BatchStatus.COMPLETED),
        ("BATCH_STATE_FAILED", BatchStatus.FAILED),
        ("BATCH_STATE_CANCELLED", BatchStatus.CANCELLED),
        ("BATCH_STATE_EXPIRED", BatchStatus.EXPIRED),
    ],
)
def test_states_map_to_the_shared_vocabulary(state: str, status: BatchStatus) -> None:
    data = {**OPERATION, "metadata": {**OPERATION["metadata"], "state": state}}  # type: ignore[dict-item]
    assert parse_batch(data).status is status


def test_counts_are_int64_strings_and_zero_is_omitted() -> None:
    info = parse_batch(OPERATION)
    assert (info.id, info.total, info.completed, info.failed) == ("batches/abc", 3, 2, 1)
    assert info.metadata == {"costroute_batch_id": "cb_1"}
    pending = {"name": "batches/p", "metadata": {"state": "BATCH_STATE_PENDING",
               "batchStats": {"requestCount": "2", "pendingRequestCount": "2"}}}  # fmt: skip
    assert parse_batch(pending).failed == 0


def test_a_quota_failed_batch_reads_as_a_capacity_refusal() -> None:
    data = {
        **OPERATION,
        "metadata": {**OPERATION["metadata"], "state": "BATCH_STATE_FAILED"},  # type: ignore[dict-item]
        "error": {"code": 8, "status": "RESOURCE_EXHAUSTED", "message": "queue full"},
    }
    info = parse_batch(data)
    assert info.status is BatchStatus.FAILED
    assert "limit" in str(info.errors[0]["code"])


GEMINI_RESPONSE = {
    "candidates": [
        {"content": {"role": "model", "parts": [{"text": "Hello."}]}, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 2, "totalTokenCount": 9},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "r1",
}


def test_a_result_is_translated_exactly_as_the_real_time_path() -> None:
    result = result_of("tkt_1", {"response": GEMINI_RESPONSE}, model=MODEL, created=5)
    assert result.status_code == 200
    assert result.body == parse_response(GEMINI_RESPONSE, model=MODEL, created=5)
    assert result.body is not None
    ChatCompletion.model_validate(result.body)
    outcome = outcome_of(result)
    assert outcome.status is TicketStatus.COMPLETED
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (7, 2)


@pytest.mark.parametrize(
    ("rpc", "http", "status"),
    [
        (3, 400, TicketStatus.FAILED),  # INVALID_ARGUMENT: permanent
        (8, 429, TicketStatus.QUEUED),  # RESOURCE_EXHAUSTED: retried
        (13, 500, TicketStatus.QUEUED),  # INTERNAL: retried
        (14, 503, TicketStatus.QUEUED),  # UNAVAILABLE: retried
    ],
)
def test_item_errors_are_rpc_statuses_classified_like_real_time(
    rpc: int, http: int, status: TicketStatus
) -> None:
    result = result_of("tkt_2", {"error": {"code": rpc, "message": "m"}}, model=MODEL, created=0)
    assert result.status_code == http
    assert result.error is not None
    assert result.error["message"] == "m"
    assert outcome_of(result).status is status


# --- against the emulator ---------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def lane_for(app: Any, clock: ManualClock, **options: Any) -> GeminiBatchLane:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gemini.test/v1beta"
    )
    return GeminiBatchLane(client, api_key="k", clock=clock, **options)


@pytest.fixture
async def lane(clock: ManualClock) -> AsyncIterator[GeminiBatchLane]:
    built = lane_for(create_app(GeminiEmulatorConfig(), clock=clock), clock)
    yield built
    await built.aclose()


async def test_inline_batch_end_to_end(lane: GeminiBatchLane, clock: ManualClock) -> None:
    bad = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                        "temperature": 99})  # fmt: skip
    info = await lane.submit(
        items(("tkt_a", chat("one")), ("tkt_b", chat("two")), ("tkt_bad", bad)),
        endpoint=CHAT,
        model=MODEL,
        metadata={"costroute_batch_id": "cb_1"},
    )
    assert info.id.startswith("batches/")
    assert info.status is BatchStatus.VALIDATING
    assert info.metadata == {"costroute_batch_id": "cb_1"}
    clock.advance(61)
    done = await lane.retrieve(info.id)
    assert done.status is BatchStatus.COMPLETED
    assert (done.total, done.completed, done.failed) == (3, 2, 1)
    results = {r.custom_id: r async for r in lane.results(done)}
    assert set(results) == {"tkt_a", "tkt_b", "tkt_bad"}
    for key in ("tkt_a", "tkt_b"):
        assert results[key].status_code == 200
        ChatCompletion.model_validate(results[key].body)
    assert results["tkt_bad"].status_code == 400
    assert outcome_of(results["tkt_bad"]).status is TicketStatus.FAILED


async def test_list_finds_a_batch_by_metadata_and_cancel(
    lane: GeminiBatchLane, clock: ManualClock
) -> None:
    for n in range(3):
        await lane.submit(
            items((f"t{n}", chat("x"))), endpoint=CHAT, model=MODEL,
            metadata={"costroute_batch_id": f"cb_{n}"},
        )  # fmt: skip
    listed = [info async for info in lane.list()]
    assert [i.metadata["costroute_batch_id"] for i in listed] == ["cb_2", "cb_1", "cb_0"]
    cancelled = await lane.cancel(listed[0].id)
    assert cancelled.status is BatchStatus.CANCELLED
    assert [r async for r in lane.results(cancelled)] == []


async def test_expired_batches_report_expired(clock: ManualClock) -> None:
    app = create_app(GeminiEmulatorConfig(batch_complete_after=None), clock=clock)
    lane = lane_for(app, clock)
    info = await lane.submit(items(("t", chat("x"))), endpoint=CHAT, model=MODEL, metadata={})
    clock.advance(48 * 3600)
    assert (await lane.retrieve(info.id)).status is BatchStatus.EXPIRED
    await lane.aclose()


async def test_embeddings_and_untranslatable_batches_are_refused_before_any_call(
    lane: GeminiBatchLane,
) -> None:
    with pytest.raises(BatchNotCreated):
        await lane.submit(items(("t", b"{}")), endpoint="/v1/embeddings", model=MODEL, metadata={})
    with pytest.raises(BatchNotCreated):
        await lane.submit(items(("t", b'{"model":"gemini-2.5-flash"}')), endpoint=CHAT,
                          model=MODEL, metadata={})  # fmt: skip


async def test_above_the_inline_limit_items_go_as_an_uploaded_file(clock: ManualClock) -> None:
    app = create_app(GeminiEmulatorConfig(), clock=clock)
    # A 300-byte inline limit and 100-byte chunks: a file in several resumable chunks.
    lane = lane_for(app, clock, inline_max_bytes=300, upload_chunk=100)
    pairs = [(f"tkt_{n}", chat(f"question number {n}")) for n in range(6)]
    info = await lane.submit(items(*pairs), endpoint=CHAT, model=MODEL, metadata={"m": "1"})
    assert info.input_file_id.startswith("files/")
    chunks = [r for r in app.state.requests if r["path"] == "/upload/v1beta/files"]
    assert len(chunks) > 3  # start + several chunks
    clock.advance(61)
    done = await lane.retrieve(info.id)
    assert done.status is BatchStatus.COMPLETED
    assert done.output_file_id is not None
    results = [r async for r in lane.results(done)]
    assert [r.custom_id for r in results] == [p[0] for p in pairs]
    for result in results:
        ChatCompletion.model_validate(result.body)
    await lane.aclose()


async def test_a_full_batch_quota_is_a_refusal_not_an_unknown_outcome(clock: ManualClock) -> None:
    lane = lane_for(create_app(GeminiEmulatorConfig(max_live_batches=1), clock=clock), clock)
    await lane.submit(items(("a", chat("x"))), endpoint=CHAT, model=MODEL, metadata={})
    with pytest.raises(BatchNotCreated) as refused:
        await lane.submit(items(("b", chat("y"))), endpoint=CHAT, model=MODEL, metadata={})
    assert refused.value.cause.code == "resource_exhausted"
    await lane.aclose()
