"""Batch input lines and the classification of result lines (both failure shapes)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from adapters.openai.batch import batch_line, jsonl, line_overhead, parse_result_line
from proxy.deferral import batchfiles
from proxy.deferral.batchfiles import upstream_body
from proxy.store.jobs import Outcome, TicketStatus


def outcome_of(raw: bytes) -> Outcome | None:
    """An OpenAI result line through the lane's parser and the neutral classifier."""
    result = parse_result_line(raw)
    return None if result is None else batchfiles.outcome_of(result)


CHAT = "/v1/chat/completions"


def test_upstream_body_strips_streaming_and_sets_the_model() -> None:
    body = {"model": "alias", "stream": True, "stream_options": {"include_usage": True}, "n": 1}
    assert orjson.loads(upstream_body(body, "gpt-4o-mini")) == {"model": "gpt-4o-mini", "n": 1}
    assert body["model"] == "alias"  # the caller's dict is not changed


def test_batch_line_is_one_json_object_with_custom_id() -> None:
    body = orjson.dumps(
        {"model": "m", "messages": [{"role": "user", "content": 'a "quoted"\nline'}]}
    )
    line = batch_line("tkt_abc-_9", CHAT, body)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    parsed = orjson.loads(line)
    assert parsed == {
        "custom_id": "tkt_abc-_9",
        "method": "POST",
        "url": CHAT,
        "body": orjson.loads(body),
    }
    assert len(line) == len(body) + len("tkt_abc-_9") + line_overhead(CHAT)


async def test_jsonl_streams_rows() -> None:
    async def rows() -> Any:
        for i in range(3):
            yield f"tkt_{i}", b'{"model":"m"}'

    lines = [line async for line in jsonl(rows(), "/v1/embeddings")]
    assert [orjson.loads(x)["custom_id"] for x in lines] == ["tkt_0", "tkt_1", "tkt_2"]


def response_line(custom_id: str, status: int, body: Any) -> bytes:
    return orjson.dumps(
        {"id": "batch_req_1", "custom_id": custom_id, "error": None,
         "response": {"status_code": status, "request_id": "req_1", "body": body}}
    )  # fmt: skip


def error_line(custom_id: str, code: str, message: str = "m") -> bytes:
    return orjson.dumps(
        {"id": "batch_req_2", "custom_id": custom_id, "response": None,
         "error": {"code": code, "message": message}}
    )  # fmt: skip


def test_success_line_keeps_the_body_and_usage() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 3}},
    }  # fmt: skip
    outcome = outcome_of(response_line("tkt_1", 200, body))
    assert outcome is not None
    assert outcome.status is TicketStatus.COMPLETED
    assert outcome.result is not None
    assert orjson.loads(outcome.result) == body
    assert (outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens) == (11, 4, 3)


def http_error(status: int, type_: str, code: str | None) -> bytes:
    error = {"message": f"HTTP {status}", "type": type_, "param": None, "code": code}
    return response_line("tkt_1", status, {"error": error})


RETRYABLE = [
    http_error(429, "requests", "rate_limit_exceeded"),
    http_error(429, "tokens", None),
    http_error(500, "server_error", None),
    http_error(503, "server_error", None),
    http_error(408, "timeout", None),
    error_line("tkt_1", "batch_expired", "could not be executed before the window expired"),
    error_line("tkt_1", "batch_cancelled"),
    error_line("tkt_1", "rate_limit_exceeded"),
    error_line("tkt_1", "server_error"),
    error_line("tkt_1", "some_new_transient_code"),
]
PERMANENT = [
    http_error(400, "invalid_request_error", None),
    http_error(400, "invalid_request_error", "context_length_exceeded"),
    http_error(400, "invalid_request_error", "content_policy_violation"),
    http_error(400, "invalid_request_error", "token_limit_exceeded"),
    http_error(404, "invalid_request_error", "model_not_found"),
    http_error(429, "insufficient_quota", "insufficient_quota"),
    error_line("tkt_1", "content_policy_violation"),
    error_line("tkt_1", "token_limit_exceeded"),
    error_line("tkt_1", "invalid_request_error"),
]


@pytest.mark.parametrize("line", RETRYABLE)
def test_retryable_failures_go_back_to_the_queue(line: bytes) -> None:
    outcome = outcome_of(line)
    assert outcome is not None
    assert outcome.status is TicketStatus.QUEUED
    assert outcome.error is not None
    assert set(outcome.error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("line", PERMANENT)
def test_permanent_failures_fail_the_ticket_with_the_provider_error(line: bytes) -> None:
    outcome = outcome_of(line)
    assert outcome is not None
    assert outcome.status is TicketStatus.FAILED
    assert outcome.error is not None
    raw = orjson.loads(line)
    inner = raw["response"]["body"]["error"] if raw["response"] else raw["error"]
    assert outcome.error["message"] == inner["message"]
    assert outcome.error["code"] == inner["code"]


def test_http_error_object_is_passed_through_unchanged() -> None:
    error = {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": "x1"}
    outcome = outcome_of(response_line("tkt_9", 400, {"error": error}))
    assert outcome is not None
    assert outcome.ticket_id == "tkt_9"
    assert outcome.error == error


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1,2]", b'{"response": null}', b'{"custom_id": 5}', b""]
)
def test_unattributable_lines_are_skipped(raw: bytes) -> None:
    assert outcome_of(raw) is None
