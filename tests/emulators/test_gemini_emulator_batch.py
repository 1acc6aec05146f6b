"""Gemini emulator: Batch Mode with inline requests (providers.md §3.12), on a ManualClock,
over httpx and through the google-genai SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import types

from adapters.clock import ManualClock
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.server import create_app
from tests.support import ServerThread, serve

pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)
KEY = {"x-goog-api-key": "k"}
CREATE = "/v1beta/models/gemini-2.5-flash:batchGenerateContent"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def inline(*requests: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    items = [{"request": request, "metadata": {"key": key}} for key, request in requests]
    return {
        "batch": {
            "displayName": "nightly",
            "inputConfig": {"requests": {"requests": items}},
        }
    }


GOOD = ("good", {"contents": [user("summarise the night")]})
BAD = ("bad", {"contents": [{"role": "robot", "parts": [{"text": "x"}]}]})
BLOCKED = ("blocked", {"contents": [user("[emulator:block]")]})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make_client(config: GeminiEmulatorConfig, clock: ManualClock) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(config, clock=clock))
    return httpx.AsyncClient(transport=transport, base_url="http://gemini", headers=KEY)


@pytest.fixture
async def client(clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(GeminiEmulatorConfig(), clock) as c:
        yield c


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(CREATE, json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


async def fetch(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.get(f"/v1beta/{name}")
    assert response.status_code == 200, response.text
    fetched: dict[str, Any] = response.json()
    return fetched


async def test_lifecycle_on_the_clock(client: httpx.AsyncClient, clock: ManualClock) -> None:
    created = await create(client, inline(GOOD, BAD, BLOCKED))
    name = created["name"]
    assert name.startswith("batches/")
    meta = created["metadata"]
    assert meta["@type"].endswith("GenerateContentBatch")
    assert meta["state"] == "BATCH_STATE_PENDING"
    assert meta["model"] == "models/gemini-2.5-flash"
    assert meta["displayName"] == "nightly"
    assert meta["batchStats"] == {"requestCount": "3", "pendingRequestCount": "3"}
    assert "done" not in created

    clock.advance(5)
    assert (await fetch(client, name))["metadata"]["state"] == "BATCH_STATE_RUNNING"
    clock.advance(54.9)
    assert (await fetch(client, name))["metadata"]["state"] == "BATCH_STATE_RUNNING"
    clock.advance(0.1)
    done = await fetch(client, name)
    meta = done["metadata"]
    assert done["done"] is True
    assert meta["state"] == "BATCH_STATE_SUCCEEDED"
    assert meta["endTime"] == "2026-01-01T00:01:00.000000Z"
    assert meta["batchStats"] == {
        "requestCount": "3",
        "successfulRequestCount": "2",
        "failedRequestCount": "1",
    }
    lines = meta["output"]["inlinedResponses"]["inlinedResponses"]
    assert done["response"]["inlinedResponses"]["inlinedResponses"] == lines
    assert [line["metadata"]["key"] for line in lines] == ["good", "bad", "blocked"]
    good, bad, blocked = lines
    types.GenerateContentResponse.model_validate(good["response"])
    assert bad["error"]["code"] == 3  # google.rpc.Code INVALID_ARGUMENT, not HTTP 400
    assert "valid role" in bad["error"]["message"]
    assert blocked["response"]["promptFeedback"]["blockReason"] == "SAFETY"

    direct = await client.post("/v1beta/models/gemini-2.5-flash:generateContent", json=GOOD[1])
    assert good["response"]["candidates"] == direct.json()["candidates"]
    assert good["response"]["usageMetadata"] == direct.json()["usageMetadata"]


async def test_cancel_and_delete(client: httpx.AsyncClient, clock: ManualClock) -> None:
    name = (await create(client, inline(GOOD)))["name"]
    cancelled = await client.post(f"/v1beta/{name}:cancel")
    assert cancelled.status_code == 200
    assert cancelled.json() == {}
    after = await fetch(client, name)
    assert after["metadata"]["state"] == "BATCH_STATE_CANCELLED"
    assert after["done"] is True
    clock.advance(3600)
    assert (await fetch(client, name))["metadata"]["state"] == "BATCH_STATE_CANCELLED"
    again = await client.post(f"/v1beta/{name}:cancel")
    assert again.status_code == 400
    assert again.json()["error"]["status"] == "FAILED_PRECONDITION"
    assert (await client.delete(f"/v1beta/{name}")).json() == {}
    missing = await client.get(f"/v1beta/{name}")
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == "NOT_FOUND"


async def test_unfinished_batches_expire(clock: ManualClock) -> None:
    config = GeminiEmulatorConfig(batch_complete_after=None)
    async with make_client(config, clock) as c:
        name = (await create(c, inline(GOOD)))["name"]
        clock.advance(47 * 3600)
        assert (await fetch(c, name))["metadata"]["state"] == "BATCH_STATE_RUNNING"
        clock.advance(3600)
        expired = await fetch(c, name)
        assert expired["metadata"]["state"] == "BATCH_STATE_EXPIRED"
        assert "output" not in expired["metadata"]


async def test_list_is_newest_first_and_paged(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1beta/batches")).json() == {}
    names = [(await create(client, inline(GOOD)))["name"] for _ in range(3)]
    first = (await client.get("/v1beta/batches", params={"pageSize": 2})).json()
    second = (
        await client.get("/v1beta/batches", params={"pageToken": first["nextPageToken"]})
    ).json()
    listed = [op["name"] for op in first["operations"] + second["operations"]]
    assert listed == names[::-1]
    assert "nextPageToken" not in second


BAD_CREATES: list[tuple[str, str, Any, int]] = [
    # An input file that does not exist: 404 NOT_FOUND (the real status is unverified).
    ("missing input file", CREATE, {"batch": {"inputConfig": {"fileName": "files/x"}}}, 404),
    ("no requests", CREATE, {"batch": {"inputConfig": {"requests": {"requests": []}}}}, 400),
    ("no batch", CREATE, {}, 400),
    (
        "other model",
        CREATE,
        inline(("a", {"model": "models/gemini-2.5-pro", "contents": [user("x")]})),
        400,
    ),
    ("unknown model", "/v1beta/models/gemini-0:batchGenerateContent", inline(GOOD), 404),
]


@pytest.mark.parametrize(
    ("path", "body", "status"), [c[1:] for c in BAD_CREATES], ids=[c[0] for c in BAD_CREATES]
)
async def test_bad_creates(client: httpx.AsyncClient, path: str, body: Any, status: int) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text


async def test_inline_size_limit(clock: ManualClock) -> None:
    async with make_client(GeminiEmulatorConfig(max_inline_batch_bytes=1000), clock) as c:
        response = await c.post(CREATE, json=inline(("big", {"contents": [user("x" * 2000)]})))
        assert response.status_code == 400
        assert "payload size exceeds the limit: 1000 bytes" in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with serve(create_app(clock=ManualClock())) as running:
        yield running


async def test_sdk_batch_round_trip(server: ServerThread) -> None:
    options = types.HttpOptions(base_url=server.url, api_version="v1beta")
    sdk = genai.Client(api_key="k", http_options=options)
    job = await sdk.aio.batches.create(
        model="gemini-2.5-flash",
        src=[
            {
                "contents": [{"role": "user", "parts": [{"text": "first"}]}],
                "metadata": {"key": "1"},
            },
            {
                "contents": [{"role": "user", "parts": [{"text": "second"}]}],
                "metadata": {"key": "2"},
            },
        ],
        config={"display_name": "sdk batch"},
    )
    assert job.name
    assert job.state == types.JobState.JOB_STATE_PENDING
    server.app.state.clock.advance(60)
    done = await sdk.aio.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.display_name == "sdk batch"
    assert done.dest is not None
    assert done.dest.inlined_responses is not None
    replies = done.dest.inlined_responses
    assert [r.metadata for r in replies] == [{"key": "1"}, {"key": "2"}]
    assert all(r.response is not None and r.response.text for r in replies)
    names = [j.name async for j in await sdk.aio.batches.list()]
    assert job.name in names
    await sdk.aio.batches.delete(name=job.name)
    await sdk.aio.aclose()


async def test_sdk_file_batch_round_trip(server: ServerThread, tmp_path: Any) -> None:
    """client.files.upload (resumable protocol), client.batches.create from the file,
    then client.files.download of the responses file."""
    options = types.HttpOptions(base_url=server.url, api_version="v1beta")
    sdk = genai.Client(api_key="k", http_options=options)
    lines = [
        {"key": "a", "request": {"contents": [user("first")]}},
        {"key": "b", "request": {"contents": [{"role": "robot", "parts": [{"text": "x"}]}]}},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    uploaded = await sdk.aio.files.upload(
        file=str(path), config={"display_name": "nightly input", "mime_type": "jsonl"}
    )
    assert uploaded.name is not None
    assert uploaded.name.startswith("files/")
    assert uploaded.size_bytes == path.stat().st_size
    job = await sdk.aio.batches.create(model="gemini-2.5-flash", src=uploaded.name)
    assert job.name is not None
    server.app.state.clock.advance(60)
    done = await sdk.aio.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.dest is not None
    assert done.dest.file_name is not None
    content = await sdk.aio.files.download(file=done.dest.file_name)
    results = [json.loads(line) for line in content.decode().splitlines()]
    assert [r["key"] for r in results] == ["a", "b"]  # input order
    types.GenerateContentResponse.model_validate(results[0]["response"])
    assert results[1]["error"]["code"] == 3
    await sdk.aio.aclose()


async def test_resumable_upload_protocol_and_both_download_paths(
    client: httpx.AsyncClient,
) -> None:
    data = b'{"key":"k1","request":{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}}\n'
    start = await client.post(
        "/upload/v1beta/files",
        json={"file": {"displayName": "x"}},
        headers={"x-goog-upload-protocol": "resumable", "x-goog-upload-command": "start",
                 "x-goog-upload-header-content-length": str(len(data)),
                 "x-goog-upload-header-content-type": "application/jsonl"},
    )  # fmt: skip
    assert start.status_code == 200, start.text
    url = start.headers["x-goog-upload-url"]
    wrong = await client.post(
        url, content=data[:10], headers={"x-goog-upload-command": "upload",
                                         "x-goog-upload-offset": "5"},
    )  # fmt: skip
    assert wrong.status_code == 400
    first = await client.post(
        url, content=data[:10], headers={"x-goog-upload-command": "upload",
                                         "x-goog-upload-offset": "0"},
    )  # fmt: skip
    assert first.headers["x-goog-upload-status"] == "active"
    last = await client.post(
        url, content=data[10:], headers={"x-goog-upload-command": "upload, finalize",
                                         "x-goog-upload-offset": "10"},
    )  # fmt: skip
    assert last.headers["x-goog-upload-status"] == "final"
    name = last.json()["file"]["name"]
    assert last.json()["file"]["sizeBytes"] == str(len(data))
    for path in (f"/v1beta/{name}:download", f"/download/v1beta/{name}:download"):
        got = await client.get(path, params={"alt": "media"})
        assert got.content == data


async def test_create_beyond_the_batch_quota_is_429_resource_exhausted(
    clock: ManualClock,
) -> None:
    async with make_client(GeminiEmulatorConfig(max_live_batches=1), clock) as c:
        await create(c, inline(GOOD))
        refused = await c.post(CREATE, json=inline(GOOD))
        assert refused.status_code == 429
        assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
        clock.advance(61)  # the first batch ends: room again
        await create(c, inline(GOOD))
