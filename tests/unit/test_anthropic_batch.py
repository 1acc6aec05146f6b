"""The Anthropic batch lane's pure parts on fixtures (providers.md 5.2-5.3): the batch
object, the four result types, the custom-id carrying the local batch id, and the
cache premium at the batch rate."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from adapters.anthropic.batch import item_id, parse_batch, result_of, split_id
from adapters.anthropic.chat import Caching, Translator
from adapters.base import BatchStatus
from adapters.errors import UpstreamProtocolError
from adapters.parts import ModelPrices
from proxy.deferral.batchfiles import outcome_of
from proxy.store.jobs import TicketStatus

BATCH: dict[str, Any] = {
    "id": "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d",
    "type": "message_batch",
    "processing_status": "in_progress",
    "request_counts": {"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0,
                       "expired": 0},
    "created_at": "2026-11-30T10:00:00.000000Z",
    "expires_at": "2026-12-01T10:00:00.000000Z",
    "ended_at": None,
    "cancel_initiated_at": None,
    "archived_at": None,
    "results_url": None,
}  # fmt: skip
URL = "https://api.anthropic.com/v1/messages/batches"
TICKET = "tkt_" + "a" * 32
LOCAL = "cb_" + "x-Y_z" * 3 + "q"


def ended(**counts: int) -> dict[str, Any]:
    full = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0, **counts}
    return {**BATCH, "processing_status": "ended", "request_counts": full,
            "ended_at": "2026-11-30T11:00:00Z",
            "results_url": f"{URL}/{BATCH['id']}/results"}  # fmt: skip


def test_the_local_batch_id_rides_in_each_custom_id() -> None:
    combined = item_id(LOCAL, TICKET)
    assert combined is not None
    assert len(combined) <= 64
    assert split_id(combined) == (LOCAL, TICKET)
    assert item_id("cb_" + "x" * 40, TICKET) is None  # over 64 characters
    assert item_id("cb_bad id", TICKET) is None  # outside [a-zA-Z0-9_-]
    assert split_id("somebody-else") is None
    assert split_id(None) is None


def test_a_running_batch_counts_nothing_and_its_metadata_is_pending() -> None:
    info = parse_batch(BATCH)
    assert info.status is BatchStatus.IN_PROGRESS
    assert (info.total, info.completed, info.failed) == (3, 0, 0)
    assert info.metadata_pending
    assert info.created_at == int(dt.datetime(2026, 11, 30, 10, tzinfo=dt.UTC).timestamp())
    assert info.output_file_id is None
    assert parse_batch(BATCH, metadata={}).metadata_pending is False


@pytest.mark.parametrize(
    ("batch", "status"),
    [
        ({**BATCH, "processing_status": "canceling"}, BatchStatus.CANCELLING),
        (ended(succeeded=2, errored=1), BatchStatus.COMPLETED),
        (ended(succeeded=1, expired=2), BatchStatus.EXPIRED),
        ({**ended(succeeded=1, canceled=2), "cancel_initiated_at": "2026-11-30T10:30:00Z"},
         BatchStatus.CANCELLED),
    ],
)  # fmt: skip
def test_processing_status_maps_to_the_shared_vocabulary(
    batch: dict[str, Any], status: BatchStatus
) -> None:
    info = parse_batch(batch, metadata={"costroute_batch_id": LOCAL})
    assert info.status is status
    assert info.total == 3
    # Counts stay zero until the whole batch has ended, then sum to the total.
    assert info.completed + info.failed == (3 if status.final else 0)
    assert info.metadata == {"costroute_batch_id": LOCAL}
    assert not info.metadata_pending


def test_unknown_shapes_are_protocol_errors() -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_batch({**BATCH, "processing_status": "sleeping"})
    with pytest.raises(UpstreamProtocolError):
        parse_batch({**BATCH, "id": "../../etc"})


MESSAGE = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Shipped on Monday."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 2000, "output_tokens": 5, "service_tier": "batch",
              "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                 "ephemeral_1h_input_tokens": 0}},
}  # fmt: skip


def translator() -> Translator:
    prices = ModelPrices(3.0, 0.3, 0.0, cache_write=3.75, cache_write_1h=6.0)
    return Translator(caching=Caching(prices=lambda _m: prices))


def line(result: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": item_id(LOCAL, TICKET), "result": result}


def test_a_succeeded_line_is_the_real_time_completion() -> None:
    result = result_of(line({"type": "succeeded", "message": MESSAGE}), translator(), created=1)
    assert result is not None
    assert (result.custom_id, result.status_code) == (TICKET, 200)
    assert result.body is not None
    completion = ChatCompletion.model_validate(result.body, strict=True)
    assert completion.choices[0].message.content == "Shipped on Monday."
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 2020
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 2000
    assert result.notes["lane_suffix"] == "cache"
    outcome = outcome_of(result)
    assert outcome.status is TicketStatus.COMPLETED
    assert outcome.lane_suffix == "cache"


def test_a_cache_write_in_a_batch_pays_its_premium_at_half_rate() -> None:
    usage = {**MESSAGE["usage"], "cache_read_input_tokens": 0,
             "cache_creation_input_tokens": 1_000_000,
             "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                "ephemeral_1h_input_tokens": 1_000_000}}  # fmt: skip
    message = {**MESSAGE, "usage": usage}
    result = result_of(line({"type": "succeeded", "message": message}), translator(), created=1)
    assert result is not None
    # 1-hour write: 100 % premium on $3/M input, halved by the batch.
    assert result.notes["cache_storage_usd"] == pytest.approx(1.5)
    assert outcome_of(result).cache_storage_usd == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("kind", "status", "retried"),
    [("overloaded_error", 529, True), ("api_error", 500, True),
     ("rate_limit_error", 429, True), ("invalid_request_error", 400, False),
     ("not_found_error", 404, False)],
)  # fmt: skip
def test_errored_lines_are_retryable_or_permanent_by_type(
    kind: str, status: int, retried: bool
) -> None:
    error = {"type": "error", "error": {"type": kind, "message": "m"}, "request_id": "r"}
    result = result_of(line({"type": "errored", "error": error}), translator(), created=1)
    assert result is not None
    assert result.status_code == status
    expected = TicketStatus.QUEUED if retried else TicketStatus.FAILED
    assert outcome_of(result).status is expected


@pytest.mark.parametrize(("kind", "code"), [("canceled", "batch_cancelled"),
                                            ("expired", "batch_expired")])  # fmt: skip
def test_canceled_and_expired_lines_are_requeued(kind: str, code: str) -> None:
    result = result_of(line({"type": kind}), translator(), created=1)
    assert result is not None
    assert result.status_code is None
    assert result.error is not None
    assert result.error["code"] == code
    assert outcome_of(result).status is TicketStatus.QUEUED


def test_lines_not_of_ours_are_skipped_and_unknown_types_refused() -> None:
    assert result_of({"custom_id": "x", "result": {"type": "canceled"}}, translator(),
                     created=1) is None  # fmt: skip
    with pytest.raises(UpstreamProtocolError):
        result_of(line({"type": "vanished"}), translator(), created=1)


def test_the_emulator_finishes_every_request_of_a_batch_that_ran_to_the_end() -> None:
    # created + done_after - created != done_after in floating point for such values: a
    # batch that ran to its end must not lose its last request to that hair.
    from adapters.clock import ManualClock
    from adapters.emulators.anthropic.batches import Batches, BatchSettings

    clock = ManualClock(start=1_796_009_333.123)
    store = Batches(
        BatchSettings(turnaround=lambda _rank: 4_452.337), clock,
        lambda _key, params: {"usage": {}, "model": params["model"]},
    )  # fmt: skip
    params = {"model": "m", "max_tokens": 5, "messages": []}
    batch = store.create({"requests": [{"custom_id": f"r{n}", "params": params}
                                       for n in range(7)]}, key="k", size=1)  # fmt: skip
    clock.advance(4_452.337)
    assert store.ended_at(batch) is not None
    kinds = {line["result"]["type"] for line in store.results(batch)}
    assert kinds == {"succeeded"}


async def test_the_emulator_refuses_oversized_requests_with_413() -> None:
    import httpx

    from adapters.emulators.anthropic.server import AnthropicEmulatorConfig, create_app

    app = create_app(AnthropicEmulatorConfig(max_request_bytes=200))
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5,
            "messages": [{"role": "user", "content": "x" * 300}]}  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://a") as c:
        response = await c.post("/v1/messages", json=body, headers=headers)
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
        body["messages"] = [{"role": "user", "content": "x"}]
        assert (await c.post("/v1/messages", json=body, headers=headers)).status_code == 200
