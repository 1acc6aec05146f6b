"""costroute's own Batch API at full size: a 50,000-line input file (~1 KB a line)
uploaded, validated and queued, then its 50,000-line output written and downloaded.

    python -m tests.benchmarks.userbatch [--lines 50000] [--size 1024]

Runs the real app in this process over an in-process ASGI transport (no sockets; the
providers are never called). Set-up that is not measured: writing the input file, and
marking every ticket completed with a result (what ingest would have done). Measured:

- ``create``: ``POST /v1/files`` then ``POST /v1/batches`` until the batch is queued
  (target: under 10 s), and the process's resident-size growth while doing it (target:
  under 150 MB);
- ``output``: the ``GET /v1/batches/{id}`` that finds every line ended and writes the
  output file, then ``GET /v1/files/{id}/content`` streamed to the end, with its growth.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from proxy.app import create_app
from proxy.settings import parse_settings
from tests.benchmarks.batchwork import RssPeak, ticket_body

KEY = "sk-bench-userbatch-000000"
RESULT = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 250, "completion_tokens": 2, "total_tokens": 252},
})  # fmt: skip


def write_input(path: Path, lines: int, size: int) -> int:
    with path.open("wb") as out:
        for index in range(lines):
            body = orjson.loads(ticket_body(index, size))
            line = {"custom_id": f"line-{index}", "method": "POST",
                    "url": "/v1/chat/completions", "body": body}  # fmt: skip
            out.write(orjson.dumps(line) + b"\n")
    return path.stat().st_size


@contextlib.asynccontextmanager
async def running(tmp: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = parse_settings({
        "store": {"path": str(tmp / "bench.db")},
        "auth": {"keys": [{"name": "bench", "key_env": "BENCH_KEY"}]},
        "providers": {"openai": {"type": "openai", "base_url": "http://127.0.0.1:9/v1",
                                 "api_key_env": "BENCH_OPENAI"}},
        "models": {"gpt-4o-mini": {"provider": "openai"}},
        # The loops must not try to flush the queued lines to the (absent) provider.
        "batch": {"flush_interval": "1h", "poll_interval": "1h", "max_wait": "30d"},
        "files": {"dir": str(tmp / "files")},
    })  # fmt: skip
    app = create_app(settings, environ={"BENCH_KEY": KEY, "BENCH_OPENAI": "sk-none"})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        headers = {"authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://costroute.bench", headers=headers, timeout=600
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def complete_every_line(app: Any, batch_id: str) -> None:
    """What ingest would have done: every ticket completed with a result (set-up)."""
    db = app.state.services.db
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO ticket_results (ticket_id, result) SELECT ticket_id, ? "
            "FROM user_batch_lines WHERE batch_id = ?",
            (RESULT, batch_id),
        )
        await conn.execute(
            "UPDATE tickets SET status = 'completed', prompt_tokens = 250, "
            "completion_tokens = 2 WHERE id IN "
            "(SELECT ticket_id FROM user_batch_lines WHERE batch_id = ?)",
            (batch_id,),
        )


async def measure(lines: int, size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="costroute-userbatch-") as folder:
        tmp = Path(folder)
        input_path = tmp / "input.jsonl"
        input_bytes = write_input(input_path, lines, size)
        async with running(tmp) as client:
            peak = RssPeak()
            try:
                started = time.perf_counter()
                with input_path.open("rb") as handle:
                    uploaded = await client.post(
                        "/v1/files", files={"file": ("in.jsonl", handle)},
                        data={"purpose": "batch"},
                    )  # fmt: skip
                uploaded.raise_for_status()
                upload_s = time.perf_counter() - started
                created = await client.post("/v1/batches", json={
                    "input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions",
                    "completion_window": "24h"})  # fmt: skip
                created.raise_for_status()
                create_s = time.perf_counter() - started
            finally:
                create_growth = peak.stop()
            batch = created.json()
            assert batch["status"] == "in_progress", batch
            assert batch["request_counts"]["total"] == lines
            await complete_every_line(client.app, batch["id"])  # type: ignore[attr-defined]
            peak = RssPeak()
            try:
                started = time.perf_counter()
                final = (await client.get(f"/v1/batches/{batch['id']}")).json()
                finalize_s = time.perf_counter() - started
                assert final["status"] == "completed", final["status"]
                received = 0
                async with client.stream(
                    "GET", f"/v1/files/{final['output_file_id']}/content"
                ) as stream:
                    async for chunk in stream.aiter_bytes():
                        received += chunk.count(b"\n")
                download_s = time.perf_counter() - started - finalize_s
            finally:
                output_growth = peak.stop()
    return {
        "lines": lines,
        "input_mb": round(input_bytes / 1e6, 1),
        "upload_s": round(upload_s, 2),
        "create_s": round(create_s, 2),
        "create_growth_mb": round(create_growth, 1),
        "finalize_s": round(finalize_s, 2),
        "download_s": round(download_s, 2),
        "output_lines": received,
        "output_growth_mb": round(output_growth, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(measure(args.lines, args.size))).decode())


if __name__ == "__main__":
    main()
