"""Gemini Batch Mode as a ``BatchLane`` (providers-2.md section 4, providers.md 3.12).

A batch is a long-running operation ``batches/{id}`` created by
``POST models/{model}:batchGenerateContent``. Items are translated by the real-time
path's own ``build_request`` and their results by its own ``parse_response``, so a
batch answer is the same ``chat.completion`` a real-time call would have given.

- Input: inline (``inputConfig.requests``, each item's ``metadata.key`` = custom_id) while
  the translated batch stays under Gemini's 20 MB inline limit; above it the items are
  spooled to a temporary JSONL file (``{"key", "request"}`` lines) and sent through the
  resumable upload protocol (start, then 8 MB chunks, ``upload, finalize`` last), and
  the batch names ``inputConfig.fileName``.
- Output: ``inlinedResponses`` (each with the request's ``metadata``) or a
  ``responsesFile`` downloaded from ``files/{id}:download?alt=media``.
- Cache: with the real-time path's cache manager, an item whose prefix has a live
  managed cache goes with ``cachedContent`` and without the prefix (batch price and
  cached-token price together); a batch never creates a cache. An item whose cache
  expired before it ran comes back as a retryable ``cached_content_gone``.
- Metadata: Gemini batches have none; ``displayName`` carries it, url-encoded after a
  ``costroute?`` prefix, so reconciliation after a crash finds a batch by it.
- Only ``/v1/chat/completions``: Gemini embeddings batches use a different method
  (``asyncBatchEmbedContent``) that costroute does not drive; the planner keeps deferred
  Gemini embeddings off the batch lane (``Capabilities.batch_endpoints``).
"""

from __future__ import annotations

import logging
import tempfile
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any, BinaryIO

import httpx
import orjson

from adapters.base import BatchInfo, BatchLimits, BatchNotCreated, BatchResult, BatchStatus
from adapters.clock import Clock, SystemClock
from adapters.errors import AdapterError, Unsupported, UpstreamProtocolError, UpstreamStatus
from adapters.gemini.cache_manager import CacheManager
from adapters.gemini.errors import RPC_STATUS, is_cache_gone, status_error
from adapters.gemini.http import GeminiHttp
from adapters.gemini.reply import parse_response
from adapters.gemini.translate import GeminiCall, build_request
from adapters.http import httpx_errors_mapped

log = logging.getLogger(__name__)

CHAT = "/v1/chat/completions"
INLINE_MAX_BYTES = 20 * 1000 * 1000
UPLOAD_CHUNK = 8 * 1024 * 1024
_NAME_PREFIX = "costroute?"
_CACHED = "+cache"
# providers-2.md 4.6: 20 MB inline, 2 GB per input file; no documented item cap, so the
# store's own 50,000 applies. Batch quotas (enqueued tokens, concurrent batches) are per
# model per tier, values unverified: counted per model, overridable with
# ``batch_limit_scope``. A batch expires after 48 h pending or running.
LIMITS = BatchLimits(
    max_items=50_000,
    max_bytes=2 * 1000 * 1000 * 1000,
    item_overhead=len(b'{"key":"","request":}\n'),
    inline_max_bytes=INLINE_MAX_BYTES,
    quota_scope="model",
    window_s=48 * 3600,
)

RPC_CODES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

STATES = {
    "BATCH_STATE_PENDING": BatchStatus.VALIDATING,
    "BATCH_STATE_RUNNING": BatchStatus.IN_PROGRESS,
    "BATCH_STATE_SUCCEEDED": BatchStatus.COMPLETED,
    "BATCH_STATE_FAILED": BatchStatus.FAILED,
    "BATCH_STATE_CANCELLED": BatchStatus.CANCELLED,
    "BATCH_STATE_EXPIRED": BatchStatus.EXPIRED,
}


# --- pure translation ------------------------------------------------------------------


def display_name(metadata: Mapping[str, str]) -> str:
    return _NAME_PREFIX + urllib.parse.urlencode(sorted(metadata.items()))


def metadata_of(name: Any) -> dict[str, str]:
    if not isinstance(name, str) or not name.startswith(_NAME_PREFIX):
        return {}
    return dict(urllib.parse.parse_qsl(name.removeprefix(_NAME_PREFIX)))


def translate_item(custom_id: str, body: bytes) -> GeminiCall:
    """The Gemini call (model, ``GenerateContentRequest``) of one OpenAI chat body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Unsupported(f"item {custom_id}: body is not JSON") from None
    if not isinstance(parsed, dict):
        raise Unsupported(f"item {custom_id}: body is not an object")
    return build_request(parsed)


def _count(stats: Mapping[str, Any], key: str) -> int:
    # int64 counts are JSON strings and zero values are left out (proto3 JSON).
    try:
        return int(stats.get(key) or 0)
    except (TypeError, ValueError):
        return 0


def parse_batch(data: Any) -> BatchInfo:
    """A batch Operation (or the bare ``GenerateContentBatch``) as ``BatchInfo``."""
    if not isinstance(data, Mapping):
        raise UpstreamProtocolError("batch answer is not an object")
    meta = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else data
    assert isinstance(meta, Mapping)
    name = data.get("name") or meta.get("name")
    if not isinstance(name, str) or not name.startswith("batches/"):
        raise UpstreamProtocolError("batch answer without a batches/ name")
    state = str(meta.get("state") or "")
    status = STATES.get(state)
    if status is None:
        raise UpstreamProtocolError(f"unknown batch state {state!r}")
    stats = meta.get("batchStats") if isinstance(meta.get("batchStats"), Mapping) else {}
    assert isinstance(stats, Mapping)
    output = _output(data)
    errors: tuple[Mapping[str, Any], ...] = ()
    error = data.get("error")
    if status is BatchStatus.FAILED and isinstance(error, Mapping):
        rpc = str(error.get("status") or "")
        code = "quota_limit_exceeded" if rpc == "RESOURCE_EXHAUSTED" else rpc.lower() or None
        errors = ({"code": code, "message": str(error.get("message") or "batch failed")},)
    source = meta.get("inputConfig") if isinstance(meta.get("inputConfig"), Mapping) else {}
    assert isinstance(source, Mapping)
    return BatchInfo(
        id=name,
        status=status,
        endpoint=CHAT,
        input_file_id=str(source.get("fileName") or ""),
        created_at=0,
        output_file_id=str(output.get("responsesFile")) if output.get("responsesFile") else None,
        total=_count(stats, "requestCount"),
        completed=_count(stats, "successfulRequestCount"),
        failed=_count(stats, "failedRequestCount"),
        errors=errors,
        metadata=metadata_of(meta.get("displayName")),
    )


def _output(data: Mapping[str, Any]) -> Mapping[str, Any]:
    # The output is duplicated in ``metadata.output`` and top-level ``response``.
    meta = data.get("metadata")
    for where in (meta.get("output") if isinstance(meta, Mapping) else None, data.get("response")):
        if isinstance(where, Mapping) and ("inlinedResponses" in where or "responsesFile" in where):
            return where
    return {}


def result_of(
    custom_id: str,
    entry: Mapping[str, Any],
    *,
    model: str,
    created: int,
    cached: bool = False,
) -> BatchResult:
    """One inline or file result as a ``BatchResult``: the response through the real-time
    translation, an error ``google.rpc.Status`` through the real-time error mapping."""
    response = entry.get("response")
    if isinstance(response, Mapping):
        body = parse_response(response, model=model, created=created)
        notes = {"lane_suffix": "cache"} if cached else {}
        return BatchResult(custom_id, 200, body=body, notes=notes)
    error = entry.get("error")
    status = dict(error) if isinstance(error, Mapping) else {}
    # An item's error is a google.rpc.Status: its ``code`` is the RPC code (3), not the
    # HTTP status (400); name it so the real-time mapping gives the HTTP status.
    name = RPC_CODES.get(status.get("code"))  # type: ignore[arg-type]
    if name is not None:
        status = {**status, "status": name, "code": RPC_STATUS.get(name, 500)}
    mapped = status_error(None, {"error": status}, {})
    if is_cache_gone(mapped):
        # The item's cachedContent expired while the batch queued: not the request's
        # fault. A non-HTTP failure is retried; the next try finds no live cache.
        gone = {**mapped.error_object(), "code": "cached_content_gone", "type": "batch_error"}
        return BatchResult(custom_id, None, error=gone)
    return BatchResult(custom_id, mapped.status, error=mapped.error_object())


def item_key(custom_id: str, *, cached: bool) -> str:
    """The provider-side key of an item: its custom_id, marked when the item was sent
    with ``cachedContent`` (custom ids never hold ``+``), so results, even read back
    after a restart, know which items got the cache discount."""
    return f"{custom_id}{_CACHED}" if cached else custom_id


def _key_of(entry: Mapping[str, Any]) -> tuple[str, bool] | None:
    key = entry.get("key")
    if not isinstance(key, str):
        metadata = entry.get("metadata")
        if not isinstance(metadata, Mapping) or not isinstance(metadata.get("key"), str):
            return None
        key = str(metadata["key"])
    if key.endswith(_CACHED):
        return key.removesuffix(_CACHED), True
    return key, False


# --- the lane --------------------------------------------------------------------------


class GeminiBatchLane:
    provider_type = "gemini"
    limits = LIMITS

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str,
        clock: Clock | None = None,
        cache: CacheManager | None = None,
        inline_max_bytes: int = INLINE_MAX_BYTES,
        upload_chunk: int = UPLOAD_CHUNK,
    ) -> None:
        self._http = GeminiHttp(client, api_key=api_key)
        self._key = api_key
        self._clock = clock or SystemClock()
        # The real-time path's cache manager: items whose prefix has a live cache are
        # sent with ``cachedContent`` (batch and cache discounts together).
        self._cache = cache
        self._inline_max = inline_max_bytes
        self._chunk = upload_chunk

    async def aclose(self) -> None:
        await self._http.client.aclose()

    async def submit(
        self,
        items: AsyncIterable[tuple[str, bytes]],
        *,
        endpoint: str,
        model: str,
        metadata: Mapping[str, str],
    ) -> BatchInfo:
        if endpoint != CHAT:
            raise BatchNotCreated(Unsupported(f"Gemini batches carry {CHAT} only, not {endpoint}"))
        inline: list[tuple[str, dict[str, Any], bytes]] = []
        size = 0
        spool: BinaryIO | None = None
        count = 0
        try:
            async for custom_id, body in items:
                try:
                    call = translate_item(custom_id, body)
                except Unsupported as exc:
                    # The real-time path refuses such a request with 400; here the item is
                    # left out and its ticket, with no result, is retried then failed.
                    log.warning("gemini batch item %s left out: %s", custom_id, exc.message)
                    continue
                if call.model != model:
                    log.warning(
                        "gemini batch item %s is for %s, not %s", custom_id, call.model, model
                    )
                    continue
                request = await self._payload(call)
                key = item_key(custom_id, cached="cachedContent" in request)
                line = orjson.dumps({"key": key, "request": request})
                count += 1
                if spool is None:
                    inline.append((key, request, line))
                    size += len(line)
                    if size > self._inline_max:
                        # Over the inline limit: everything goes to a file instead, spooled
                        # on disk so a 2 GB batch never sits in memory.
                        spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
                        for _, _, kept in inline:
                            spool.write(kept + b"\n")
                        inline = []
                else:
                    spool.write(line + b"\n")
            if count == 0:
                raise BatchNotCreated(Unsupported("no item of this batch could be translated"))
            batch: dict[str, Any] = {"displayName": display_name(metadata)}
            if spool is None:
                requests = [{"request": r, "metadata": {"key": k}} for k, r, _ in inline]
                batch["inputConfig"] = {"requests": {"requests": requests}}
            else:
                try:
                    file_name = await self._upload(spool, metadata)
                except AdapterError as exc:
                    raise BatchNotCreated(exc) from exc
                batch["inputConfig"] = {"fileName": file_name}
        finally:
            if spool is not None:
                spool.close()
        try:
            data = await self._http.call(
                "POST", f"/models/{model}:batchGenerateContent", body={"batch": batch}
            )
        except UpstreamStatus as exc:
            if exc.retryable and exc.status != 429:
                raise
            # A 429 RESOURCE_EXHAUSTED on create is a refusal: no batch was made.
            raise BatchNotCreated(exc) from exc
        return parse_batch(data)

    async def _payload(self, call: GeminiCall) -> dict[str, Any]:
        if self._cache is None:
            return call.payload
        try:
            plan = await self._cache.live_plan(call)
        except Exception:  # caching only saves money: a failing registry never blocks
            log.exception("gemini batch: cache lookup failed; item sent uncached")
            return call.payload
        return plan.payload

    async def retrieve(self, batch_id: str) -> BatchInfo:
        return parse_batch(await self._http.call("GET", f"/{_checked(batch_id)}"))

    async def results(self, info: BatchInfo) -> AsyncIterator[BatchResult]:
        data = await self._http.call("GET", f"/{_checked(info.id)}")
        meta = data.get("metadata") if isinstance(data.get("metadata"), Mapping) else {}
        assert isinstance(meta, Mapping)
        model = str(meta.get("model") or "").removeprefix("models/")
        created = int(self._clock.now())
        output = _output(data)
        inlined = output.get("inlinedResponses")
        if isinstance(inlined, Mapping):
            for entry in inlined.get("inlinedResponses") or ():
                if isinstance(entry, Mapping) and (key := _key_of(entry)) is not None:
                    yield result_of(key[0], entry, model=model, created=created, cached=key[1])
                else:
                    log.warning("gemini batch %s: inline result without a key skipped", info.id)
        elif isinstance(output.get("responsesFile"), str):
            async for raw in self._download(str(output["responsesFile"])):
                try:
                    entry = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    log.warning("gemini batch %s: unparseable result line skipped", info.id)
                    continue
                if isinstance(entry, Mapping) and (key := _key_of(entry)) is not None:
                    yield result_of(key[0], entry, model=model, created=created, cached=key[1])

    async def cancel(self, batch_id: str) -> BatchInfo:
        await self._http.call("POST", f"/{_checked(batch_id)}:cancel")
        return await self.retrieve(batch_id)

    async def list(self, *, since: float | None = None) -> AsyncIterator[BatchInfo]:
        token = ""
        while True:
            params = {"pageSize": "100"}
            if token:
                params["pageToken"] = token
            page = await self._http.call("GET", "/batches", params=params)
            for item in page.get("operations") or ():
                try:
                    yield parse_batch(item)
                except UpstreamProtocolError:
                    continue  # a batch in a state we do not know is not one of ours
            token = str(page.get("nextPageToken") or "")
            if not token:
                return

    # --- files: resumable upload, download ----------------------------------------------

    def _upload_url(self) -> str:
        base = str(self._http.client.base_url).rstrip("/")
        origin, _, version = base.rpartition("/")
        return f"{origin}/upload/{version}/files"

    async def _upload(self, spool: BinaryIO, metadata: Mapping[str, str]) -> str:
        total = spool.tell()
        spool.seek(0)
        headers = {
            "x-goog-api-key": self._key,
            "x-goog-upload-protocol": "resumable",
            "x-goog-upload-command": "start",
            "x-goog-upload-header-content-length": str(total),
            "x-goog-upload-header-content-type": "application/jsonl",
            "content-type": "application/json",
        }
        body = orjson.dumps({"file": {"displayName": display_name(metadata)[:128]}})
        client = self._http.client
        with httpx_errors_mapped():
            started = await client.post(self._upload_url(), content=body, headers=headers)
        if started.status_code >= 300:
            raise status_error(started.status_code, started.content, started.headers)
        url = started.headers.get("x-goog-upload-url")
        if not url:
            raise UpstreamProtocolError("upload start without x-goog-upload-url")
        offset = 0
        while True:
            chunk = spool.read(self._chunk)
            last = offset + len(chunk) >= total
            headers = {
                "x-goog-api-key": self._key,
                "x-goog-upload-command": "upload, finalize" if last else "upload",
                "x-goog-upload-offset": str(offset),
            }
            with httpx_errors_mapped():
                answer = await client.post(url, content=chunk, headers=headers)
            if answer.status_code >= 300:
                raise status_error(answer.status_code, answer.content, answer.headers)
            offset += len(chunk)
            state = answer.headers.get("x-goog-upload-status")
            if last:
                if state != "final":
                    raise UpstreamProtocolError(f"upload ended with status {state!r}")
                try:
                    name = orjson.loads(answer.content)["file"]["name"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    raise UpstreamProtocolError("upload answer without file.name") from None
                return str(name)
            if state != "active":
                raise UpstreamProtocolError(f"upload chunk answered {state!r}")

    async def _download(self, file_name: str) -> AsyncIterator[bytes]:
        client = self._http.client
        path = f"/{file_name}:download"
        with httpx_errors_mapped():
            async with client.stream(
                "GET", path, params={"alt": "media"}, headers={"x-goog-api-key": self._key}
            ) as response:
                if response.status_code >= 300:
                    raise status_error(
                        response.status_code, await response.aread(), response.headers
                    )
                pending = b""
                async for chunk in response.aiter_bytes():
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        if line.strip():
                            yield line
                if pending.strip():
                    yield pending


def _checked(batch_id: str) -> str:
    # Names come from the provider; refuse anything that could escape the batches path.
    if not batch_id.startswith("batches/") or "/" in batch_id.removeprefix("batches/"):
        raise Unsupported(f"not a Gemini batch name: {batch_id!r}")
    return batch_id
