"""The OpenAI Files + Batch emulator over HTTP (httpx + ASGITransport), with a ManualClock:
every state transition, every validation failure, both per-line failure shapes, expiry,
cancellation, corruption, pagination and the test controls."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from openai.types import Batch, FileObject
from starlette.applications import Starlette

from adapters.base import BatchStatus
from adapters.clock import ManualClock
from adapters.emulators.openai.batch.emulator import BatchEmulator, BatchEmulatorConfig
from adapters.emulators.openai.batch.state import (
    TRANSITIONS,
    Appender,
    BatchRecord,
    IllegalTransition,
)
from adapters.emulators.tokens import count_messages
from tests.sdk_checks import strict

MODEL = "gpt-4o-mini"
CHAT = "/v1/chat/completions"
START = 1_767_225_600  # ManualClock's default start
DAY = 86_400
TIMINGS: dict[str, Any] = {
    "validation_delay": 2.0,
    "processing_time": 100.0,
    "finalize_delay": 3.0,
    "cancel_delay": 5.0,
}


def execute(endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A stand-in for the real-time endpoint: 400 for prompts starting with FAIL."""
    content = str(body["messages"][-1]["content"])
    if content.startswith("FAIL"):
        error = {
            "message": "bad prompt",
            "type": "invalid_request_error",
            "param": "messages",
            "code": None,
        }
        return 400, {"error": error}
    prompt = count_messages(body["messages"])
    return 200, {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": START,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"echo {content}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": 2,
            "total_tokens": prompt + 2,
            "prompt_tokens_details": {"cached_tokens": 1},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }


def chat_line(
    i: int, *, model: str = MODEL, content: str | None = None, **extra: Any
) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": content or f"hello {i}"}]}
    return {"custom_id": f"req-{i}", "method": "POST", "url": CHAT, "body": body, **extra}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines
    )


def check_batch(data: dict[str, Any]) -> dict[str, Any]:
    assert set(data) == set(Batch.model_fields)  # every field of §2.3, nothing else
    strict(Batch, data)
    return data


def check_file(data: dict[str, Any]) -> dict[str, Any]:
    assert set(data) <= set(FileObject.model_fields)
    strict(FileObject, data)
    return data


@dataclass
class Harness:
    clock: ManualClock
    emu: BatchEmulator
    http: httpx.AsyncClient
    # The model of every line the endpoint answered (not the body: 50,000 of those is a lot).
    calls: list[str] = field(default_factory=list)

    async def upload(self, data: bytes, filename: str = "in.jsonl", purpose: str = "batch") -> str:
        reply = await self.http.post(
            "/v1/files", files={"file": (filename, data)}, data={"purpose": purpose}
        )
        assert reply.status_code == 200, reply.text
        return str(check_file(reply.json())["id"])

    async def create(self, file_id: str, **extra: Any) -> httpx.Response:
        body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **extra}
        return await self.http.post("/v1/batches", json=body)

    async def start(self, lines: list[Any], **extra: Any) -> str:
        reply = await self.create(await self.upload(jsonl(lines)), **extra)
        assert reply.status_code == 200, reply.text
        return str(check_batch(reply.json())["id"])

    async def batch(self, batch_id: str) -> dict[str, Any]:
        reply = await self.http.get(f"/v1/batches/{batch_id}")
        assert reply.status_code == 200, reply.text
        return check_batch(reply.json())

    async def at(self, batch_id: str, offset: float) -> dict[str, Any]:
        """The batch as seen ``offset`` seconds after the test's start."""
        self.clock.set(START + offset)
        return await self.batch(batch_id)

    async def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        assert file_id is not None
        reply = await self.http.get(f"/v1/files/{file_id}/content")
        assert reply.status_code == 200, reply.text
        return [orjson.loads(line) for line in reply.content.splitlines()]


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make() -> AsyncIterator[MakeHarness]:
    made: list[Harness] = []

    async def factory(**config: Any) -> Harness:
        clock = ManualClock(START)
        harness_calls: list[str] = []

        def run(endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            harness_calls.append(body["model"])
            return execute(endpoint, body)

        emu = BatchEmulator(
            clock=clock, execute=run, config=BatchEmulatorConfig(**{**TIMINGS, **config})
        )
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=Starlette(routes=emu.routes())),
            base_url="http://emulator",
            headers={"Authorization": "Bearer sk-test"},
        )
        harness = Harness(clock, emu, http, harness_calls)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.http.aclose()
        harness.emu.close()


@pytest.fixture
async def h(make: MakeHarness) -> Harness:
    return await make()


# -- files ----------------------------------------------------------------------------


async def test_file_lifecycle(h: Harness) -> None:
    data = jsonl([chat_line(i) for i in range(3)])
    reply = await h.http.post(
        "/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
    )
    created = check_file(reply.json())
    assert created == {
        "id": created["id"],
        "object": "file",
        "bytes": len(data),
        "created_at": START,
        "expires_at": START + 30 * DAY,
        "filename": "in.jsonl",
        "purpose": "batch",
        "status": "processed",
        "status_details": None,
    }
    assert created["id"].startswith("file-")
    file_id = created["id"]
    assert check_file((await h.http.get(f"/v1/files/{file_id}")).json()) == created
    content = await h.http.get(f"/v1/files/{file_id}/content")
    assert content.content == data
    listing = (await h.http.get("/v1/files")).json()
    assert [f["id"] for f in listing["data"]] == [file_id]
    deleted = await h.http.delete(f"/v1/files/{file_id}")
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    for reply in (
        await h.http.get(f"/v1/files/{file_id}"),
        await h.http.get(f"/v1/files/{file_id}/content"),
        await h.http.delete(f"/v1/files/{file_id}"),
    ):
        assert reply.status_code == 404
        assert reply.json()["error"] == {
            "message": f"No such File object: {file_id}",
            "type": "invalid_request_error",
            "param": "id",
            "code": None,
        }


async def test_file_expiry(h: Harness) -> None:
    batch_file = await h.upload(b"{}\n")
    other = await h.upload(b"hello", filename="notes.txt", purpose="user_data")
    reply = await h.http.post(
        "/v1/files",
        files={"file": ("short.jsonl", b"{}\n")},
        data={
            "purpose": "batch",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "3600",
        },
    )
    short = check_file(reply.json())
    assert short["expires_at"] == START + 3600
    assert "expires_at" not in (await h.http.get(f"/v1/files/{other}")).json()
    h.clock.set(START + 3600)
    assert (await h.http.get(f"/v1/files/{short['id']}")).status_code == 404
    assert (await h.http.get(f"/v1/files/{batch_file}")).status_code == 200
    h.clock.set(START + 30 * DAY)
    assert (await h.http.get(f"/v1/files/{batch_file}")).status_code == 404
    assert [f["id"] for f in (await h.http.get("/v1/files")).json()["data"]] == [other]


@pytest.mark.parametrize(
    ("form", "filename", "message", "param"),
    [
        (
            {"purpose": "batch"},
            "in.txt",
            "Invalid file format for Batch API. Must be .jsonl",
            "file",
        ),
        (
            {"purpose": "batch"},
            "in.json",
            "Invalid file format for Batch API. Must be .jsonl",
            "file",
        ),
        ({}, "in.jsonl", "Missing required parameter: 'purpose'.", "purpose"),
        ({"purpose": "nope"}, "in.jsonl", None, "purpose"),
        (
            {
                "purpose": "batch",
                "expires_after[anchor]": "created_at",
                "expires_after[seconds]": "60",
            },
            "in.jsonl",
            None,
            "expires_after.seconds",
        ),
        (
            {"purpose": "batch", "expires_after[anchor]": "now", "expires_after[seconds]": "3600"},
            "in.jsonl",
            None,
            "expires_after.anchor",
        ),
    ],
)
async def test_upload_rejections(
    h: Harness, form: dict[str, str], filename: str, message: str | None, param: str
) -> None:
    reply = await h.http.post("/v1/files", files={"file": (filename, b"{}\n")}, data=form)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if message is not None:
        assert error["message"] == message
    assert (await h.http.get("/v1/files")).json()["data"] == []


async def test_upload_without_file_and_size_limit(make: MakeHarness) -> None:
    h = await make(max_file_bytes=100)
    missing = await h.http.post("/v1/files", data={"purpose": "batch"}, files={"other": ("x", b"")})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "file"
    not_multipart = await h.http.post("/v1/files", json={"purpose": "batch"})
    assert not_multipart.status_code == 400
    big = await h.http.post(
        "/v1/files", files={"file": ("in.jsonl", b"x" * 101)}, data={"purpose": "batch"}
    )
    assert big.status_code == 400
    assert big.json()["error"]["code"] == "file_too_large"
    await h.upload(b"x" * 100)


async def test_files_list_filters_orders_and_pages(h: Harness) -> None:
    ids = []
    for i in range(5):
        purpose = "batch" if i % 2 == 0 else "user_data"
        ids.append(await h.upload(b"{}\n", filename=f"f{i}.jsonl", purpose=purpose))
        h.clock.advance(1)
    listing = (await h.http.get("/v1/files")).json()
    assert [f["id"] for f in listing["data"]] == ids[::-1]
    assert (listing["first_id"], listing["last_id"], listing["has_more"]) == (ids[4], ids[0], False)
    asc = (await h.http.get("/v1/files", params={"order": "asc", "limit": 2})).json()
    assert [f["id"] for f in asc["data"]] == ids[:2]
    assert asc["has_more"] is True
    rest = (await h.http.get("/v1/files", params={"order": "asc", "after": asc["last_id"]})).json()
    assert [f["id"] for f in rest["data"]] == ids[2:]
    batch_only = (await h.http.get("/v1/files", params={"purpose": "batch"})).json()
    assert [f["id"] for f in batch_only["data"]] == [ids[4], ids[2], ids[0]]
    # A deleted file still works as a cursor.
    await h.http.delete(f"/v1/files/{ids[3]}")
    after_deleted = (await h.http.get("/v1/files", params={"after": ids[3]})).json()
    assert [f["id"] for f in after_deleted["data"]] == [ids[2], ids[1], ids[0]]
    unknown = (await h.http.get("/v1/files", params={"after": "file-unknown"})).json()
    assert unknown == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    for params in ({"limit": "0"}, {"limit": "10001"}, {"order": "sideways"}):
        assert (await h.http.get("/v1/files", params=params)).status_code == 400


async def test_auth(make: MakeHarness) -> None:
    h = await make(api_key="sk-right-key-123456")
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        reply = await h.http.get("/v1/batches", headers=headers)
        assert reply.status_code == 401
        assert reply.json()["error"]["type"] == "invalid_request_error"
    wrong = await h.http.get("/v1/files", headers={"Authorization": "Bearer sk-wrong-key-000000"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key" not in wrong.json()["error"]["message"]
    right = await h.http.get("/v1/files", headers={"Authorization": "Bearer sk-right-key-123456"})
    assert right.status_code == 200
    # Controls need no key.
    state = await h.http.get("/_emulator/batches/state", headers={"Authorization": ""})
    assert state.json() == {"batches": [], "files": []}
    # Without a configured key any non-empty key passes.
    anyone = await make()
    assert (
        await anyone.http.get("/v1/batches", headers={"Authorization": "Bearer x"})
    ).status_code == 200


# -- creating batches -------------------------------------------------------------------


async def test_create_rejections(h: Harness) -> None:
    good = await h.upload(jsonl([chat_line(1)]))
    other = await h.upload(b"notes", filename="notes.txt", purpose="user_data")
    base = {"input_file_id": good, "endpoint": CHAT, "completion_window": "24h"}
    too_many = {f"k{i}": "v" for i in range(17)}
    cases: list[tuple[dict[str, Any], str | None, str | None]] = [
        (
            {k: v for k, v in base.items() if k != "input_file_id"},
            "input_file_id",
            "missing_required_parameter",
        ),
        (
            {k: v for k, v in base.items() if k != "endpoint"},
            "endpoint",
            "missing_required_parameter",
        ),
        (
            {k: v for k, v in base.items() if k != "completion_window"},
            "completion_window",
            "missing_required_parameter",
        ),
        ({**base, "endpoint": "/v1/audio/speech"}, "endpoint", "invalid_value"),
        ({**base, "completion_window": "48h"}, "completion_window", "invalid_value"),
        ({**base, "metadata": too_many}, "metadata", "object_above_max_properties"),
        ({**base, "metadata": {"k" * 65: "v"}}, f"metadata.{'k' * 65}", "string_above_max_length"),
        ({**base, "metadata": {"k": "v" * 513}}, "metadata.k", "string_above_max_length"),
        ({**base, "metadata": {"k": 1}}, "metadata.k", "invalid_type"),
        ({**base, "input_file_id": "file-missing"}, "input_file_id", None),
        ({**base, "input_file_id": other}, "input_file_id", None),
        ({**base, "colour": "blue"}, "colour", "unknown_parameter"),
        (
            {**base, "output_expires_after": {"anchor": "created_at", "seconds": 10}},
            "output_expires_after",
            "invalid_value",
        ),
    ]
    for body, param, code in cases:
        reply = await h.http.post("/v1/batches", json=body)
        assert reply.status_code == 400, body
        error = reply.json()["error"]
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            param,
            code,
        ), body
    bad_json = await h.http.post(
        "/v1/batches", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    edge = {**base, "metadata": {"k" * 64: "v" * 512, **{f"x{i}": "" for i in range(15)}}}
    accepted = await h.http.post("/v1/batches", json=edge)
    assert accepted.status_code == 200
    assert accepted.json()["metadata"] == edge["metadata"]
    assert len(h.emu.batches_state()) == 1


async def test_fail_next_create_python_and_http(h: Harness) -> None:
    file_id = await h.upload(jsonl([chat_line(1)]))
    h.emu.fail_next_create(500)
    first = await h.create(file_id)
    assert first.status_code == 500
    assert first.json()["error"]["type"] == "server_error"
    control = await h.http.post(
        "/_emulator/batches/fail-next-create",
        json={
            "status": 429,
            "error": {"message": "slow down", "code": "rate_limit_exceeded"},
            "times": 2,
            "retry_after": 7,
        },
    )
    assert control.status_code == 200
    for _ in range(2):
        reply = await h.create(file_id)
        assert reply.status_code == 429
        assert reply.headers["retry-after"] == "7.0"
        assert reply.json()["error"]["message"] == "slow down"
        assert reply.json()["error"]["code"] == "rate_limit_exceeded"
    assert (await h.create(file_id)).status_code == 200
    assert len(h.emu.batches_state()) == 1
    bad = await h.http.post("/_emulator/batches/fail-next-create", json={"status": 200})
    assert bad.status_code == 400


async def test_creation_rate_limit(make: MakeHarness) -> None:
    h = await make(max_creates_per_hour=2)
    file_id = await h.upload(jsonl([chat_line(1)]))
    assert (await h.create(file_id)).status_code == 200
    h.clock.advance(1000)
    assert (await h.create(file_id)).status_code == 200
    limited = await h.create(file_id)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == str(3600 - 1000)
    h.clock.set(START + 3600)
    assert (await h.create(file_id)).status_code == 200


# -- the state machine ------------------------------------------------------------------


def test_transition_table_every_pair() -> None:
    for source, target in itertools.product(BatchStatus, repeat=2):
        record = _bare_record(source)
        if target in TRANSITIONS[source]:
            record.move(target, 1.0)
            assert record.status is target
            assert record.at[target] == 1.0
        else:
            with pytest.raises(IllegalTransition):
                record.move(target, 1.0)
            assert record.status is source
    assert all(not TRANSITIONS[s] for s in BatchStatus if s.final)


def _bare_record(status: BatchStatus) -> BatchRecord:
    return BatchRecord(
        id="batch_x",
        rank=0,
        endpoint=CHAT,
        input_file_id="file-x",
        metadata=None,
        created_at=0.0,
        expires_at=DAY,
        output_ttl=DAY,
        rng=random.Random(0),
        input=None,
        input_size=0,
        output=Appender("/nonexistent"),
        failures=Appender("/nonexistent"),
        status=status,
    )


async def test_happy_path_walks_every_state(h: Harness) -> None:
    batch_id = await h.start([chat_line(i) for i in range(10)], metadata={"ticket": "t-1"})
    created = await h.batch(batch_id)
    assert created["status"] == "validating"
    assert created["created_at"] == START
    assert created["expires_at"] == START + DAY
    assert created["metadata"] == {"ticket": "t-1"}
    assert created["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert (await h.at(batch_id, 1.9))["status"] == "validating"

    running = await h.at(batch_id, 2)
    assert running["status"] == "in_progress"
    assert running["in_progress_at"] == START + 2
    assert running["model"] == MODEL
    assert running["request_counts"] == {"total": 10, "completed": 0, "failed": 0}
    # Lines complete progressively: 10 lines over 100 s.
    assert (await h.at(batch_id, 32))["request_counts"]["completed"] == 3
    half = await h.at(batch_id, 52)
    assert half["request_counts"] == {"total": 10, "completed": 5, "failed": 0}
    assert half["usage"]["output_tokens"] == 10
    assert half["output_file_id"] is None

    finalizing = await h.at(batch_id, 102)
    assert finalizing["status"] == "finalizing"
    assert finalizing["finalizing_at"] == START + 102
    assert finalizing["request_counts"]["completed"] == 10
    assert (await h.at(batch_id, 104.9))["status"] == "finalizing"

    done = await h.at(batch_id, 105)
    assert done["status"] == "completed"
    assert done["completed_at"] == START + 105
    assert done["error_file_id"] is None
    assert done["errors"] is None
    for name in ("failed_at", "expired_at", "cancelling_at", "cancelled_at"):
        assert done[name] is None
    prompt = sum(count_messages(chat_line(i)["body"]["messages"]) for i in range(10))
    assert done["usage"] == {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 10},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": prompt + 20,
    }
    output = await h.lines(done["output_file_id"])
    by_id = {line["custom_id"]: line for line in output}
    assert sorted(by_id) == sorted(f"req-{i}" for i in range(10))
    for i in range(10):
        line = by_id[f"req-{i}"]
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["request_id"].startswith("req_")
        assert line["response"]["body"]["choices"][0]["message"]["content"] == f"echo hello {i}"
    out_file = check_file((await h.http.get(f"/v1/files/{done['output_file_id']}")).json())
    assert out_file["purpose"] == "batch_output"
    assert out_file["created_at"] == START + 105
    assert out_file["expires_at"] == START + 105 + 30 * DAY
    assert out_file["filename"] == f"{batch_id}_output.jsonl"


async def test_state_is_replayed_at_due_times_whatever_the_polling(h: Harness) -> None:
    batch_id = await h.start([chat_line(i) for i in range(4)])
    done = await h.at(batch_id, 10_000)
    assert done["status"] == "completed"
    assert (done["in_progress_at"], done["finalizing_at"], done["completed_at"]) == (
        START + 2,
        START + 102,
        START + 105,
    )


async def test_output_order_is_random_but_seeded(make: MakeHarness) -> None:
    orders = []
    for seed in (0, 0, 1):
        h = await make(seed=seed)
        batch_id = await h.start([chat_line(i) for i in range(30)])
        done = await h.at(batch_id, 200)
        orders.append([line["custom_id"] for line in await h.lines(done["output_file_id"])])
    natural = [f"req-{i}" for i in range(30)]
    assert orders[0] == orders[1]
    assert orders[0] != natural
    assert orders[2] != orders[0]
    assert sorted(orders[0]) == sorted(natural)


async def test_input_file_deleted_after_create_still_runs(h: Harness) -> None:
    file_id = await h.upload(jsonl([chat_line(i) for i in range(3)]))
    batch_id = (await h.create(file_id)).json()["id"]
    await h.http.delete(f"/v1/files/{file_id}")
    done = await h.at(batch_id, 200)
    assert done["status"] == "completed"
    assert done["request_counts"]["completed"] == 3


async def test_output_expires_after(h: Harness) -> None:
    batch_id = await h.start(
        [chat_line(1)], output_expires_after={"anchor": "created_at", "seconds": 3600}
    )
    done = await h.at(batch_id, 200)
    out = (await h.http.get(f"/v1/files/{done['output_file_id']}")).json()
    assert out["expires_at"] == START + 105 + 3600
    h.clock.set(START + 105 + 3600)
    assert (await h.http.get(f"/v1/files/{done['output_file_id']}")).status_code == 404


# -- validation failures ---------------------------------------------------------------


def _line(**changes: Any) -> dict[str, Any]:
    line = chat_line(2)
    for key, value in changes.items():
        if value is None:
            del line[key]
        else:
            line[key] = value
    return line


VALIDATION_CASES: list[tuple[str, list[Any], str, str | None, int | None]] = [
    (
        "invalid_json",
        [chat_line(1), b'{"custom_id": "req-2", "method"'],
        "invalid_json_line",
        None,
        2,
    ),
    ("not_an_object", [chat_line(1), b"[1, 2]"], "invalid_json_line", None, 2),
    ("duplicate", [chat_line(1), chat_line(1)], "duplicate_custom_id", "custom_id", 2),
    (
        "no_custom_id",
        [chat_line(1), _line(custom_id=None)],
        "missing_required_parameter",
        "custom_id",
        2,
    ),
    ("no_method", [chat_line(1), _line(method=None)], "missing_required_parameter", "method", 2),
    ("get_method", [chat_line(1), _line(method="GET")], "invalid_value", "method", 2),
    ("no_url", [chat_line(1), _line(url=None)], "missing_required_parameter", "url", 2),
    ("no_body", [chat_line(1), _line(body=None)], "missing_required_parameter", "body", 2),
    ("url_mismatch", [chat_line(1), _line(url="/v1/embeddings")], "url_mismatch", "url", 2),
    (
        "model_mismatch",
        [chat_line(1), chat_line(2, model="gpt-4o")],
        "model_mismatch",
        "body.model",
        2,
    ),
    (
        "no_model",
        [chat_line(1), _line(body={"messages": []})],
        "missing_required_parameter",
        "body.model",
        2,
    ),
    (
        "stream",
        [chat_line(1), _line(body={**chat_line(2)["body"], "stream": True})],
        "invalid_value",
        "body.stream",
        2,
    ),
    ("empty", [], "empty_file", None, None),
    ("blank_lines_only", [b"", b"   "], "empty_file", None, None),
]


@pytest.mark.parametrize(
    ("lines", "code", "param", "line"),
    [case[1:] for case in VALIDATION_CASES],
    ids=[case[0] for case in VALIDATION_CASES],
)
async def test_validation_failures(
    h: Harness, lines: list[Any], code: str, param: str | None, line: int | None
) -> None:
    batch_id = await h.start(lines)
    assert (await h.at(batch_id, 1))["status"] == "validating"
    failed = await h.at(batch_id, 50)
    assert failed["status"] == "failed"
    assert failed["failed_at"] == START + 2
    assert failed["in_progress_at"] is None
    assert failed["output_file_id"] is None
    assert failed["error_file_id"] is None
    assert failed["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert failed["errors"]["object"] == "list"
    [error] = failed["errors"]["data"]
    assert (error["code"], error["param"], error["line"]) == (code, param, line)
    assert error["message"]
    assert h.calls == []  # nothing ran
    # Final states stay put.
    assert (await h.at(batch_id, 10 * DAY))["status"] == "failed"


async def test_validation_reports_every_bad_line(h: Harness) -> None:
    lines: list[Any] = [chat_line(1), b"oops", chat_line(1), _line(url="/v1/x"), b"", chat_line(5)]
    failed = await h.at(await h.start(lines), 10)
    assert [(e["code"], e["line"]) for e in failed["errors"]["data"]] == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("url_mismatch", 4),
    ]
    assert failed["model"] == MODEL


async def test_too_many_tasks_and_too_large(make: MakeHarness) -> None:
    h = await make(max_lines=3)
    ok = await h.at(await h.start([chat_line(i) for i in range(3)]), 10)
    assert ok["status"] == "in_progress"
    failed = await h.at(await h.start([chat_line(i) for i in range(4)]), 20)
    assert failed["status"] == "failed"
    assert [(e["code"], e["line"]) for e in failed["errors"]["data"]] == [("too_many_tasks", None)]

    small = await make(max_batch_file_bytes=200)
    big = await small.at(await small.start([chat_line(i) for i in range(3)]), 10)
    assert big["status"] == "failed"
    assert [e["code"] for e in big["errors"]["data"]] == ["file_too_large"]


async def test_token_limit_exceeded(make: MakeHarness) -> None:
    per_line = count_messages(chat_line(0)["body"]["messages"])
    h = await make(token_limits={MODEL: per_line * 5})
    first = await h.start([chat_line(i) for i in range(3)])
    second = await h.start([chat_line(i) for i in range(3)])
    other_model = await h.start([chat_line(i, model="gpt-4o") for i in range(30)])
    assert (await h.at(first, 10))["status"] == "in_progress"
    rejected = await h.batch(second)
    assert rejected["status"] == "failed"
    [error] = rejected["errors"]["data"]
    assert error["code"] == "token_limit_exceeded"
    assert error["line"] is None
    assert error["message"].startswith(f"Enqueued token limit reached for {MODEL} in organization")
    assert "Limit: " in error["message"]
    assert (await h.batch(other_model))["status"] == "in_progress"  # its own pool
    # The pool frees when the first batch finishes.
    assert (await h.at(first, 110))["status"] == "completed"
    third = await h.start([chat_line(i) for i in range(3)])
    assert (await h.at(third, 120))["status"] == "in_progress"
    # Limits can be changed over HTTP too, and removed.
    await h.http.post("/_emulator/batches/token-limits", json={"model": MODEL, "limit": 1})
    fourth = await h.start([chat_line(1)])
    assert (await h.at(fourth, 130))["status"] == "failed"
    await h.http.post("/_emulator/batches/token-limits", json={"model": MODEL, "limit": None})
    fifth = await h.start([chat_line(1)])
    assert (await h.at(fifth, 140))["status"] == "in_progress"


# -- per-line failures -----------------------------------------------------------------


async def test_line_faults_both_shapes(h: Harness) -> None:
    h.emu.line_faults.add(
        custom_id="req-1",
        status_code=429,
        error={
            "message": "Too many",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
    )
    h.emu.line_faults.add(custom_id="req-2", code="server_error", message="lost")
    reply = await h.http.post(
        "/_emulator/batches/line-faults", json={"faults": [{"every": 4, "status_code": 500}]}
    )
    assert reply.status_code == 200
    assert len(reply.json()["faults"]) == 3
    lines = [chat_line(i) for i in range(10)]
    lines[5] = chat_line(5, content="FAIL please")  # the endpoint itself answers 400
    done = await h.at(await h.start(lines), 200)
    assert done["status"] == "completed"
    # Line numbers 4 and 8 hold req-3 and req-7.
    assert done["request_counts"] == {"total": 10, "completed": 5, "failed": 5}
    errors = {line["custom_id"]: line for line in await h.lines(done["error_file_id"])}
    assert sorted(errors) == ["req-1", "req-2", "req-3", "req-5", "req-7"]
    assert errors["req-1"]["error"] is None
    assert errors["req-1"]["response"]["status_code"] == 429
    assert errors["req-1"]["response"]["body"]["error"]["message"] == "Too many"
    assert errors["req-2"]["response"] is None
    assert errors["req-2"]["error"] == {"code": "server_error", "message": "lost"}
    assert errors["req-3"]["response"]["status_code"] == 500
    assert errors["req-3"]["response"]["body"]["error"]["type"] == "server_error"
    assert errors["req-5"]["response"]["status_code"] == 400
    assert errors["req-5"]["response"]["body"]["error"]["message"] == "bad prompt"
    outputs = {line["custom_id"] for line in await h.lines(done["output_file_id"])}
    assert outputs == {"req-0", "req-4", "req-6", "req-8", "req-9"}
    assert done["usage"]["output_tokens"] == 10  # only successful lines count
    # Clearing over HTTP.
    await h.http.post("/_emulator/batches/line-faults", json={"clear": True})
    assert h.emu.line_faults.faults == []
    bad = await h.http.post("/_emulator/batches/line-faults", json={"faults": [{"every": 2}]})
    assert bad.status_code == 400


async def test_all_lines_failed_is_completed_with_only_an_error_file(h: Harness) -> None:
    h.emu.line_faults.add(every=1, status_code=400)
    done = await h.at(await h.start([chat_line(i) for i in range(4)]), 200)
    assert done["status"] == "completed"
    assert done["output_file_id"] is None
    assert done["error_file_id"] is not None
    assert done["request_counts"] == {"total": 4, "completed": 0, "failed": 4}


async def test_execute_crash_fails_the_line(make: MakeHarness) -> None:
    h = await make()

    def broken(endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raise RuntimeError("boom")

    h.emu.engine.execute = broken
    done = await h.at(await h.start([chat_line(1)]), 200)
    [line] = await h.lines(done["error_file_id"])
    assert line["response"]["status_code"] == 500


# -- expiry, cancellation, stalls -------------------------------------------------------


async def test_expiry_keeps_partial_results(make: MakeHarness) -> None:
    h = await make(processing_time=2 * DAY)
    batch_id = await h.start([chat_line(i) for i in range(8)])
    assert (await h.at(batch_id, DAY - 1))["status"] == "in_progress"
    expired = await h.at(batch_id, DAY + 500)
    assert expired["status"] == "expired"
    assert expired["expired_at"] == START + DAY
    assert expired["finalizing_at"] is None
    # (DAY - 2) / (2 * DAY) of 8 lines had run: 3.
    assert expired["request_counts"] == {"total": 8, "completed": 3, "failed": 5}
    outputs = await h.lines(expired["output_file_id"])
    errors = await h.lines(expired["error_file_id"])
    assert len(outputs) == 3
    assert {line["custom_id"] for line in outputs + errors} == {f"req-{i}" for i in range(8)}
    for line in errors:
        assert line["response"] is None
        assert line["error"] == {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        }
    assert len(h.calls) == 3  # expired lines never ran


async def test_cancel_in_progress(h: Harness) -> None:
    batch_id = await h.start([chat_line(i) for i in range(10)])
    h.clock.set(START + 42)
    reply = await h.http.post(f"/v1/batches/{batch_id}/cancel")
    cancelling = check_batch(reply.json())
    assert cancelling["status"] == "cancelling"
    assert cancelling["cancelling_at"] == START + 42
    assert cancelling["request_counts"]["completed"] == 4
    # Lines stop progressing while cancelling.
    assert (await h.at(batch_id, 46))["request_counts"]["completed"] == 4
    again = await h.http.post(f"/v1/batches/{batch_id}/cancel")
    assert again.json()["status"] == "cancelling"
    cancelled = await h.at(batch_id, 47)
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] == START + 47
    assert cancelled["request_counts"] == {"total": 10, "completed": 4, "failed": 6}
    assert len(await h.lines(cancelled["output_file_id"])) == 4
    errors = await h.lines(cancelled["error_file_id"])
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert len(errors) == 6
    assert (await h.http.post(f"/v1/batches/{batch_id}/cancel")).json()["status"] == "cancelled"
    assert len(h.calls) == 4


async def test_cancel_while_validating_and_after_completion(h: Harness) -> None:
    batch_id = await h.start([chat_line(i) for i in range(3)])
    h.clock.set(START + 1)
    reply = await h.http.post(f"/v1/batches/{batch_id}/cancel")
    assert reply.json()["status"] == "cancelling"
    cancelled = await h.at(batch_id, 100)
    assert cancelled["status"] == "cancelled"
    assert cancelled["in_progress_at"] is None
    assert cancelled["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert (cancelled["output_file_id"], cancelled["error_file_id"]) == (None, None)

    finished = await h.start([chat_line(1)])
    h.clock.set(START + 1000)
    reply = await h.http.post(f"/v1/batches/{finished}/cancel")
    assert reply.status_code == 400
    assert "completed" in reply.json()["error"]["message"]
    assert (await h.http.post("/v1/batches/batch_nope/cancel")).status_code == 404


async def test_cancel_while_finalizing_is_refused(h: Harness) -> None:
    batch_id = await h.start([chat_line(1)])
    h.clock.set(START + 103)
    reply = await h.http.post(f"/v1/batches/{batch_id}/cancel")
    assert reply.status_code == 400
    assert (await h.batch(batch_id))["status"] == "finalizing"


async def test_stall_keeps_a_batch_in_progress_forever(h: Harness) -> None:
    batch_id = await h.start([chat_line(i) for i in range(10)])
    h.clock.set(START + 32)
    h.emu.stall(batch_id)
    stuck = await h.at(batch_id, 5 * DAY)
    assert stuck["status"] == "in_progress"
    assert stuck["request_counts"]["completed"] == 3
    h.clock.set(START + 5 * DAY)
    assert (await h.http.post(f"/v1/batches/{batch_id}/cancel")).status_code == 200
    cancelled = await h.at(batch_id, 5 * DAY + 10)
    assert cancelled["status"] == "cancelled"
    assert cancelled["request_counts"] == {"total": 10, "completed": 3, "failed": 7}


async def test_stall_over_http_and_config(make: MakeHarness) -> None:
    h = await make()
    batch_id = await h.start([chat_line(1)])
    assert (await h.http.post(f"/_emulator/batches/{batch_id}/stall")).status_code == 200
    assert (await h.at(batch_id, 3 * DAY))["request_counts"]["completed"] == 0
    assert (await h.batch(batch_id))["status"] == "in_progress"
    assert (await h.http.post("/_emulator/batches/batch_nope/stall")).status_code == 404
    every = await make(stall_all=True)
    stuck = await every.at(await every.start([chat_line(1)]), 3 * DAY)
    assert (stuck["status"], stuck["request_counts"]["completed"]) == ("in_progress", 0)


# -- corrupt results -------------------------------------------------------------------


async def test_corrupt_truncate_and_garbage(h: Harness) -> None:
    h.emu.corrupt_output("next", "truncate")
    truncated = await h.at(await h.start([chat_line(i) for i in range(3)]), 200)
    raw = (await h.http.get(f"/v1/files/{truncated['output_file_id']}/content")).content
    *whole, last = raw.split(b"\n")
    assert len(whole) == 2
    assert all(orjson.loads(line) for line in whole)
    assert last
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(last)
    meta = (await h.http.get(f"/v1/files/{truncated['output_file_id']}")).json()
    assert meta["bytes"] == len(raw)

    garbage_id = await h.start([chat_line(i) for i in range(3)])
    reply = await h.http.post(
        "/_emulator/batches/corrupt", json={"batch_id": garbage_id, "mode": "garbage"}
    )
    assert reply.status_code == 200
    garbage = await h.at(garbage_id, 400)
    lines = (
        await h.http.get(f"/v1/files/{garbage['output_file_id']}/content")
    ).content.splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            parsed.append(None)
    assert parsed.count(None) == 1
    assert len(parsed) == 4


async def test_corrupt_missing_output(h: Harness) -> None:
    done = await h.at(await h.start([chat_line(1)]), 200)
    h.emu.corrupt_output(done["id"], "missing")
    after = await h.batch(done["id"])
    assert after["output_file_id"] == done["output_file_id"]
    assert (await h.http.get(f"/v1/files/{after['output_file_id']}/content")).status_code == 404
    # With no output at all, a dangling id is set.
    h.emu.line_faults.add(every=1, code="server_error")
    h.emu.corrupt_output("next", "missing")
    all_failed = await h.at(await h.start([chat_line(1)]), 400)
    assert all_failed["output_file_id"] is not None
    assert (await h.http.get(f"/v1/files/{all_failed['output_file_id']}")).status_code == 404
    assert (await h.http.get(f"/v1/files/{all_failed['error_file_id']}")).status_code == 200
    bad = await h.http.post(
        "/_emulator/batches/corrupt", json={"batch_id": "next", "mode": "shred"}
    )
    assert bad.status_code == 400


# -- listing ---------------------------------------------------------------------------


async def test_list_batches_pagination(h: Harness) -> None:
    file_id = await h.upload(jsonl([chat_line(1)]))
    ids = []
    for _ in range(25):
        ids.append((await h.create(file_id)).json()["id"])
        h.clock.advance(1)
    newest_first = ids[::-1]
    first = (await h.http.get("/v1/batches")).json()
    assert first["object"] == "list"
    assert [b["id"] for b in first["data"]] == newest_first[:20]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (
        newest_first[0],
        newest_first[19],
        True,
    )
    for item in first["data"]:
        check_batch(item)
    second = (await h.http.get("/v1/batches", params={"after": first["last_id"]})).json()
    assert [b["id"] for b in second["data"]] == newest_first[20:]
    assert second["has_more"] is False
    one = (await h.http.get("/v1/batches", params={"limit": 1, "after": ids[1]})).json()
    assert [b["id"] for b in one["data"]] == [ids[0]]
    assert one["has_more"] is False
    everything = (await h.http.get("/v1/batches", params={"limit": 100})).json()
    assert len(everything["data"]) == 25
    for limit in ("0", "101", "x"):
        reply = await h.http.get("/v1/batches", params={"limit": limit})
        assert reply.status_code == 400
        assert reply.json()["error"]["param"] == "limit"
    assert (await h.http.get("/v1/batches/batch_nope")).status_code == 404


async def test_state_listing(h: Harness) -> None:
    batch_id = await h.start([chat_line(1)])
    h.clock.set(START + 200)
    state = (await h.http.get("/_emulator/batches/state")).json()
    assert [b["id"] for b in state["batches"]] == [batch_id]
    assert state["batches"][0]["status"] == "completed"
    assert sorted(f["purpose"] for f in state["files"]) == ["batch", "batch_output"]
    assert h.emu.batches_state() == state["batches"]
    assert h.emu.files_state() == state["files"]


# -- scale -----------------------------------------------------------------------------


async def test_fifty_thousand_lines(h: Harness) -> None:
    padding = "x" * 900
    data = b"".join(
        orjson.dumps(chat_line(i, content=f"{i} {padding}")) + b"\n" for i in range(50_000)
    )
    assert len(data) > 50_000_000
    batch_id = (await h.create(await h.upload(data))).json()["id"]
    del data
    running = await h.at(batch_id, 52)
    assert running["status"] == "in_progress"
    assert running["request_counts"] == {"total": 50_000, "completed": 25_000, "failed": 0}
    done = await h.at(batch_id, 200)
    assert done["status"] == "completed"
    assert done["request_counts"]["completed"] == 50_000
    seen = 0
    ids = set()
    async with h.http.stream("GET", f"/v1/files/{done['output_file_id']}/content") as reply:
        async for line in reply.aiter_lines():
            if line:
                ids.add(orjson.loads(line)["custom_id"])
                seen += 1
    assert seen == len(ids) == 50_000
