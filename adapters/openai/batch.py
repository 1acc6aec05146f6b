"""OpenAI Files + Batches as a ``BatchAdapter`` over an injected ``httpx.AsyncClient``
(its base URL ends in ``/v1``; auth, timeouts and limits are the client's).

Uploads are streamed: the multipart body is written by hand around the caller's async
line iterator, so a 200 MB batch file never sits in memory (httpx's own multipart
encoder only takes sync files). Result files are streamed back line by line.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from adapters.base import BatchInfo, BatchStatus
from adapters.errors import UpstreamProtocolError
from adapters.http import httpx_errors_mapped
from adapters.wire import status_error

COMPLETION_WINDOW = "24h"
# Coalesce small lines into chunks of about this size before handing them to httpx.
_CHUNK = 256 * 1024


def parse_batch(data: Any) -> BatchInfo:
    """A Batch object (providers.md 2.3) as ``BatchInfo``."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise UpstreamProtocolError("batch object without an id")
    try:
        status = BatchStatus(str(data.get("status")))
    except ValueError:
        raise UpstreamProtocolError(f"unknown batch status {data.get('status')!r}") from None
    counts = data.get("request_counts") or {}
    errors = data.get("errors") or {}
    metadata = data.get("metadata") or {}
    return BatchInfo(
        id=data["id"],
        status=status,
        endpoint=str(data.get("endpoint") or ""),
        input_file_id=str(data.get("input_file_id") or ""),
        created_at=int(data.get("created_at") or 0),
        output_file_id=data.get("output_file_id") or None,
        error_file_id=data.get("error_file_id") or None,
        total=int(counts.get("total") or 0),
        completed=int(counts.get("completed") or 0),
        failed=int(counts.get("failed") or 0),
        errors=tuple(e for e in errors.get("data") or () if isinstance(e, dict)),
        metadata={str(k): str(v) for k, v in metadata.items()},
    )


def build_create(input_file_id: str, endpoint: str, metadata: Mapping[str, str]) -> dict[str, Any]:
    return {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": COMPLETION_WINDOW,
        "metadata": dict(metadata),
    }


class OpenAIBatchAdapter:
    provider_type = "openai"

    def __init__(self, client: httpx.AsyncClient, *, api_key: str | None = None) -> None:
        self._client = client
        self._auth = {"authorization": f"Bearer {api_key}"} if api_key else {}

    async def upload_jsonl(self, lines: AsyncIterable[bytes], *, filename: str) -> str:
        boundary = "costroute-" + secrets.token_hex(16)
        response = await self._send(
            "POST",
            "/files",
            content=_multipart(boundary, filename, lines),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        file_id = response.get("id")
        if not isinstance(file_id, str):
            raise UpstreamProtocolError("file upload answer without an id")
        return file_id

    async def create_batch(
        self, *, input_file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> BatchInfo:
        body = orjson.dumps(build_create(input_file_id, endpoint, metadata))
        return parse_batch(
            await self._send(
                "POST", "/batches", content=body, headers={"content-type": "application/json"}
            )
        )

    async def retrieve_batch(self, batch_id: str) -> BatchInfo:
        return parse_batch(await self._send("GET", f"/batches/{batch_id}"))

    async def cancel_batch(self, batch_id: str) -> BatchInfo:
        return parse_batch(await self._send("POST", f"/batches/{batch_id}/cancel"))

    async def list_batches(self) -> AsyncIterator[BatchInfo]:
        after: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 100}
            if after is not None:
                params["after"] = after
            page = await self._send("GET", "/batches", params=params)
            data = page.get("data") or []
            for item in data:
                yield parse_batch(item)
            if not page.get("has_more") or not data:
                return
            after = str(data[-1].get("id"))

    async def file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        with httpx_errors_mapped():
            async with self._client.stream(
                "GET", f"/files/{file_id}/content", headers=self._auth
            ) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    raise status_error(response.status_code, body, response.headers)
                pending = b""
                async for chunk in response.aiter_bytes():
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        if line.strip():
                            yield line
                if pending.strip():
                    yield pending

    async def _send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | AsyncIterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> dict[str, Any]:
        with httpx_errors_mapped():
            response = await self._client.request(
                method,
                path,
                content=content,
                headers={**self._auth, **(headers or {})},
                params=params,
            )
        if response.status_code >= 400:
            raise status_error(response.status_code, response.content, response.headers)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError() from None
        if not isinstance(data, dict):
            raise UpstreamProtocolError()
        return data

    async def aclose(self) -> None:
        await self._client.aclose()


async def _multipart(
    boundary: str, filename: str, lines: AsyncIterable[bytes]
) -> AsyncIterator[bytes]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    )
    yield head.encode()
    buffer: list[bytes] = []
    size = 0
    async for line in lines:
        buffer.append(line)
        size += len(line)
        if size >= _CHUNK:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)
    yield f"\r\n--{boundary}--\r\n".encode()
