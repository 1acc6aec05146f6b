"""A minimal OpenAI-shaped upstream for the real-time benchmarks (aiohttp, no validation).

The full emulator validates every request and counts tokens; here the upstream must never
be the bottleneck, so it answers a fixed ``chat.completion`` (or a fixed SSE stream when
the body asks for ``"stream":true``) as fast as aiohttp can. Paths under ``/slow`` wait
``--slow-ms`` first (before the headers, like a model thinking).

    python -m tests.benchmarks.upstream --port 9100 [--slow-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
from aiohttp import web

from tests.benchmarks.loop import new_event_loop

USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": 9,
    "total_tokens": 28,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}
COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! How can I help you with your benchmark today?",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    }
)
HEADERS = {
    "x-request-id": "req_bench",
    "openai-processing-ms": "1",
    "x-ratelimit-limit-requests": "30000",
    "x-ratelimit-remaining-requests": "29999",
}
_PIECES = ("Hello", "!", " How", " can", " I", " help", "?")


def _chunk(choices: list[dict[str, object]], **extra: object) -> bytes:
    payload = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_bench",
        **extra,
        "choices": choices,
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _choice(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def stream_events(include_usage: bool) -> list[bytes]:
    """The events of one streamed answer, each to be written separately. With
    include_usage OpenAI sends usage:null on every chunk, then a last chunk with empty
    choices and the usage."""
    extra: dict[str, object] = {"usage": None} if include_usage else {}
    deltas: list[dict[str, object]] = [{"role": "assistant", "content": "", "refusal": None}]
    deltas += [{"content": piece} for piece in _PIECES]
    events = [_chunk([_choice(delta)], **extra) for delta in deltas]
    events.append(_chunk([_choice({}, "stop")], **extra))
    if include_usage:
        events.append(_chunk([], usage=USAGE))
    events.append(b"data: [DONE]\n\n")
    return events


_EVENTS = {False: stream_events(False), True: stream_events(True)}


def build_app(slow_seconds: float) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.startswith("/slow"):
            await asyncio.sleep(slow_seconds)
        if b'"stream":true' not in body:
            return web.Response(body=COMPLETION, content_type="application/json", headers=HEADERS)
        response = web.StreamResponse(headers={**HEADERS, "content-type": "text/event-stream"})
        await response.prepare(request)
        for event in _EVENTS[b'"include_usage":true' in body]:
            await response.write(event)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/slow/v1/chat/completions", chat)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slow-ms", type=float, default=50.0)
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    args = parser.parse_args()
    web.run_app(
        build_app(args.slow_ms / 1000.0),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=new_event_loop(args.loop),
    )


if __name__ == "__main__":
    main()
