"""costroute's own Files and Batch API end to end: the official openai SDK (and a plain
multipart client) -> costroute under uvicorn -> the OpenAI emulator (chat + its own
Files/Batch API) and the DeepSeek emulator, on one ManualClock. Lines are costroute
tickets: OpenAI lines go through OpenAI's Batch API, DeepSeek lines are sent directly."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch, FileObject
from openai.types.chat import ChatCompletion

from adapters.clock import ManualClock
from adapters.emulators.openai.batch.emulator import BatchEmulatorConfig
from adapters.emulators.openai.batch.lines import LineFault
from adapters.emulators.openai.server import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as openai_emulator
from proxy.app import create_app
from proxy.settings import parse_settings
from tests.sdk_checks import strict
from tests.support import ServerThread

TEAM_A = "sk-batchapi-team-a-00000"
TEAM_B = "sk-batchapi-team-b-00000"
OPS = "sk-batchapi-ops-000000000"
ENV = {"A": TEAM_A, "B": TEAM_B, "OPS": OPS, "OPENAI": "sk-up", "DS": "sk-ds"}
RUN = 103.0  # the emulator's batch: validate 1 s + run 100 s + finalize 1 s
CHAT = "/v1/chat/completions"


class Stack:
    def __init__(self, proxy: ServerThread, emulator: ServerThread, clock: ManualClock) -> None:
        self.proxy, self.emulator, self.clock = proxy, emulator, clock

    def sdk(self, key: str = TEAM_A) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.proxy.url + "/v1", api_key=key, max_retries=0)

    def http(self, key: str = TEAM_A) -> httpx.Client:
        return httpx.Client(
            base_url=self.proxy.url, headers={"authorization": f"Bearer {key}"}, timeout=70
        )

    def flush(self) -> None:
        with self.http(OPS) as client:
            assert client.post("/admin/flush").status_code == 200

    def upload(self, lines: list[dict[str, Any]], key: str = TEAM_A) -> FileObject:
        data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        return self.sdk(key).files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")

    def wait_final(self, batch_id: str, *, steps: int = 80) -> Batch:
        for _ in range(steps):
            raw = self.sdk().batches.with_raw_response.retrieve(batch_id)
            batch = strict(Batch, raw.http_response.json())
            if batch.status in ("completed", "failed", "expired", "cancelled"):
                return batch
            self.clock.advance(RUN / 4)
            self.flush()
            time.sleep(0.25)
        raise AssertionError(f"batch {batch_id} did not end: {batch.status}")


def _line(custom_id: str, model: str, content: str, url: str = CHAT) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _jsonl(content: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in content.decode().splitlines() if line]


def _stack(tmp: Path, poll: str) -> Iterator[Stack]:
    clock = ManualClock()
    batch_config = BatchEmulatorConfig(validation_delay=1, processing_time=100, finalize_delay=1)
    emulator = ServerThread(
        openai_emulator(OpenAIEmulatorConfig(), clock=clock, batch_config=batch_config)
    ).start()
    deepseek = ServerThread(openai_emulator(OpenAIEmulatorConfig(flavour="deepseek"))).start()
    settings = parse_settings(
        {
            "store": {"path": str(tmp / "costroute.db")},
            "auth": {"keys": [{"name": "team-a", "key_env": "A"},
                              {"name": "team-b", "key_env": "B"},
                              {"name": "ops", "key_env": "OPS", "admin": True}]},
            "providers": {
                "openai": {"type": "openai", "base_url": emulator.url + "/v1",
                           "api_key_env": "OPENAI", "max_active_batches": 4},
                "deepseek": {"type": "deepseek", "base_url": deepseek.url, "api_key_env": "DS"},
            },
            "models": {
                "gpt-4o-mini": {"provider": "openai"},
                "deepseek-flash": {"provider": "deepseek"},
            },
            "batch": {"poll_interval": poll, "flush_interval": "1s"},
            "files": {"dir": str(tmp / "files"), "max_bytes": 200_000},
            "retry": {"max_retries": 1, "backoff_base": 0.01, "backoff_max": 0.05},
        }
    )  # fmt: skip
    proxy = ServerThread(create_app(settings, clock=clock, environ=ENV)).start()
    try:
        yield Stack(proxy, emulator, clock)
    finally:
        proxy.stop()
        deepseek.stop()
        emulator.stop()


@pytest.fixture(scope="module")
def s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _stack(tmp_path_factory.mktemp("batchapi"), "1s")


@pytest.fixture(scope="module")
def still(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose scheduler loops wait an hour between runs: lines stay where they are."""
    yield from _stack(tmp_path_factory.mktemp("batchapi-still"), "1h")


def test_a_mixed_provider_batch_completes_with_openais_output_format(s: Stack) -> None:
    lines = [_line(f"oa-{i}", "gpt-4o-mini", f"Question {i}") for i in range(3)]
    lines += [_line(f"ds-{i}", "deepseek-flash", f"Pregunta {i}") for i in range(2)]
    uploaded = s.upload(lines)
    strict(FileObject, uploaded.model_dump(mode="json", exclude_unset=True))
    downloaded = s.sdk().files.content(uploaded.id).content
    assert (uploaded.purpose, uploaded.bytes) == ("batch", len(downloaded))
    created = s.sdk().batches.create(
        input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h",
        metadata={"job": "mixed"},
    )  # fmt: skip
    assert created.status == "in_progress"
    assert created.request_counts is not None
    assert created.request_counts.total == 5
    done = s.wait_final(created.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (5, 0)
    assert done.output_file_id is not None
    assert done.error_file_id is None
    assert done.usage is not None
    assert done.usage.total_tokens > 0
    out = _jsonl(s.sdk().files.content(done.output_file_id).content)
    assert sorted(line["custom_id"] for line in out) == sorted(line["custom_id"] for line in lines)
    for line in out:
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        body = line["response"]["body"]
        if line["custom_id"].startswith("oa-"):
            strict(ChatCompletion, body)
        else:  # DeepSeek's own usage fields (prompt_cache_hit_tokens, ...) are its wire format
            ChatCompletion.model_validate(body)
    assert s.sdk().batches.list().data[0].id == created.id


def test_a_retryable_line_failure_is_retried_for_the_caller(s: Stack) -> None:
    s.emulator.app.state.batches.line_faults.add(LineFault(every=2, code="batch_expired"))
    uploaded = s.upload([_line(f"r-{i}", "gpt-4o-mini", f"Retry {i}") for i in range(4)])
    created = s.sdk().batches.create(
        input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
    )
    s.flush()
    s.clock.advance(RUN)
    s.emulator.app.state.batches.line_faults.clear()
    done = s.wait_final(created.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert done.request_counts.completed == 4
    assert done.error_file_id is None


def test_a_bad_file_fails_validation_and_queues_nothing(still: Stack) -> None:
    lines = [_line("a", "gpt-4o-mini", "x"), _line("a", "gpt-4o-mini", "y")]
    created = still.sdk().batches.create(
        input_file_id=still.upload(lines).id, endpoint=CHAT, completion_window="24h"
    )
    assert created.status == "failed"
    assert created.errors is not None
    assert created.errors.data is not None
    [error] = created.errors.data
    assert (error.code, error.line) == ("duplicate_custom_id", 2)
    wrong_url = [_line("a", "gpt-4o-mini", "x", url="/v1/embeddings")]
    created = still.sdk().batches.create(
        input_file_id=still.upload(wrong_url).id, endpoint=CHAT, completion_window="24h"
    )
    assert created.errors is not None
    assert created.errors.data is not None
    assert created.errors.data[0].code == "url_mismatch"
    with still.http() as client:
        raw = client.post("/v1/files", files={"file": ("in.jsonl", b"{not json\n")},
                          data={"purpose": "batch"})  # fmt: skip
        bad_json = client.post(
            "/v1/batches",
            json={"input_file_id": raw.json()["id"], "endpoint": CHAT, "completion_window": "24h"},
        )
    assert bad_json.json()["errors"]["data"][0]["code"] == "invalid_json_line"
    assert bad_json.json()["request_counts"]["total"] == 0


def test_cancel_keeps_nothing_running_and_ends_cancelled(still: Stack) -> None:
    uploaded = still.upload([_line(f"c-{i}", "gpt-4o-mini", f"C {i}") for i in range(3)])
    created = still.sdk().batches.create(
        input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
    )
    cancelling = still.sdk().batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    done = still.sdk().batches.retrieve(created.id)
    assert done.status == "cancelled"
    assert done.request_counts is not None
    assert done.request_counts.failed == 3
    assert done.error_file_id is not None
    errors = _jsonl(still.sdk().files.content(done.error_file_id).content)
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}


def test_lines_not_done_by_the_window_end_as_batch_expired(still: Stack) -> None:
    uploaded = still.upload([_line(f"e-{i}", "gpt-4o-mini", f"E {i}") for i in range(2)])
    created = still.sdk().batches.create(
        input_file_id=uploaded.id,
        endpoint=CHAT,
        completion_window="2h",  # an extension
    )
    assert created.expires_at == created.created_at + 7200
    still.clock.advance(7201)
    done = still.sdk().batches.retrieve(created.id)
    assert done.status == "expired"
    assert done.error_file_id is not None
    errors = _jsonl(still.sdk().files.content(done.error_file_id).content)
    assert [line["response"] for line in errors] == [None, None]
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}


def test_files_and_batches_belong_to_their_key(still: Stack) -> None:
    uploaded = still.upload([_line("o-1", "gpt-4o-mini", "mine")])
    created = still.sdk().batches.create(
        input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
    )
    other = still.sdk(TEAM_B)
    for call in (
        lambda: other.files.retrieve(uploaded.id),
        lambda: other.files.content(uploaded.id),
        lambda: other.files.delete(uploaded.id),
        lambda: other.batches.retrieve(created.id),
        lambda: other.batches.cancel(created.id),
        lambda: other.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                     completion_window="24h"),
    ):  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            call()
    assert uploaded.id not in [f.id for f in other.files.list().data]
    assert created.id not in [b.id for b in other.batches.list().data]
    with still.http(OPS) as ops, still.http() as plain:
        listed = ops.get("/admin/user-batches").json()["data"]
        assert plain.get("/admin/user-batches").status_code == 403
    assert {"team-a"} <= {item["key_name"] for item in listed if item["id"] == created.id}
    assert still.sdk().files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        still.sdk().files.retrieve(uploaded.id)


def test_a_plain_multipart_client_uploads_and_downloads(still: Stack) -> None:
    content = b'{"custom_id":"p","method":"POST","url":"/v1/chat/completions","body":{}}\n'
    with still.http() as client:
        made = client.post(
            "/v1/files",
            files={"file": ("plain.jsonl", content, "application/jsonl")},
            data={"purpose": "batch", "expires_after[anchor]": "created_at",
                  "expires_after[seconds]": "3600"},
        )  # fmt: skip
        assert made.status_code == 200, made.text
        record = strict(FileObject, made.json())
        assert record.expires_at == record.created_at + 3600
        assert client.get(f"/v1/files/{record.id}/content").content == content
        too_big = client.post("/v1/files", files={"file": ("big.jsonl", b"x" * 300_000)},
                              data={"purpose": "batch"})  # fmt: skip
        assert too_big.status_code == 413
        not_jsonl = client.post("/v1/files", files={"file": ("a.txt", b"x")},
                                data={"purpose": "batch"})  # fmt: skip
        assert not_jsonl.status_code == 400
        assert client.get("/v1/files/file-nope").status_code == 404
