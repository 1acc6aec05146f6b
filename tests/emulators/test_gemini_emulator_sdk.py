"""The official google-genai SDK against the Gemini emulator under uvicorn: if the SDK can
drive it end to end, our wire format is the one real clients expect."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel

from adapters.clock import ManualClock
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.server import create_app
from tests.support import ServerThread, serve

# The SDK subclasses aiohttp's ClientSession, which aiohttp warns about from the SDK's module.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)
MODEL = "gemini-2.5-flash"
BOOK = "lorem ipsum dolor sit amet " * 163


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    config = GeminiEmulatorConfig(api_keys=frozenset({"sdk-key"}))
    with serve(create_app(config, clock=ManualClock())) as running:
        yield running


@pytest.fixture(params=["aiohttp-v1", "httpx-v1beta"])
async def client(
    server: ServerThread, request: pytest.FixtureRequest
) -> AsyncIterator[genai.Client]:
    """The SDK over both of its async transports, which parse SSE differently: aiohttp
    (its default when installed) on the SDK's default API version (``v1`` since 3.x),
    and httpx on ``v1beta``, the version the proxy's adapter calls."""
    server.app.state.faults.clear()
    server.app.state.requests.clear()
    transport, version = request.param.split("-")
    async with httpx.AsyncClient(timeout=10) as http:
        options = types.HttpOptions(
            base_url=server.url,
            timeout=10_000,
            api_version=None if version == "v1" else version,
            httpx_async_client=http if transport == "httpx" else None,
        )
        sdk = genai.Client(api_key="sdk-key", http_options=options)
        yield sdk
        await sdk.aio.aclose()
        paths = {r["path"].split("/")[1] for r in server.app.state.requests}
        assert paths == {version}


async def test_generate_content(client: genai.Client) -> None:
    response = await client.aio.models.generate_content(
        model=MODEL,
        contents="Hello from the SDK",
        config=types.GenerateContentConfig(system_instruction="Be brief.", temperature=0.3),
    )
    assert response.text
    usage = response.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count
    assert usage.candidates_token_count
    assert usage.thoughts_token_count
    assert usage.cached_content_token_count is None
    assert response.candidates
    assert response.candidates[0].finish_reason == types.FinishReason.STOP


async def test_stream(client: genai.Client) -> None:
    chunks = [
        chunk
        async for chunk in await client.aio.models.generate_content_stream(
            model=MODEL, contents="Stream to the SDK"
        )
    ]
    assert len(chunks) >= 3
    whole = await client.aio.models.generate_content(model=MODEL, contents="Stream to the SDK")
    assert "".join(c.text or "" for c in chunks) == whole.text
    last = chunks[-1]
    assert last.usage_metadata == whole.usage_metadata
    assert last.candidates
    assert last.candidates[0].finish_reason == types.FinishReason.STOP


async def test_function_calling(client: genai.Client) -> None:
    declaration = types.FunctionDeclaration(
        name="get_weather",
        description="Weather in a city",
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={"city": types.Schema(type=types.Type.STRING)},
            required=["city"],
        ),
    )
    response = await client.aio.models.generate_content(
        model=MODEL,
        contents="What is the weather in Oslo?",
        config=types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[declaration])],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        ),
    )
    calls = response.function_calls
    assert calls is not None
    assert calls[0].name == "get_weather"
    assert calls[0].args is not None
    assert isinstance(calls[0].args["city"], str)


class Recipe(BaseModel):
    name: str
    minutes: int
    steps: list[str]


async def test_json_mode_parses_into_the_schema(client: genai.Client) -> None:
    response = await client.aio.models.generate_content(
        model=MODEL,
        contents="A recipe",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_schema=Recipe
        ),
    )
    assert isinstance(response.parsed, Recipe)
    assert response.parsed.steps


async def test_cache_lifecycle(client: genai.Client) -> None:
    cache = await client.aio.caches.create(
        model=MODEL,
        config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=BOOK)])],
            system_instruction="Answer from the book.",
            display_name="sdk book",
            ttl="300s",
        ),
    )
    assert cache.name
    assert cache.name.startswith("cachedContents/")
    assert cache.model == "models/gemini-2.5-flash"
    assert cache.usage_metadata
    assert cache.usage_metadata.total_token_count
    assert cache.expire_time
    assert cache.create_time
    assert (cache.expire_time - cache.create_time).total_seconds() == 300

    fetched = await client.aio.caches.get(name=cache.name)
    assert fetched.display_name == "sdk book"
    names = [c.name async for c in await client.aio.caches.list(config={"page_size": 1})]
    assert cache.name in names

    updated = await client.aio.caches.update(
        name=cache.name, config=types.UpdateCachedContentConfig(ttl="900s")
    )
    assert updated.expire_time
    assert updated.update_time
    assert (updated.expire_time - updated.update_time).total_seconds() == 900

    response = await client.aio.models.generate_content(
        model=MODEL,
        contents="What does the book say?",
        config=types.GenerateContentConfig(cached_content=cache.name),
    )
    usage = response.usage_metadata
    assert usage
    assert usage.cached_content_token_count == cache.usage_metadata.total_token_count
    assert usage.prompt_token_count
    assert usage.prompt_token_count > usage.cached_content_token_count

    with pytest.raises(errors.ClientError) as refused:
        await client.aio.models.generate_content(
            model=MODEL,
            contents="Again",
            config=types.GenerateContentConfig(
                cached_content=cache.name, system_instruction="override"
            ),
        )
    assert refused.value.code == 400
    assert refused.value.status == "INVALID_ARGUMENT"
    assert refused.value.message
    assert "CachedContent can not be used" in refused.value.message

    await client.aio.caches.delete(name=cache.name)
    with pytest.raises(errors.ClientError) as gone:
        await client.aio.caches.get(name=cache.name)
    assert gone.value.code == 404
    assert gone.value.status == "NOT_FOUND"


async def test_cache_too_small_is_a_client_error(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as refused:
        await client.aio.caches.create(
            model=MODEL,
            config=types.CreateCachedContentConfig(
                contents=[types.Content(role="user", parts=[types.Part(text="short")])]
            ),
        )
    assert refused.value.code == 400
    assert refused.value.message
    assert refused.value.message.startswith("Cached content is too small.")


async def test_errors_reach_the_sdk_as_api_errors(
    client: genai.Client, server: ServerThread
) -> None:
    server.app.state.faults.add(status=503)
    with pytest.raises(errors.ServerError) as unavailable:
        await client.aio.models.generate_content(model=MODEL, contents="hi")
    assert unavailable.value.code == 503
    assert unavailable.value.status == "UNAVAILABLE"

    server.app.state.faults.add(path=":streamGenerateContent", error_after_events=1, status=500)
    with pytest.raises(errors.ServerError) as broken:
        async for _ in await client.aio.models.generate_content_stream(
            model=MODEL, contents="stream then fail"
        ):
            pass
    assert broken.value.code == 500


async def test_wrong_key_is_a_client_error(server: ServerThread) -> None:
    wrong = genai.Client(api_key="nope", http_options=types.HttpOptions(base_url=server.url))
    with pytest.raises(errors.ClientError) as denied:
        await wrong.aio.models.generate_content(model=MODEL, contents="hi")
    await wrong.aio.aclose()
    assert denied.value.code == 400
    assert denied.value.status == "INVALID_ARGUMENT"
    assert denied.value.message == "API key not valid. Please pass a valid API key."


async def test_count_tokens_and_embeddings(client: genai.Client) -> None:
    counted = await client.aio.models.count_tokens(model=MODEL, contents="count me please")
    assert counted.total_tokens == 4
    embedded = await client.aio.models.embed_content(
        model="text-embedding-004", contents=["one", "two"]
    )
    assert embedded.embeddings
    assert len(embedded.embeddings) == 2
    assert embedded.embeddings[0].values
    assert len(embedded.embeddings[0].values) == 768
