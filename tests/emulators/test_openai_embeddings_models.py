"""Embeddings (float and base64, through the SDK and raw) and the models endpoints."""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse, Model
from openai.types.model import Model as ModelType

from adapters.clock import ManualClock
from adapters.emulators.tokens import count_text
from tests.emulators.conftest import AUTH
from tests.sdk_checks import strict

URL = "/v1/embeddings"
SMALL = "text-embedding-3-small"


async def embed(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(URL, json={"model": SMALL, **body}, headers=AUTH)


async def test_sdk_default_base64_and_float_agree(sdk: openai.AsyncOpenAI) -> None:
    # The SDK asks for base64 by default and decodes little-endian float32 itself.
    decoded = await sdk.embeddings.create(model=SMALL, input=["alpha", "beta"])
    floats = await sdk.embeddings.create(
        model=SMALL, input=["alpha", "beta"], encoding_format="float"
    )
    strict(CreateEmbeddingResponse, floats.model_dump(mode="json", exclude_unset=True))
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 1536
    for a, b in zip(decoded.data[0].embedding, floats.data[0].embedding, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    assert floats.data[0].embedding != floats.data[1].embedding
    norm = sum(v * v for v in floats.data[0].embedding) ** 0.5
    assert norm == pytest.approx(1.0, abs=1e-3)
    assert floats.usage.prompt_tokens == count_text("alpha") + count_text("beta")
    assert floats.usage.total_tokens == floats.usage.prompt_tokens


async def test_raw_base64_is_little_endian_float32(client: httpx.AsyncClient) -> None:
    raw = (await embed(client, input="hello", encoding_format="base64", dimensions=8)).json()
    floats = (await embed(client, input="hello", dimensions=8)).json()
    blob = base64.b64decode(raw["data"][0]["embedding"])
    assert len(blob) == 8 * 4
    unpacked = struct.unpack("<8f", blob)
    assert unpacked == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)
    strict(CreateEmbeddingResponse, floats)


async def test_token_inputs_and_dimensions(sdk: openai.AsyncOpenAI) -> None:
    reply = await sdk.embeddings.create(
        model="text-embedding-3-large",
        input=[[1, 2, 3], [4, 5]],
        dimensions=256,
        encoding_format="float",
    )
    assert [len(d.embedding) for d in reply.data] == [256, 256]
    assert reply.usage.prompt_tokens == 5
    single = await sdk.embeddings.create(model=SMALL, input=[7, 8, 9], encoding_format="float")
    assert len(single.data) == 1
    assert single.usage.prompt_tokens == 3


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"input": ""}, 400, "'$.input' is invalid"),
        ({"input": []}, 400, "'$.input' is invalid"),
        ({"input": ["ok", ""]}, 400, "'$.input' is invalid"),
        ({"input": [[]]}, 400, "'$.input' is invalid"),
        ({"input": {"text": "x"}}, 400, "'$.input' is invalid"),
        ({}, 400, "Missing required parameter: 'input'"),
        (
            {"input": "x", "encoding_format": "int8"},
            400,
            "Supported values are: 'float' and 'base64'",
        ),
        ({"input": "x", "dimensions": 0}, 400, "between 1 and 1536"),
        ({"input": "x", "dimensions": 4096}, 400, "between 1 and 1536"),
        (
            {"input": "x", "model": "text-embedding-ada-002", "dimensions": 8},
            400,
            "does not support specifying",
        ),
        ({"input": "x", "model": "gpt-4o"}, 400, "does not support embeddings"),
        ({"input": "x", "model": "embed-9"}, 404, "does not exist"),
    ],
)
async def test_embedding_errors(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, fragment: str
) -> None:
    response = await client.post(URL, json={"model": SMALL, **body}, headers=AUTH)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


async def test_sdk_empty_input_is_a_bad_request(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        await sdk.embeddings.create(model=SMALL, input="")


async def test_models_list_and_retrieve(sdk: openai.AsyncOpenAI) -> None:
    page = await sdk.models.list()
    ids = [m.id for m in page.data]
    assert "gpt-4o" in ids
    assert SMALL in ids
    for model in page.data:
        strict(Model, model.model_dump(mode="json", exclude_unset=True))
        assert model.object == "model"
        assert model.owned_by == "system"
    one = await sdk.models.retrieve("gpt-4o-mini")
    assert isinstance(one, ModelType)
    assert one.id == "gpt-4o-mini"
    assert one.created == (await sdk.models.retrieve("gpt-4o-mini")).created
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.models.retrieve("gpt-0")
    assert info.value.code == "model_not_found"


async def test_models_come_from_config(make_app: Any, clock: ManualClock) -> None:
    app = make_app(models=("gpt-4o-mini", "my-fine-tune:ft-1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        listed = (await c.get("/v1/models", headers=AUTH)).json()
        assert listed["object"] == "list"
        assert [m["id"] for m in listed["data"]] == ["gpt-4o-mini", "my-fine-tune:ft-1"]
        found = await c.get("/v1/models/my-fine-tune:ft-1", headers=AUTH)
        assert found.status_code == 200
        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
        assert (await c.post("/v1/chat/completions", json=chat, headers=AUTH)).status_code == 404
