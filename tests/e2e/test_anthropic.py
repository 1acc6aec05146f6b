"""Anthropic end to end: the official ``anthropic`` SDK against the emulator, and the
official ``openai`` SDK through costroute (under uvicorn) to the emulator: plain, streamed,
a tool round trip, an image, JSON schema, errors; strict ``ChatCompletion`` types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from adapters.anthropic.reply import completion as to_completion
from adapters.anthropic.translate import build_request
from adapters.emulators.anthropic.server import AnthropicEmulatorConfig
from adapters.emulators.anthropic.server import create_app as anthropic_emulator
from adapters.errors import Unsupported
from proxy.app import create_app
from proxy.settings import parse_settings
from tests.sdk_checks import strict
from tests.support import ServerThread

CLIENT = "sk-anthropic-e2e-client-0000"
PROVIDER = "sk-ant-provider-key-0000"
ENV = {"TEAM": CLIENT, "ANTHROPIC_API_KEY": PROVIDER}
MODEL = "claude-sonnet-4-5"
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYGD4"
    "DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}  # fmt: skip


class Stack:
    def __init__(self, proxy: ServerThread, emulator: ServerThread) -> None:
        self.proxy, self.emulator = proxy, emulator

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.proxy.url + "/v1", api_key=CLIENT, max_retries=0)

    @property
    def sent(self) -> Any:
        return self.emulator.app.state.requests


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("anthropic")
    emulator = ServerThread(
        anthropic_emulator(AnthropicEmulatorConfig(api_keys=frozenset({PROVIDER})))
    ).start()
    settings = parse_settings(
        {
            "store": {"path": str(tmp / "costroute.db")},
            "auth": {"keys": [{"name": "team", "key_env": "TEAM"}]},
            "providers": {"anthropic": {"type": "anthropic", "base_url": emulator.url + "/v1",
                                        "api_key_env": "ANTHROPIC_API_KEY"}},
            "models": {MODEL: {"provider": "anthropic", "max_tokens_default": 1000},
                       "haiku": {"provider": "anthropic", "upstream_model": "claude-haiku-4-5"}},
            "retry": {"max_retries": 1, "backoff_base": 0.01, "backoff_max": 0.05},
        }
    )  # fmt: skip
    proxy = ServerThread(create_app(settings, environ=ENV)).start()
    try:
        yield Stack(proxy, emulator)
    finally:
        proxy.stop()
        emulator.stop()


# --- the official anthropic SDK against the emulator ----------------------------------------


def test_the_anthropic_sdk_runs_against_the_emulator(s: Stack) -> None:
    client = anthropic.Anthropic(base_url=s.emulator.url, api_key=PROVIDER, max_retries=0)
    message = client.messages.create(
        model=MODEL, max_tokens=200, system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
    )  # fmt: skip
    assert message.type == "message"
    assert message.content[0].type == "text"
    assert message.usage.input_tokens > 0
    with client.messages.stream(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "Stream"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text  # type: ignore[union-attr]
    # The SDK checks required arguments itself: a raw request shows the API's own answer.
    missing = httpx.post(
        s.emulator.url + "/v1/messages",
        headers={"x-api-key": PROVIDER, "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
    )
    assert missing.status_code == 400
    assert missing.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    wrong = anthropic.Anthropic(base_url=s.emulator.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    s.emulator.app.state.faults.add(status=529, times=1)
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert overloaded.value.status_code == 529


# --- the openai SDK through costroute -------------------------------------------------------


def test_a_claude_chat_call_through_the_openai_sdk(s: Stack) -> None:
    raw = s.client().chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": "How are you?"},
        ],
        stop=["zzz"],
        temperature=0.3,
    )
    assert raw.headers["x-costroute-lane"] == "realtime"
    completion = strict(ChatCompletion, raw.http_response.json())
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content
    sent = s.sent[-1]
    assert sent["headers"]["x-api-key"] == PROVIDER  # the provider's key, never the caller's
    assert "authorization" not in sent["headers"]
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    body = sent["json"]
    assert [b["text"] for b in body["system"]] == ["You are terse.", "Answer in English."]
    assert len(body["messages"]) == 1  # consecutive user turns merged
    assert body["max_tokens"] == 1000  # the configured default: Anthropic requires one
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0


def test_streaming_with_usage_and_tool_round_trip(s: Stack) -> None:
    chunks = list(s.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me"}], stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    for chunk in chunks:
        strict(ChatCompletionChunk, chunk.model_dump(mode="json", exclude_unset=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0

    first = s.client().chat.completions.create(
        model="haiku", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[TOOL]
    )
    [call] = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls"
    assert "city" in json.loads(call.function.arguments)
    assert s.sent[-1]["json"]["model"] == "claude-haiku-4-5"
    follow = s.client().chat.completions.create(
        model="haiku", tools=[TOOL],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )  # fmt: skip
    assert follow.choices[0].finish_reason == "stop"
    tool_turn = s.sent[-1]["json"]["messages"][-1]
    assert tool_turn["content"][0]["type"] == "tool_result"

    streamed_call = list(s.client().chat.completions.create(
        model="haiku", messages=[{"role": "user", "content": "Weather?"}], tools=[TOOL],
        stream=True,
    ))  # fmt: skip
    arguments = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""  # type: ignore[union-attr]
        for c in streamed_call
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert "city" in json.loads(arguments)


def test_images_and_json_schema(s: Stack) -> None:
    reply = s.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]}],
        response_format={"type": "json_schema", "json_schema": {"name": "v", "schema": {
            "type": "object", "properties": {"label": {"type": "string"}},
            "required": ["label"]}}},
    )  # fmt: skip
    assert "label" in json.loads(reply.choices[0].message.content or "{}")
    blocks = s.sent[-1]["json"]["messages"][0]["content"]
    assert blocks[1]["source"]["type"] == "base64"
    assert blocks[1]["source"]["media_type"] == "image/png"
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.png"}
    assert s.sent[-1]["json"]["output_config"]["format"]["type"] == "json_schema"


def test_errors_map_to_the_openai_sdks_classes(s: Stack) -> None:
    faults = s.emulator.app.state.faults
    faults.add(status=529, times=1)  # retried by costroute's policy, then served
    assert (
        s.client()
        .chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        .choices
    )
    faults.add(status=529, times=5)
    with pytest.raises(openai.InternalServerError) as overloaded:
        s.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert overloaded.value.status_code == 529
    faults.clear()
    faults.add(status=429, times=5, retry_after=0)
    with pytest.raises(openai.RateLimitError):
        s.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    faults.clear()
    with pytest.raises(openai.BadRequestError) as refused:
        s.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], n=2
        )
    assert refused.value.param == "n"
    with pytest.raises(openai.BadRequestError) as too_hot:
        s.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], logprobs=True
        )
    assert too_hot.value.param == "logprobs"


# --- the translation, row by row ------------------------------------------------------------


def test_translation_rows() -> None:
    body = build_request(
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": [TOOL],
         "tool_choice": "required", "parallel_tool_calls": False, "max_completion_tokens": 50,
         "temperature": 1.7, "user": "u1", "store": True, "seed": 3},
        max_tokens_default=999,
    )  # fmt: skip
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["tools"][0]["input_schema"]["required"] == ["city"]
    assert body["max_tokens"] == 50
    assert body["temperature"] == 1.0  # capped
    assert body["metadata"] == {"user_id": "u1"}
    assert "store" not in body  # harmless, dropped
    thinking = build_request(
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
         "reasoning_effort": "high", "max_tokens": 20000},
        max_tokens_default=999, thinking=True,
    )  # fmt: skip
    assert thinking["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    with pytest.raises(Unsupported) as audio:
        build_request({"model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {}}]}]}, max_tokens_default=10)  # fmt: skip
    assert audio.value.param == "messages[0].content[0]"
    reply = to_completion(
        {"type": "message", "model": MODEL, "stop_reason": "max_tokens",
         "content": [{"type": "thinking", "thinking": "...", "signature": "s"},
                     {"type": "text", "text": "Hi"}],
         "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5,
                   "cache_read_input_tokens": 100, "output_tokens": 7}},
        model=MODEL, created=1,
    )  # fmt: skip
    strict(ChatCompletion, reply)
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["prompt_tokens"] == 115  # uncached + writes + reads
    assert reply["usage"]["prompt_tokens_details"]["cached_tokens"] == 100


def test_the_responses_api_is_bridged_to_claude(s: Stack) -> None:
    raw = s.client().responses.with_raw_response.create(
        model=MODEL, input="Say hi", instructions="Be brief.", max_output_tokens=100
    )
    response = strict(Response, raw.http_response.json())
    assert response.status == "completed"
    assert response.output_text
    sent = s.sent[-1]["json"]
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["max_tokens"] == 100
    with s.client().responses.stream(model=MODEL, input="Stream it") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        assert text == stream.get_final_response().output_text


LONG_SYSTEM = "You are the contracts assistant. " + " ".join(
    f"Clause {n}: deliveries of category {n % 7} are insured up to {1000 + 37 * n} euros."
    for n in range(1, 400)
)


def _routes(s: Stack) -> list[dict[str, Any]]:
    services = s.proxy.app.state.services

    async def fetch() -> list[dict[str, Any]]:
        await services.routelog.flush()
        return [dict(r) for r in await services.db.fetchall("SELECT * FROM routes ORDER BY id")]

    rows: list[dict[str, Any]] = s.proxy.call(fetch())
    return rows


def test_a_repeated_long_prefix_is_cached_when_it_pays(s: Stack) -> None:
    lanes, cached = [], []
    for i in range(3):
        raw = s.client().chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "system", "content": LONG_SYSTEM},
                      {"role": "user", "content": f"Which clause covers case {i}?"}],
        )  # fmt: skip
        lanes.append(raw.headers["x-costroute-lane"])
        completion = strict(ChatCompletion, raw.http_response.json())
        assert completion.usage is not None
        details = completion.usage.prompt_tokens_details
        cached.append(details.cached_tokens if details else 0)
        system = s.sent[-1]["json"]["system"]
        marked = [b for b in system if "cache_control" in b]
        assert len(marked) == (0 if i == 0 else 1)  # after the first repeat, one breakpoint
    # First sighting: nothing; second: written (125 %); third: read at 10 %.
    assert lanes == ["realtime", "realtime+cache", "realtime+cache"]
    assert cached[0] == 0
    assert cached[1] == 0
    assert cached[2] > 1000
    write, read = _routes(s)[-2:]
    assert write["cached_tokens"] == 0
    assert write["saved_usd"] < 0  # the write premium, not yet earned back
    assert read["cached_tokens"] == cached[2]
    assert read["saved_usd"] > 0


def test_the_callers_own_breakpoints_and_off_are_respected(s: Stack) -> None:
    own = [{"type": "text", "text": LONG_SYSTEM + " own", "cache_control": {"type": "ephemeral"}}]
    for _ in range(3):
        s.client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": own}, {"role": "user", "content": "q"}],
        )
        system = s.sent[-1]["json"]["system"]
        assert [b.get("cache_control") for b in system] == [{"type": "ephemeral"}]
    for _ in range(3):
        s.client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": LONG_SYSTEM + " off"},
                      {"role": "user", "content": "q"}],
            extra_headers={"X-Context-Cache": "off"},
        )  # fmt: skip
        assert all("cache_control" not in b for b in s.sent[-1]["json"]["system"])
