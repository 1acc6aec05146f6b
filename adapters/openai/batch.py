"""OpenAI Files + Batches as a ``BatchLane`` over an injected ``httpx.AsyncClient``
(its base URL ends in ``/v1``; auth, timeouts and limits are the client's).

Uploads are streamed: the multipart body is written by hand around the caller's async
line iterator, so a 200 MB batch file never sits in memory (httpx's own multipart
encoder only takes sync files). Result files are streamed back line by line.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from adapters.base import BatchInfo, BatchLimits, BatchNotCreated, BatchResult, BatchStatus
from adapters.errors import AdapterError, UpstreamProtocolError, UpstreamStatus
from adapters.http import httpx_errors_mapped
from adapters.wire import status_error

log = logging.getLogger(__name__)

COMPLETION_WINDOW = "24h"
# Coalesce small lines into chunks of about this size before handing them to httpx.
_CHUNK = 256 * 1024

_PREFIX = b'{"custom_id":"'
_MIDDLE = b'","method":"POST","url":"'
_BODY = b'","body":'
_END = b"}\n"
# providers.md 2.3: 50,000 lines and 200 MB per input file; the quota is enqueued
# tokens per model, so concurrency is limited per model.
LIMITS = BatchLimits(
    max_items=50_000,
    max_bytes=200 * 1000 * 1000,
    item_overhead=len(_PREFIX) + len(_MIDDLE) + len(_BODY) + len(_END),
    inline_max_bytes=None,
    quota_scope="model",
)


def line_overhead(endpoint: str) -> int:
    """Bytes a line adds around its ticket id and body."""
    return LIMITS.item_overhead + len(endpoint.encode())


def batch_line(custom_id: str, endpoint: str, body: bytes) -> bytes:
    """One input line, written without re-parsing the stored body: custom ids and
    endpoints are URL-safe ASCII, so no escaping is needed; the body is already JSON
    and is spliced in as is."""
    return b"".join((_PREFIX, custom_id.encode(), _MIDDLE, endpoint.encode(), _BODY, body, _END))


async def jsonl(rows: AsyncIterable[tuple[str, bytes]], endpoint: str) -> AsyncIterator[bytes]:
    async for custom_id, body in rows:
        yield batch_line(custom_id, endpoint, body)


def parse_result_line(raw: bytes) -> BatchResult | None:
    """One output or error line as a ``BatchResult``; ``None`` if it names no item.

    Lines are ``{"custom_id", "response": {"status_code", "body"}, "error"}``: 2xx with
    the endpoint's body, 4xx/5xx with ``body.error``, or ``response`` null and
    ``error: {"code", "message"}`` for non-HTTP failures (``batch_expired``)."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
        return None
    custom_id: str = line["custom_id"]
    response = line.get("response")
    if isinstance(response, dict):
        code = response.get("status_code")
        status_code = code if isinstance(code, int) and not isinstance(code, bool) else 0
        body = response.get("body")
        if 200 <= status_code < 300 and isinstance(body, dict):
            return BatchResult(custom_id, status_code, body=body)
        inner = body.get("error") if isinstance(body, dict) else None
        return BatchResult(custom_id, status_code, error=inner if isinstance(inner, dict) else {})
    error = line.get("error")
    return BatchResult(custom_id, None, error=error if isinstance(error, dict) else {})


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
    limits = LIMITS

    def __init__(self, client: httpx.AsyncClient, *, api_key: str | None = None) -> None:
        self._client = client
        self._auth = {"authorization": f"Bearer {api_key}"} if api_key else {}

    # --- BatchLane ----------------------------------------------------------------------

    async def submit(
        self,
        items: AsyncIterable[tuple[str, bytes]],
        *,
        endpoint: str,
        model: str,
        metadata: Mapping[str, str],
    ) -> BatchInfo:
        # No batch can exist upstream without its file, nor after a clear refusal.
        name = metadata.get("costroute_batch_id") or secrets.token_hex(8)
        try:
            file_id = await self.upload_jsonl(jsonl(items, endpoint), filename=f"{name}.jsonl")
        except AdapterError as exc:
            raise BatchNotCreated(exc) from exc
        try:
            return await self.create_batch(
                input_file_id=file_id, endpoint=endpoint, metadata=metadata
            )
        except UpstreamStatus as exc:
            if exc.retryable:
                raise
            raise BatchNotCreated(exc) from exc

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return await self.retrieve_batch(batch_id)

    async def results(self, info: BatchInfo) -> AsyncIterator[BatchResult]:
        for file_id in (info.output_file_id, info.error_file_id):
            if not file_id:
                continue
            async for raw in self.file_lines(file_id):
                result = parse_result_line(raw)
                if result is None:
                    log.warning("batch result line without custom_id skipped (%d bytes)", len(raw))
                else:
                    yield result

    async def cancel(self, batch_id: str) -> BatchInfo:
        return await self.cancel_batch(batch_id)

    def list(self, *, since: float | None = None) -> AsyncIterator[BatchInfo]:
        return self.list_batches()

    # --- Files and Batches, as the lane uses them ---------------------------------------

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
