"""The Gemini adapter: OpenAI chat/embeddings in, Gemini REST v1beta out, OpenAI back.

Translation lives in ``gemini_translate*`` (pure); caching decisions in ``gemini_cache``
and ``gemini_cache_manager``. This module only sends, and owns the one rule that spans
both: when a request that uses a cache hears "cache gone" from the provider, the cache
is recreated once, and if that fails too the request is sent uncached.

``Reply.notes`` / ``StreamReply.notes`` tell the routing log what caching did:
``lane_suffix`` ("cache"), ``cache_name``, ``cached_tokens``, ``cache_storage_usd`` and
``cache_event`` (created | hit | recreated | fallback). A stream's notes are complete
once its events are exhausted (cached tokens arrive with the last usage).
"""

from __future__ import annotations

import array
import base64
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import httpx
import orjson

from adapters.base import Reply
from adapters.clock import Clock, SystemClock
from adapters.errors import Unsupported, UpstreamProtocolError, UpstreamStatus
from adapters.gemini.cache import CacheMode, credential_hash, estimate_tokens, parse_mode
from adapters.gemini.cache_manager import CacheManager, CachePlan
from adapters.gemini.errors import is_cache_gone, status_error
from adapters.gemini.http import MAX_RESPONSE_BYTES, GeminiHttp
from adapters.gemini.reply import StreamTranslator, parse_response
from adapters.gemini.translate import GeminiCall, build_request
from adapters.http import httpx_errors_mapped
from adapters.wire import DONE_EVENT, frame, sse_events

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_HEADER = "x-context-cache"
# The proxy's id for one caller request; the same across its retried attempts.
REQUEST_ID_HEADER = "x-costroute-request-id"


class GeminiAdapter:
    provider_type = "gemini"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str,
        cache: CacheManager | None = None,
        clock: Clock | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if cache is not None and cache.credential != credential_hash(api_key):
            # A cache belongs to the key that made it; using it with another key fails.
            raise ValueError("the cache manager must use the adapter's API key")
        self._http = GeminiHttp(client, api_key=api_key, max_response_bytes=max_response_bytes)
        self._max_response_bytes = max_response_bytes
        self._cache = cache
        self._clock = clock or SystemClock()

    async def aclose(self) -> None:
        await self._http.client.aclose()

    async def complete(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply:
        call = build_request(body)
        path = f"/models/{call.model}:generateContent"

        async def send(payload: dict[str, Any]) -> dict[str, Any]:
            return await self._http.call("POST", path, body=payload)

        data, plan = await self._send(
            call, _mode_header(headers), send, request_id=headers.get(REQUEST_ID_HEADER)
        )
        with _translation_guard():
            reply = parse_response(data, model=call.model, created=int(self._clock.now()))
        notes = _notes(plan, data.get("usageMetadata"))
        return Reply(body=orjson.dumps(reply), parsed=reply, notes=notes)

    async def open_stream(
        self, body: dict[str, Any], *, headers: Mapping[str, str]
    ) -> GeminiStream:
        call = build_request(body)
        path = f"/models/{call.model}:streamGenerateContent"

        async def send(payload: dict[str, Any]) -> httpx.Response:
            return await self._http.open("POST", path, body=payload, params={"alt": "sse"})

        response, plan = await self._send(
            call, _mode_header(headers), send, request_id=headers.get(REQUEST_ID_HEADER)
        )
        translator = StreamTranslator(model=call.model, created=int(self._clock.now()))
        return GeminiStream(response, translator, plan, max_event_bytes=self._max_response_bytes)

    async def embed(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply:
        model, texts = _embedding_inputs(body)
        request: dict[str, Any] = {"model": f"models/{model}"}
        if body.get("dimensions") is not None:
            request["outputDimensionality"] = body["dimensions"]
        requests = [{**request, "content": {"parts": [{"text": t}]}} for t in texts]
        data = await self._http.call(
            "POST", f"/models/{model}:batchEmbedContents", body={"requests": requests}
        )
        embeddings = data.get("embeddings")
        if not isinstance(embeddings, list) or len(embeddings) != len(texts):
            raise UpstreamProtocolError("Gemini returned a different number of embeddings.")
        as_base64 = body.get("encoding_format") == "base64"
        items = []
        for index, item in enumerate(embeddings):
            values = item.get("values") if isinstance(item, Mapping) else None
            if not isinstance(values, list):
                raise UpstreamProtocolError("Gemini returned an embedding without values.")
            vector: Any = _base64_floats(values) if as_base64 else values
            items.append({"object": "embedding", "index": index, "embedding": vector})
        # Gemini reports no token usage for embeddings: estimate it (~4 chars per token).
        tokens = sum(estimate_tokens(t) for t in texts)
        reply = {
            "object": "list",
            "data": items,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Reply(body=orjson.dumps(reply), parsed=reply, notes={"usage_estimated": True})

    async def _send(
        self,
        call: GeminiCall,
        header: str | None,
        send: Callable[[dict[str, Any]], Awaitable[T]],
        *,
        request_id: str | None = None,
    ) -> tuple[T, CachePlan]:
        cache = self._cache
        if cache is None:
            parse_mode(header, CacheMode.OFF)  # still reject a malformed header
            return await send(call.payload), CachePlan(call.payload)
        mode = parse_mode(header, cache.policy.mode)
        plan = await _best_effort(
            cache.plan(call, mode, request_id=request_id),
            CachePlan(call.payload, event="fallback"),
        )
        for attempt in range(2):
            use = plan.use
            if use is None:
                return await send(plan.payload), plan
            try:
                result = await send(plan.payload)
            except UpstreamStatus as exc:
                if not is_cache_gone(exc):
                    raise
                log.info("gemini cache %s is gone (%s)", use.name, exc.status)
                fallback = CachePlan(call.payload, event="fallback")
                if attempt == 0:
                    plan = await _best_effort(cache.recreate(call, use), fallback)
                else:
                    await _best_effort(cache.forget(use), None)
                    plan = fallback
                continue
            await _best_effort(cache.record_use(use), None)
            return result, plan
        return await send(call.payload), plan


async def _best_effort(work: Awaitable[T], fallback: T) -> T:
    """Caching only saves money: a failing registry (or a bug in the cache path) must
    not fail the request, so it is logged and the request goes out uncached."""
    try:
        return await work
    except Exception:
        log.exception("gemini cache bookkeeping failed; continuing without it")
        return fallback


@contextlib.contextmanager
def _translation_guard() -> Iterator[None]:
    """A 2xx reply of a shape the translation cannot read is the provider's fault: a 502
    for the caller, never a 500 from the proxy."""
    try:
        yield
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        log.warning("gemini reply could not be translated: %r", exc)
        raise UpstreamProtocolError(
            "The upstream provider sent a reply costroute could not translate."
        ) from exc


class GeminiStream:
    """An open Gemini SSE stream, translated event by event into OpenAI chunks."""

    def __init__(
        self,
        response: httpx.Response,
        translator: StreamTranslator,
        plan: CachePlan,
        *,
        max_event_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._response = response
        self._max_event_bytes = max_event_bytes
        self._translator = translator
        self._plan = plan
        self.headers: Mapping[str, str] = {}
        # Filled in further when the stream ends (cached tokens come with the last usage).
        self._notes = _notes(plan, None)
        self.notes: Mapping[str, Any] = self._notes

    async def events(self) -> AsyncIterator[bytes]:
        translator = self._translator
        with httpx_errors_mapped():
            events = sse_events(self._response.aiter_bytes(), max_event_bytes=self._max_event_bytes)
            async for payload in events:
                try:
                    data = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    raise UpstreamProtocolError() from None
                if not isinstance(data, dict):
                    raise UpstreamProtocolError()
                if "error" in data:
                    raise status_error(None, data, {})
                with _translation_guard():
                    chunks = translator.feed(data)
                for chunk in chunks:
                    yield frame(orjson.dumps(chunk))
        with _translation_guard():
            closing = translator.finish()
        self._notes.update(_notes(self._plan, translator.usage_metadata))
        for chunk in closing:
            yield frame(orjson.dumps(chunk))
        yield DONE_EVENT

    async def aclose(self) -> None:
        await self._response.aclose()


def _mode_header(headers: Mapping[str, str]) -> str | None:
    for name, value in headers.items():
        if name.lower() == CACHE_HEADER:
            return value
    return None


def _notes(plan: CachePlan, usage: Any) -> dict[str, Any]:
    use = plan.use
    if use is None:
        return {"cache_event": plan.event} if plan.event else {}
    cached = usage.get("cachedContentTokenCount") if isinstance(usage, Mapping) else None
    return {
        "lane_suffix": "cache",
        "cache_name": use.name,
        "cached_tokens": cached if isinstance(cached, int) else 0,
        "cache_storage_usd": use.storage_usd,
        "cache_event": use.event,
    }


def _embedding_inputs(body: Mapping[str, Any]) -> tuple[str, list[str]]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Unsupported("model is required.", param="model")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise Unsupported(
            "input must be a string or an array of strings for Gemini (token arrays "
            "cannot be expressed).",
            param="input",
        )
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise Unsupported("encoding_format must be float or base64.", param="encoding_format")
    return model.removeprefix("models/"), texts


def _base64_floats(values: list[Any]) -> str:
    # OpenAI's base64 encoding: little-endian float32, as its SDK decodes with numpy.
    packed = array.array("f", (float(v) for v in values))
    if packed.itemsize != 4:  # pragma: no cover - every supported platform has 4-byte floats
        raise UpstreamProtocolError("float32 is not available")
    if sys.byteorder != "little":  # pragma: no cover
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")
