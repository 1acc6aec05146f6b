"""The DeepSeek flavour (providers.md §4): routes with and without ``/v1``, prompt cache
hit/miss usage with prefix-unit semantics, ``reasoning_content``, retired aliases by the
clock, and DeepSeek's own error wording and statuses."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from starlette.applications import Starlette

from adapters.clock import ManualClock
from adapters.emulators.openai.config import DEEPSEEK_LEGACY_RETIREMENT
from adapters.emulators.tokens import count_messages
from tests.emulators.conftest import AUTH, sdk_for

SYSTEM = {"role": "system", "content": "You are a terse assistant for cost questions."}
USER = {"role": "user", "content": "What is cheaper, batch or flex?"}


async def chat(
    client: httpx.AsyncClient, path: str = "/chat/completions", **body: Any
) -> httpx.Response:
    payload = {"model": "deepseek-flash", "messages": [SYSTEM, USER], **body}
    return await client.post(path, json=payload, headers=AUTH)


@pytest.mark.parametrize("path", ["/chat/completions", "/v1/chat/completions"])
async def test_both_route_prefixes(ds_client: httpx.AsyncClient, path: str) -> None:
    response = await chat(ds_client, path)
    assert response.status_code == 200
    body = response.json()
    completion = ChatCompletion.model_validate_json(response.content, strict=True)
    assert completion.model == "deepseek-flash"
    assert "service_tier" not in body  # DeepSeek does not report one
    assert set(body["choices"][0]["message"]) == {"role", "content"}
    assert "x-ratelimit-limit-requests" not in response.headers
    for models_path in ("/models", "/v1/models"):
        listed = (await ds_client.get(models_path, headers=AUTH)).json()
        assert listed["data"][0] == {
            "id": "deepseek-flash",
            "object": "model",
            "owned_by": "deepseek",
        }


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embeddings", "/v1/files", "/v1/batches"])
async def test_no_embeddings_files_or_batches(ds_client: httpx.AsyncClient, path: str) -> None:
    response = await ds_client.post(
        path, json={"model": "deepseek-flash", "input": "x"}, headers=AUTH
    )
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_cache_hit_and_miss_usage(ds_client: httpx.AsyncClient) -> None:
    first = (await chat(ds_client)).json()
    usage = first["usage"]
    prompt = count_messages([SYSTEM, USER])
    assert usage["prompt_tokens"] == prompt
    assert (usage["prompt_cache_hit_tokens"], usage["prompt_cache_miss_tokens"]) == (0, prompt)
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert "completion_tokens_details" not in usage  # no thinking, no reasoning tokens

    # Next turn: the previous input plus the model's own answer are stored prefix units.
    answer = first["choices"][0]["message"]
    turn = [SYSTEM, USER, answer, {"role": "user", "content": "And for 10k requests?"}]
    usage = (
        await ds_client.post(
            "/chat/completions", json={"model": "deepseek-flash", "messages": turn}, headers=AUTH
        )
    ).json()["usage"]
    hit = usage["prompt_cache_hit_tokens"]
    assert hit == count_messages(turn[:3]) - 3
    assert hit + usage["prompt_cache_miss_tokens"] == usage["prompt_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == hit


async def test_partial_prefix_misses_but_seeds_a_unit(ds_client: httpx.AsyncClient) -> None:
    """A+B then A+C misses, but seeds A: A+D then hits A (kv_cache guide)."""

    async def hits(*tail: str) -> int:
        messages = [SYSTEM, *({"role": "user", "content": t} for t in tail)]
        body = {"model": "deepseek-v4-pro", "messages": messages}
        reply = await ds_client.post("/chat/completions", json=body, headers=AUTH)
        return int(reply.json()["usage"]["prompt_cache_hit_tokens"])

    assert await hits("B") == 0
    assert await hits("C") == 0
    assert await hits("D") == count_messages([SYSTEM]) - 3
    assert await hits("D") == count_messages([SYSTEM, USER | {"content": "D"}]) - 3


async def test_reasoning_content(ds_client: httpx.AsyncClient) -> None:
    reasoner = (await chat(ds_client, model="deepseek-reasoner")).json()
    message = reasoner["choices"][0]["message"]
    assert message["reasoning_content"]
    assert message["content"]
    details = reasoner["usage"]["completion_tokens_details"]
    assert 0 < details["reasoning_tokens"] < reasoner["usage"]["completion_tokens"]
    thinking = (await chat(ds_client, thinking={"type": "enabled"})).json()
    assert thinking["choices"][0]["message"]["reasoning_content"]
    off = (await chat(ds_client, thinking={"type": "disabled"})).json()
    assert "reasoning_content" not in off["choices"][0]["message"]


async def test_reasoning_stream_through_the_sdk(ds_sdk: openai.AsyncOpenAI) -> None:
    stream = await ds_sdk.chat.completions.create(
        model="deepseek-reasoner",
        messages=[SYSTEM, USER],  # type: ignore[list-item]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks: list[ChatCompletionChunk] = [c async for c in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert reasoning
    assert content
    # All reasoning arrives before the first piece of the answer.
    first_answer = next(i for i, d in enumerate(deltas) if d.content)
    assert not any((d.model_extra or {}).get("reasoning_content") for d in deltas[first_answer:])
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    extra = usage.model_extra or {}
    assert (
        extra["prompt_cache_hit_tokens"] + extra["prompt_cache_miss_tokens"] == usage.prompt_tokens
    )


async def test_sdk_sees_deepseek_usage_fields(ds_sdk: openai.AsyncOpenAI) -> None:
    completion = await ds_sdk.chat.completions.create(model="deepseek-chat", messages=[USER])  # type: ignore[list-item]
    assert completion.usage is not None
    extra = completion.usage.model_extra or {}
    assert extra == {
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": completion.usage.prompt_tokens,
    }


async def test_retired_aliases_follow_the_clock(make_app: Any, clock: ManualClock) -> None:
    app = make_app(flavour="deepseek", deepseek_retired=DEEPSEEK_LEGACY_RETIREMENT)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        assert (await chat(c, model="deepseek-chat")).status_code == 200
        clock.set(DEEPSEEK_LEGACY_RETIREMENT["deepseek-chat"])
        gone = await chat(c, model="deepseek-chat")
        assert gone.status_code == 400
        assert gone.json() == {
            "error": {
                "message": "Model Not Exist",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_request_error",
            }
        }
        assert (await chat(c, model="deepseek-v4-flash")).status_code == 200
        listed = [m["id"] for m in (await c.get("/models", headers=AUTH)).json()["data"]]
        assert "deepseek-chat" not in listed
        assert "deepseek-reasoner" not in listed
        assert "deepseek-flash" in listed


async def test_unknown_model_is_400_not_404(ds_client: httpx.AsyncClient) -> None:
    response = await chat(ds_client, model="deepseek-r1")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Model Not Exist"


async def test_deepseek_auth_wording(make_app: Any) -> None:
    app = make_app(flavour="deepseek", api_keys=frozenset({"sk-good"}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        body = {"model": "deepseek-flash", "messages": [USER]}
        wrong = await c.post(
            "/chat/completions", json=body, headers={"authorization": "Bearer sk-bad-f00d"}
        )
        assert wrong.status_code == 401
        assert wrong.json()["error"] == {
            "message": "Authentication Fails, Your api key: ****f00d is invalid",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_request_error",
        }
        missing = await c.post("/chat/completions", json=body)
        assert "auth header format should be Bearer" in missing.json()["error"]["message"]


async def test_insufficient_balance_is_a_402(deepseek_app: Starlette) -> None:
    deepseek_app.state.faults.add(status=402)
    sdk = sdk_for(deepseek_app, base="")
    with pytest.raises(openai.APIStatusError) as info:
        await sdk.chat.completions.create(model="deepseek-flash", messages=[USER])  # type: ignore[list-item]
    assert info.value.status_code == 402
    assert info.value.body == {
        "message": "Insufficient Balance",
        "type": "unknown_error",
        "param": None,
        "code": "invalid_request_error",
    }
    await sdk.close()


@pytest.mark.parametrize(
    ("extra", "status", "fragment"),
    [
        ({"temperature": 3}, 422, "temperature"),
        ({"messages": []}, 400, "empty array"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            400,
            "unavailable",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            400,
            "unknown variant `image_url`, expected `text`",
        ),
    ],
)
async def test_deepseek_refusals(
    ds_client: httpx.AsyncClient, extra: dict[str, Any], status: int, fragment: str
) -> None:
    response = await chat(ds_client, **extra)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == "invalid_request_error"
    assert fragment in error["message"]


async def test_json_object_mode_is_supported(ds_client: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "answer in json"}]
    body = (
        await chat(ds_client, messages=messages, response_format={"type": "json_object"})
    ).json()
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)
