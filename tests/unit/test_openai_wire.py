import pytest

from adapters.errors import RateLimited, UpstreamStatus
from adapters.wire import (
    extract_usage,
    parse_retry_after,
    sse_events,
    status_error,
)


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


async def _collect(*parts: bytes) -> list[bytes]:
    return [event async for event in sse_events(_chunks(*parts))]


async def test_sse_events_reassemble_across_chunk_boundaries() -> None:
    events = await _collect(b'data: {"a":', b"1}\n", b"\ndata: [DONE]\n\n")
    assert events == [b'{"a":1}', b"[DONE]"]


async def test_sse_events_handle_crlf_comments_and_multiline_data() -> None:
    events = await _collect(b": keep-alive\r\n\r\ndata: x\r\ndata: y\r\n\r\nevent: e\ndata:z\n\n")
    assert events == [b"x\ny", b"z"]


def test_extract_usage_reads_openai_and_deepseek_shapes() -> None:
    openai = {
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 6},
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
    }
    usage = extract_usage(openai)
    assert usage is not None
    assert (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
    ) == (10, 4, 6, 2)
    deepseek = {
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_cache_hit_tokens": 8,
            "prompt_cache_miss_tokens": 2,
        }
    }
    usage = extract_usage(deepseek)
    assert usage is not None
    assert usage.cached_tokens == 8
    assert extract_usage({"usage": None}) is None
    assert extract_usage(None) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_status_error_keeps_the_provider_error_object() -> None:
    body = (
        b'{"error":{"message":"Rate limit reached","type":"tokens",'
        b'"param":null,"code":"rate_limit_exceeded"}}'
    )
    error = status_error(429, body, {"retry-after": "2", "x-should-retry": "true"})
    assert isinstance(error, RateLimited)
    assert error.retry_after == 2.0
    assert error.retryable
    assert error.error_object() == {
        "message": "Rate limit reached",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }


def test_status_error_survives_non_json_bodies() -> None:
    error = status_error(502, b"<html>bad gateway</html>", {})
    assert isinstance(error, UpstreamStatus)
    assert error.status == 502
    assert error.retryable
    assert "502" in error.message


async def test_sse_events_are_the_same_however_the_stream_is_cut() -> None:
    # LF events first, CRLF ones only later (the parser switches to the two-separator
    # search when it first sees a CR), a multi-line event and a comment in between.
    stream = (
        b'data: {"a":1}\n\ndata: {"b":2}\n\n: ping\n\n'
        b"data: x\r\ndata: y\r\n\r\n"
        b'data: {"c":3}\n\ndata: [DONE]\n\n'
    )
    expected = [b'{"a":1}', b'{"b":2}', b"x\ny", b'{"c":3}', b"[DONE]"]
    assert await _collect(stream) == expected
    for cut in range(1, len(stream)):
        assert await _collect(stream[:cut], stream[cut:]) == expected, cut
    for size in (1, 2, 3, 5, 7):
        parts = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert await _collect(*parts) == expected, size
