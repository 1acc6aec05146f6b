"""Gemini emulator: the cachedContents resource and its use in generateContent
(providers.md §3.5-3.7), with time moved by a ManualClock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from google.genai import types

from adapters.clock import ManualClock
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.server import create_app

KEY = {"x-goog-api-key": "test-key"}
FLASH = "/v1beta/models/gemini-2.5-flash"
PRO = "/v1beta/models/gemini-2.5-pro"
START = "2026-01-01T00:00:00.000000Z"
# 4,400 characters: 1,100 tokens at four characters a token, above flash's 1,024.
BOOK = "lorem ipsum dolor sit amet " * 163
SHAPE = (
    "CachedContent can not be used with GenerateContent request setting system_instruction, "
    "tools or tool_config. Proposed fix: move those values to CachedContent from "
    "GenerateContent request."
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    config = GeminiEmulatorConfig(
        cache_min_tokens={"gemini-2.5-flash": 1024, "gemini-2.5-pro": 2048}
    )
    app = create_app(config, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gemini", headers=KEY) as c:
        yield c


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def cache_body(model: str = "models/gemini-2.5-flash", **extra: Any) -> dict[str, Any]:
    return {"model": model, "contents": [user(BOOK)], **extra}


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1beta/cachedContents", json=body)
    assert response.status_code == 200, response.text
    resource: dict[str, Any] = response.json()
    types.CachedContent.model_validate(resource)
    return resource


async def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}[status]
    return str(error["message"])


# -- create / get --------------------------------------------------------------------------


async def test_create_hides_inputs_and_defaults_to_one_hour(client: httpx.AsyncClient) -> None:
    resource = await create(
        client,
        cache_body(
            displayName="my book",
            systemInstruction={"parts": [{"text": "You are a librarian."}]},
            tools=[{"functionDeclarations": [{"name": "lookup"}]}],
        ),
    )
    assert resource["name"].startswith("cachedContents/")
    assert resource["model"] == "models/gemini-2.5-flash"
    assert resource["displayName"] == "my book"
    assert resource["createTime"] == resource["updateTime"] == START
    assert resource["expireTime"] == "2026-01-01T01:00:00.000000Z"
    assert resource["usageMetadata"]["totalTokenCount"] > 1100
    assert not {"contents", "systemInstruction", "tools", "toolConfig", "ttl"} & set(resource)
    fetched = await client.get(f"/v1beta/{resource['name']}")
    assert fetched.json() == resource


async def test_ttl_and_expire_time(client: httpx.AsyncClient) -> None:
    short = await create(client, cache_body(ttl="3.5s"))
    assert short["expireTime"] == "2026-01-01T00:00:03.500000Z"
    fixed = await create(client, cache_body(expire_time="2026-01-02T10:00:00+02:00"))
    assert fixed["expireTime"] == "2026-01-02T08:00:00.000000Z"


async def test_too_small_names_both_counts(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1beta/cachedContents",
        json={"model": "models/gemini-2.5-flash", "contents": [user("x" * 3580)]},
    )
    message = await error_of(response, 400)
    assert message == (
        "Cached content is too small. total_token_count=895, min_total_token_count=1024"
    )


async def test_minimum_is_per_model(client: httpx.AsyncClient) -> None:
    await create(client, cache_body("models/gemini-2.5-flash"))
    response = await client.post("/v1beta/cachedContents", json=cache_body("models/gemini-2.5-pro"))
    assert "min_total_token_count=2048" in await error_of(response, 400)


async def test_minimum_comes_from_config(clock: ManualClock) -> None:
    config = GeminiEmulatorConfig(cache_min_tokens={"gemini-2.5-flash": 4096})
    assert config.min_cache_tokens("gemini-2.5-pro") == 2048  # overrides merge over defaults
    assert config.min_cache_tokens("gemini-9") == config.default_cache_min_tokens
    transport = httpx.ASGITransport(app=create_app(config, clock=clock))
    async with httpx.AsyncClient(transport=transport, base_url="http://g", headers=KEY) as c:
        response = await c.post("/v1beta/cachedContents", json=cache_body())
        assert "min_total_token_count=4096" in await error_of(response, 400)


BAD_CREATES: list[tuple[str, dict[str, Any], int, str]] = [
    ("no model", {"contents": [user(BOOK)]}, 400, "model is required"),
    ("bare model id", cache_body("gemini-2.5-flash"), 400, "models/"),
    ("unknown model", cache_body("models/gemini-0"), 404, "not found"),
    ("embedding model", cache_body("models/text-embedding-004"), 404, "createCachedContent"),
    ("long display name", cache_body(displayName="x" * 129), 400, "128"),
    ("ttl and expireTime", cache_body(ttl="60s", expireTime="2026-01-02T00:00:00Z"), 400, "Oneof"),
    ("bad ttl", cache_body(ttl="1h"), 400, "google.protobuf.Duration"),
    ("negative ttl", cache_body(ttl="-5s"), 400, "google.protobuf.Duration"),
    ("bad expireTime", cache_body(expireTime="tomorrow"), 400, "Timestamp"),
    ("past expireTime", cache_body(expireTime="2025-01-01T00:00:00Z"), 400, "future"),
    ("bad role", cache_body(contents=[{"role": "bot", "parts": [{"text": BOOK}]}]), 400, "role"),
    ("unknown field", cache_body(ttlSeconds=5), 400, 'Unknown name "ttlSeconds"'),
]


@pytest.mark.parametrize(
    ("body", "status", "needle"), [c[1:] for c in BAD_CREATES], ids=[c[0] for c in BAD_CREATES]
)
async def test_bad_creates(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, needle: str
) -> None:
    response = await client.post("/v1beta/cachedContents", json=body)
    assert needle in await error_of(response, status)


# -- list / delete -------------------------------------------------------------------------


async def test_list_pages_and_omits_the_last_token(client: httpx.AsyncClient) -> None:
    empty = await client.get("/v1beta/cachedContents")
    assert empty.json() == {}
    names = [(await create(client, cache_body()))["name"] for _ in range(5)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params: dict[str, Any] = {"pageSize": 2}
        if token:
            params["pageToken"] = token
        page = (await client.get("/v1beta/cachedContents", params=params)).json()
        types.ListCachedContentsResponse.model_validate(page)
        seen += [c["name"] for c in page["cachedContents"]]
        assert all("contents" not in c for c in page["cachedContents"])
        pages += 1
        token = page.get("nextPageToken")
        if token is None:
            break
    assert seen == names
    assert pages == 3
    big = await client.get("/v1beta/cachedContents", params={"pageSize": 5000})
    assert len(big.json()["cachedContents"]) == 5
    assert "nextPageToken" not in big.json()
    bad = await client.get("/v1beta/cachedContents", params={"pageToken": "garbage!"})
    await error_of(bad, 400)


async def test_delete_returns_empty_object(client: httpx.AsyncClient) -> None:
    name = (await create(client, cache_body()))["name"]
    deleted = await client.delete(f"/v1beta/{name}")
    assert deleted.status_code == 200
    assert deleted.json() == {}
    await error_of(await client.get(f"/v1beta/{name}"), 404)
    await error_of(await client.delete(f"/v1beta/{name}"), 404)


# -- patch ---------------------------------------------------------------------------------


async def test_patch_ttl_with_and_without_mask(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    name = (await create(client, cache_body()))["name"]
    clock.advance(60)
    masked = await client.patch(f"/v1beta/{name}?updateMask=ttl", json={"ttl": "600s"})
    assert masked.status_code == 200, masked.text
    assert masked.json()["updateTime"] == "2026-01-01T00:01:00.000000Z"
    assert masked.json()["expireTime"] == "2026-01-01T00:11:00.000000Z"
    assert masked.json()["createTime"] == START
    # The SDK sends no updateMask; the fields present in the body are the mask.
    unmasked = await client.patch(f"/v1beta/{name}", json={"expireTime": "2026-01-03T00:00:00Z"})
    assert unmasked.json()["expireTime"] == "2026-01-03T00:00:00.000000Z"
    snake = await client.patch(
        f"/v1beta/{name}?updateMask=expire_time", json={"expire_time": "2026-01-04T00:00:00Z"}
    )
    assert snake.json()["expireTime"] == "2026-01-04T00:00:00.000000Z"


PATCHES: list[tuple[str, str, dict[str, Any]]] = [
    ("display name", "", {"displayName": "renamed"}),
    ("masked display name", "?updateMask=displayName", {"displayName": "renamed"}),
    ("model", "?updateMask=model", {"model": "models/gemini-2.5-pro"}),
    ("contents beside ttl", "", {"ttl": "60s", "contents": [user("more")]}),
    ("masked ttl without ttl", "?updateMask=ttl", {}),
    ("nothing", "", {}),
    ("bad ttl", "?updateMask=ttl", {"ttl": "soon"}),
]


@pytest.mark.parametrize(("query", "body"), [p[1:] for p in PATCHES], ids=[p[0] for p in PATCHES])
async def test_only_the_expiration_can_be_patched(
    client: httpx.AsyncClient, query: str, body: dict[str, Any]
) -> None:
    resource = await create(client, cache_body(displayName="original"))
    response = await client.patch(f"/v1beta/{resource['name']}{query}", json=body)
    await error_of(response, 400)
    after = (await client.get(f"/v1beta/{resource['name']}")).json()
    assert after == resource


# -- expiry --------------------------------------------------------------------------------


async def test_expiry_on_the_clock_deletes_the_cache(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    name = (await create(client, cache_body(ttl="120s")))["name"]
    keeper = (await create(client, cache_body()))["name"]
    clock.advance(119.9)
    assert (await client.get(f"/v1beta/{name}")).status_code == 200
    clock.advance(0.1)
    assert name in await error_of(await client.get(f"/v1beta/{name}"), 404)
    listed = (await client.get("/v1beta/cachedContents")).json()
    assert [c["name"] for c in listed["cachedContents"]] == [keeper]
    used = await client.post(
        f"{FLASH}:generateContent", json={"cachedContent": name, "contents": [user("q")]}
    )
    assert name in await error_of(used, 404)


async def test_expiry_through_the_control_route(client: httpx.AsyncClient) -> None:
    name = (await create(client, cache_body(ttl="10s")))["name"]
    moved = await client.post("/_emulator/clock", json={"advance": 10})
    assert moved.status_code == 200
    await error_of(await client.get(f"/v1beta/{name}"), 404)


async def test_patched_ttl_extends_life(client: httpx.AsyncClient, clock: ManualClock) -> None:
    name = (await create(client, cache_body(ttl="10s")))["name"]
    await client.patch(f"/v1beta/{name}", json={"ttl": "100s"})
    clock.advance(50)
    assert (await client.get(f"/v1beta/{name}")).status_code == 200


# -- using a cache -------------------------------------------------------------------------


async def test_cache_is_a_prefix_and_counts_in_usage(client: httpx.AsyncClient) -> None:
    system = {"parts": [{"text": "Answer from the book."}]}
    resource = await create(client, cache_body(systemInstruction=system))
    size = resource["usageMetadata"]["totalTokenCount"]
    question = [user("What is on page one?")]
    cached = await client.post(
        f"{FLASH}:generateContent",
        json={"cachedContent": resource["name"], "contents": question},
    )
    assert cached.status_code == 200, cached.text
    types.GenerateContentResponse.model_validate(cached.json())
    plain = await client.post(
        f"{FLASH}:generateContent",
        json={"systemInstruction": system, "contents": [user(BOOK), *question]},
    )
    usage = cached.json()["usageMetadata"]
    assert usage["cachedContentTokenCount"] == size
    assert usage["promptTokenCount"] == plain.json()["usageMetadata"]["promptTokenCount"]
    assert usage["promptTokenCount"] == size + 5  # the question is 20 characters
    assert usage["cacheTokensDetails"] == [{"modality": "TEXT", "tokenCount": size}]
    assert "cachedContentTokenCount" not in plain.json()["usageMetadata"]
    # Same effective prompt, same reply: the cached contents really are the prefix.
    assert cached.json()["candidates"] == plain.json()["candidates"]


async def test_cache_with_contents_needs_no_request_contents(client: httpx.AsyncClient) -> None:
    name = (await create(client, cache_body()))["name"]
    response = await client.post(f"{FLASH}:generateContent", json={"cachedContent": name})
    assert response.status_code == 200, response.text
    only_system = await create(
        client,
        {"model": "models/gemini-2.5-flash", "systemInstruction": {"parts": [{"text": BOOK}]}},
    )
    empty = await client.post(
        f"{FLASH}:generateContent", json={"cachedContent": only_system["name"]}
    )
    assert "contents is not specified" in await error_of(empty, 400)


async def test_cached_tools_drive_function_calls(client: httpx.AsyncClient) -> None:
    tools = [{"functionDeclarations": [{"name": "lookup", "parameters": {"type": "OBJECT"}}]}]
    name = (await create(client, cache_body(tools=tools)))["name"]
    response = await client.post(
        f"{FLASH}:generateContent", json={"cachedContent": name, "contents": [user("find it")]}
    )
    parts = response.json()["candidates"][0]["content"]["parts"]
    assert parts[0]["functionCall"]["name"] == "lookup"


async def test_cache_is_bound_to_its_model(client: httpx.AsyncClient) -> None:
    name = (await create(client, cache_body()))["name"]
    response = await client.post(
        f"{PRO}:generateContent", json={"cachedContent": name, "contents": [user("q")]}
    )
    message = await error_of(response, 400)
    assert "models/gemini-2.5-pro" in message
    assert "models/gemini-2.5-flash" in message


@pytest.mark.parametrize(
    "extra",
    [
        {"systemInstruction": {"parts": [{"text": "be brief"}]}},
        {"system_instruction": {"parts": [{"text": "be brief"}]}},
        {"tools": [{"functionDeclarations": [{"name": "f"}]}]},
        {"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}},
    ],
    ids=["systemInstruction", "system_instruction", "tools", "toolConfig"],
)
async def test_request_may_not_set_system_or_tools_with_a_cache(
    client: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    name = (await create(client, cache_body()))["name"]
    response = await client.post(
        f"{FLASH}:generateContent",
        json={"cachedContent": name, "contents": [user("q")], **extra},
    )
    assert await error_of(response, 400) == SHAPE


async def test_generation_config_is_allowed_with_a_cache(client: httpx.AsyncClient) -> None:
    name = (await create(client, cache_body()))["name"]
    response = await client.post(
        f"{FLASH}:generateContent",
        json={
            "cachedContent": name,
            "contents": [user("q")],
            "generationConfig": {"temperature": 0.2, "maxOutputTokens": 500},
        },
    )
    assert response.status_code == 200, response.text


async def test_unknown_cache_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{FLASH}:generateContent",
        json={"cachedContent": "cachedContents/doesnotexist", "contents": [user("q")]},
    )
    assert "cachedContents/doesnotexist" in await error_of(response, 404)


async def test_streaming_with_a_cache_reports_cached_tokens(client: httpx.AsyncClient) -> None:
    resource = await create(client, cache_body())
    response = await client.post(
        f"{FLASH}:streamGenerateContent?alt=sse",
        json={"cachedContent": resource["name"], "contents": [user("q")]},
    )
    assert response.status_code == 200
    assert response.text.count('"cachedContentTokenCount": ') >= 2
    size = resource["usageMetadata"]["totalTokenCount"]
    assert f'"cachedContentTokenCount": {size}' in response.text


async def test_count_tokens_with_a_cache(client: httpx.AsyncClient) -> None:
    resource = await create(client, cache_body())
    counted = await client.post(
        f"{FLASH}:countTokens",
        json={
            "generateContentRequest": {
                "model": "models/gemini-2.5-flash",
                "cachedContent": resource["name"],
                "contents": [user("What is on page one?")],
            }
        },
    )
    body = counted.json()
    assert body["cachedContentTokenCount"] == resource["usageMetadata"]["totalTokenCount"]
    assert body["totalTokens"] == body["cachedContentTokenCount"] + 5


def test_times_are_rfc3339() -> None:
    parsed = datetime.strptime(START, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert parsed.timestamp() == ManualClock().now()
