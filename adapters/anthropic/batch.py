"""Anthropic Message Batches as a ``BatchLane`` (providers.md 5, providers-2.md 3).

- Create: ``POST {base_url}/messages/batches`` with ``{"requests": [{"custom_id",
  "params"}]}``, everything inline (there is no file upload). Each item is translated by
  the real-time path's own ``Translator`` (managed prompt caching included, with 1-hour
  breakpoints: a batch's items run minutes to hours apart), so a batch answer is the same
  ``chat.completion`` real time would give. The body is spooled to a temporary file and
  streamed, so a 256 MB batch never sits in memory.
- Poll: ``GET .../messages/batches/{id}``. ``processing_status`` ``in_progress`` /
  ``canceling`` / ``ended``; the counts other than ``processing`` stay zero until the
  whole batch has ended.
- Results: a JSONL stream from ``GET .../messages/batches/{id}/results`` (the path
  ``results_url`` names; the lane builds it from its own base URL instead of following
  the absolute URL, so the provider key is never sent to a host the answer names), in any
  order, joined by ``custom_id``. ``succeeded`` goes through the real-time reply
  translation; ``errored`` through the real-time error mapping (``overloaded_error`` /
  ``api_error`` / ``rate_limit_error`` retryable, ``invalid_request_error`` permanent);
  ``canceled`` and ``expired`` become ``batch_cancelled`` / ``batch_expired`` and are
  requeued, unbilled (Anthropic bills neither).
- Prices: every token at 50 %, and the cache multipliers stack on top (providers-2.md 3:
  a read costs 5 % of the input price, a 1-hour write 100 %); the write premium is
  reported in ``notes["cache_storage_usd"]`` with the batch discount applied.

Metadata: Anthropic batches carry none. The one pair costroute round-trips
(``BATCH_METADATA_KEY``: the local batch id) is written into every item's ``custom_id``
(``NN<local id><ticket id>``, NN the local id's length, 57 of the 64 characters allowed),
and ``list`` reads it back from the first result line of an ended batch. A batch still
running cannot be read that way: ``list`` marks it ``metadata_pending`` and
reconciliation waits for it to end rather than guess, unless its creation time or size
rule it out (see ``proxy.deferral.scheduler``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from typing import IO, Any

import httpx
import orjson

from adapters.anthropic import reply
from adapters.anthropic.chat import Translator, headers_for
from adapters.base import (
    BATCH_METADATA_KEY,
    BatchInfo,
    BatchLimits,
    BatchNotCreated,
    BatchResult,
    BatchStatus,
)
from adapters.clock import Clock, SystemClock
from adapters.errors import AdapterError, Unsupported, UpstreamProtocolError, UpstreamStatus
from adapters.http import httpx_errors_mapped
from adapters.wire import status_error

log = logging.getLogger(__name__)

CHAT = "/v1/chat/completions"
# providers.md 5.4: at most 100,000 requests or 256 MB per batch. The flusher counts the
# OpenAI bodies; their Messages translations are about as long (the same text, images
# passed as they are), so the byte bound keeps a 6 MB margin under 256 MiB.
LIMITS = BatchLimits(
    max_items=100_000,
    max_bytes=262_000_000,
    item_overhead=len(b'{"custom_id":"","params":},') + 2 + 24,
    inline_max_bytes=262_000_000,
    # Anthropic's batch limits count queued requests across models (providers-2.md 3),
    # not live batches; one provider-wide live batch would let a Haiku batch hold every
    # Sonnet ticket, so ``max_active_batches`` counts per model by default here too.
    quota_scope="model",
    window_s=24 * 3600,
)
PAGE = 100
_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_BATCH_ID = re.compile(r"^msgbatch_[a-zA-Z0-9_-]+$")
_ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}  # fmt: skip


# --- pure translation ------------------------------------------------------------------


def item_id(tag: str, custom_id: str) -> str | None:
    """The provider ``custom_id`` carrying ``tag`` (the local batch id) and ``custom_id``;
    None when the pair does not fit Anthropic's ``^[a-zA-Z0-9_-]{1,64}$``."""
    combined = f"{len(tag):02d}{tag}{custom_id}"
    return combined if len(tag) < 100 and _ID.match(combined) else None


def split_id(value: Any) -> tuple[str, str] | None:
    """(tag, custom_id) of a provider ``custom_id`` made by ``item_id``."""
    if not isinstance(value, str) or len(value) < 3 or not value[:2].isdigit():
        return None
    size = int(value[:2])
    tag, custom_id = value[2 : 2 + size], value[2 + size :]
    if len(tag) != size or not custom_id:
        return None
    return tag, custom_id


def _time(value: Any) -> int:
    if not isinstance(value, str):
        return 0
    try:
        return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _counts(data: Mapping[str, Any]) -> dict[str, int]:
    counts = data.get("request_counts")
    counts = counts if isinstance(counts, Mapping) else {}
    names = ("processing", "succeeded", "errored", "canceled", "expired")
    return {name: int(counts.get(name) or 0) for name in names}


def parse_batch(data: Any, *, metadata: Mapping[str, str] | None = None) -> BatchInfo:
    """A ``message_batch`` object as ``BatchInfo``. ``ended`` is ``cancelled`` when a
    cancel was asked, ``expired`` when the 24-hour window left requests unprocessed, else
    ``completed``; finished items are readable in all three."""
    if not isinstance(data, Mapping) or data.get("type") != "message_batch":
        raise UpstreamProtocolError("batch answer is not a message_batch")
    batch_id = data.get("id")
    if not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id):
        raise UpstreamProtocolError("message_batch without a valid id")
    state = data.get("processing_status")
    counts = _counts(data)
    if state == "in_progress":
        status = BatchStatus.IN_PROGRESS
    elif state == "canceling":
        status = BatchStatus.CANCELLING
    elif state == "ended":
        if data.get("cancel_initiated_at"):
            status = BatchStatus.CANCELLED
        elif counts["expired"]:
            status = BatchStatus.EXPIRED
        else:
            status = BatchStatus.COMPLETED
    else:
        raise UpstreamProtocolError(f"unknown processing_status {state!r}")
    return BatchInfo(
        id=batch_id,
        status=status,
        endpoint=CHAT,
        created_at=_time(data.get("created_at")),
        output_file_id=data.get("results_url") or None,
        total=sum(counts.values()),
        completed=counts["succeeded"],
        failed=counts["errored"] + counts["canceled"] + counts["expired"],
        metadata=dict(metadata or {}),
        # Running: the ids that carry the metadata cannot be read until it ends.
        metadata_pending=state != "ended" and metadata is None,
    )


def result_of(
    line: Mapping[str, Any], translator: Translator, *, created: int
) -> BatchResult | None:
    """One result line as a ``BatchResult`` (None: not one of costroute's items)."""
    ids = split_id(line.get("custom_id"))
    result = line.get("result")
    if ids is None or not isinstance(result, Mapping):
        return None
    custom_id = ids[1]
    kind = result.get("type")
    if kind == "succeeded" and isinstance(result.get("message"), Mapping):
        message = result["message"]
        model = str(message.get("model") or "")
        body = reply.completion(message, model=model, created=created)
        notes = translator.notes(model, message.get("usage"), batch=True)
        return BatchResult(custom_id, 200, body=body, notes=notes)
    if kind == "errored":
        response = result.get("error")
        response = response if isinstance(response, Mapping) else {}
        inner = response.get("error") if isinstance(response.get("error"), Mapping) else {}
        assert isinstance(inner, Mapping)
        status = _ERROR_STATUS.get(str(inner.get("type")), 500)
        mapped = status_error(status, orjson.dumps(response), {})
        return BatchResult(custom_id, mapped.status, error=mapped.error_object())
    if kind in ("canceled", "expired"):
        code = "batch_cancelled" if kind == "canceled" else "batch_expired"
        message = (
            "The batch was cancelled before this request ran."
            if kind == "canceled"
            else "This request could not be executed before the batch's 24-hour window ended."
        )
        error = {"message": message, "type": "batch_error", "param": None, "code": code}
        return BatchResult(custom_id, None, error=error)
    raise UpstreamProtocolError(f"unknown batch result type {kind!r}")


# --- the lane --------------------------------------------------------------------------


class AnthropicBatchLane:
    provider_type = "anthropic"
    limits = LIMITS

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str | None,
        translator: Translator | None = None,
        clock: Clock | None = None,
        chunk: int = 1024 * 1024,
    ) -> None:
        self._client = client
        self._headers = headers_for(api_key)
        self._translator = translator or Translator()
        self._clock = clock or SystemClock()
        self._chunk = chunk

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        with httpx_errors_mapped():
            response = await self._client.request(method, path, headers=self._headers, **kwargs)
        if response.status_code >= 300:
            raise status_error(response.status_code, response.content, response.headers)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError() from None

    async def submit(
        self,
        items: AsyncIterable[tuple[str, bytes]],
        *,
        endpoint: str,
        model: str,
        metadata: Mapping[str, str],
    ) -> BatchInfo:
        if endpoint != CHAT:
            raise BatchNotCreated(Unsupported(f"Message Batches carry {CHAT} only, not {endpoint}"))
        if set(metadata) - {BATCH_METADATA_KEY}:
            # Nowhere to keep anything else: the metadata rides in the items' custom ids.
            raise BatchNotCreated(Unsupported(f"only {BATCH_METADATA_KEY} metadata is carried"))
        tag = metadata.get(BATCH_METADATA_KEY, "")
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            count = await self._spool(items, spool, tag=tag, model=model)
            if count == 0:
                raise BatchNotCreated(Unsupported("no item of this batch could be translated"))
            size = spool.tell()
            spool.seek(0)

            async def body() -> AsyncIterator[bytes]:
                while chunk := spool.read(self._chunk):
                    yield chunk

            headers = {**self._headers, "content-length": str(size)}
            try:
                with httpx_errors_mapped():
                    response = await self._client.post(
                        "/messages/batches", content=body(), headers=headers
                    )
            except AdapterError as exc:
                raise exc from None  # the outcome is unknown: reconciliation settles it
        if response.status_code >= 300:
            error = status_error(response.status_code, response.content, response.headers)
            if isinstance(error, UpstreamStatus) and error.retryable and error.status != 429:
                raise error  # a 5xx while creating: the batch may exist
            # A 4xx (and a 429 rate limit) refuses the create: nothing was made.
            raise BatchNotCreated(error)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError() from None
        return parse_batch(data, metadata=metadata)

    async def _spool(
        self, items: AsyncIterable[tuple[str, bytes]], spool: IO[bytes], *, tag: str, model: str
    ) -> int:
        count = 0
        spool.write(b'{"requests":[')
        async for custom_id, body in items:
            provider_id = item_id(tag, custom_id)
            if provider_id is None:
                log.warning("anthropic batch item %s left out: id too long", custom_id)
                continue
            try:
                parsed = orjson.loads(body)
                if not isinstance(parsed, dict):
                    raise Unsupported("body is not an object")
                parsed.pop("stream", None)
                parsed.pop("stream_options", None)
                params = self._translator.translate(parsed, ttl="1h")
            except (orjson.JSONDecodeError, Unsupported) as exc:
                # The real-time path refuses such a request with 400; here the item is left
                # out, and its ticket, with no result, is retried then failed.
                log.warning("anthropic batch item %s left out: %s", custom_id, exc)
                continue
            if params["model"] != model:
                log.warning("anthropic batch item %s is for %s, not %s", custom_id,
                            params["model"], model)  # fmt: skip
                continue
            if count:
                spool.write(b",")
            spool.write(orjson.dumps({"custom_id": provider_id, "params": params}))
            count += 1
        spool.write(b"]}")
        return count

    async def retrieve(self, batch_id: str) -> BatchInfo:
        data = await self._call("GET", f"/messages/batches/{_checked(batch_id)}")
        return parse_batch(data, metadata={})

    async def results(self, info: BatchInfo) -> AsyncIterator[BatchResult]:
        created = int(self._clock.now())
        async for line in self._lines(info.id):
            result = result_of(line, self._translator, created=created)
            if result is None:
                log.warning("anthropic batch %s: a result line not of ours skipped", info.id)
                continue
            yield result

    async def _lines(self, batch_id: str) -> AsyncGenerator[Mapping[str, Any]]:
        path = f"/messages/batches/{_checked(batch_id)}/results"
        # The SDK asks for the JSONL stream as ``application/binary``.
        headers = {**self._headers, "accept": "application/binary"}
        with httpx_errors_mapped():
            async with self._client.stream("GET", path, headers=headers) as response:
                if response.status_code >= 300:
                    content = await response.aread()
                    raise status_error(response.status_code, content, response.headers)
                pending = b""
                async for chunk in response.aiter_bytes():
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for raw in complete:
                        if line := _parsed(raw, batch_id):
                            yield line
                if line := _parsed(pending, batch_id):
                    yield line

    async def cancel(self, batch_id: str) -> BatchInfo:
        data = await self._call("POST", f"/messages/batches/{_checked(batch_id)}/cancel")
        return parse_batch(data, metadata={})

    async def list(self, *, since: float | None = None) -> AsyncIterator[BatchInfo]:
        """Newest first. An ended batch's metadata is read from its first result line
        (not for one created before ``since``); a running one is ``metadata_pending``; one
        whose results are gone (archived after 29 days) has none."""
        after = ""
        while True:
            params = {"limit": str(PAGE)}
            if after:
                params["after_id"] = after
            page = await self._call("GET", "/messages/batches", params=params)
            data = page.get("data") if isinstance(page, Mapping) else None
            for raw in data or ():
                try:
                    info = parse_batch(raw)
                except UpstreamProtocolError:
                    continue  # a shape we do not know is not one of ours
                if info.status.final:
                    wanted = since is None or info.created_at >= since
                    info = parse_batch(raw, metadata=await self._metadata(raw) if wanted else {})
                yield info
            after = str(page.get("last_id") or "")
            if not page.get("has_more") or not after:
                return

    async def _metadata(self, raw: Mapping[str, Any]) -> dict[str, str]:
        if not raw.get("results_url") or raw.get("archived_at"):
            return {}
        lines = self._lines(str(raw["id"]))
        try:
            first = await anext(lines, None)
        except UpstreamStatus as exc:
            if exc.status == 404:  # results deleted or archived meanwhile
                return {}
            raise
        finally:
            await lines.aclose()  # one line is enough: close the stream now
        ids = None if first is None else split_id(first.get("custom_id"))
        return {} if ids is None else {BATCH_METADATA_KEY: ids[0]}


def _parsed(raw: bytes, batch_id: str) -> Mapping[str, Any] | None:
    if not raw.strip():
        return None
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("anthropic batch %s: unparseable result line skipped", batch_id)
        return None
    return line if isinstance(line, Mapping) else None


def _checked(batch_id: str) -> str:
    # Ids come from the provider; refuse anything that could escape the batches path.
    if not _BATCH_ID.match(batch_id):
        raise Unsupported(f"not an Anthropic batch id: {batch_id!r}")
    return batch_id
