"""The Anthropic adapter: OpenAI chat in, ``POST {base_url}/messages`` out (with the
provider's ``x-api-key`` and ``anthropic-version``), OpenAI back. Translation lives in
``translate.py`` and ``reply.py`` (pure); this module only sends."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from adapters.anthropic import cache, reply
from adapters.anthropic.translate import build_request
from adapters.base import Reply
from adapters.errors import Unsupported, UpstreamProtocolError, UpstreamUnreachable
from adapters.http import Upstream, UpstreamResponse, pick_headers
from adapters.parts import ModelPrices
from adapters.wire import DONE_EVENT, frame, raise_for_status, sse_event_groups, status_error

VERSION = "2023-06-01"
CACHE_HEADER = "x-context-cache"
# The proxy's id for one caller request; the same across its retried attempts.
REQUEST_ID_HEADER = "x-costroute-request-id"


@dataclass(frozen=True, slots=True)
class Caching:
    """What managed prompt caching reads: ``[cache]`` (mode, min_repeats, window), the
    models' minimum cacheable sizes, their input prices and the clock."""

    mode: str = "auto"
    min_repeats: int = 2
    window_s: float = 3600.0
    min_tokens: Mapping[str, int] = field(default_factory=dict)
    # The model's prices (input, cache writes, batch discount) from the price table.
    prices: Callable[[str], ModelPrices | None] = lambda _model: None
    clock: Callable[[], float] = time.time


# Upstream headers worth handing to callers: request ids and rate-limit state.
_FORWARDED = ("request-id", "retry-after")
_FORWARDED_PREFIX = "anthropic-ratelimit-"
# Models that take extended thinking (``reasoning_effort`` becomes ``thinking``). Claude
# 3.7 and the 4.x families do; older models refuse the field.
_THINKING = ("claude-3-7", "claude-sonnet-4", "claude-opus-4", "claude-haiku-4", "claude-4")


class Translator:
    """OpenAI chat bodies into Messages bodies, with managed prompt caching: shared by the
    real-time adapter and the Message Batches lane, so a batch item is sent exactly as the
    same request in real time would be (and both feed one memory of seen prefixes)."""

    def __init__(
        self, *, max_tokens: Mapping[str, int] | None = None, caching: Caching | None = None
    ) -> None:
        self._max_tokens = dict(max_tokens or {})
        self.caching = caching or Caching()
        self._sightings = cache.Sightings()

    def translate(
        self,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        *,
        ttl: str | None = None,
    ) -> dict[str, Any]:
        """``ttl`` forces the TTL of a placed breakpoint (batches use "1h": their items run
        minutes to hours apart, longer than a 5-minute entry lives)."""
        model = str(body.get("model"))
        request = build_request(
            body,
            max_tokens_default=self._max_tokens.get(model, 4096),
            thinking=model.startswith(_THINKING),
        )
        return self._cache(request, headers or {}, ttl)

    def _cache(
        self, request: dict[str, Any], headers: Mapping[str, str], ttl: str | None
    ) -> dict[str, Any]:
        """Place a breakpoint on a prefix that keeps coming back (``cache.py``)."""
        settings = self.caching
        mode = (headers.get(CACHE_HEADER) or settings.mode).lower()
        prefix = cache.prefix_of(request)
        if prefix is None or cache.has_breakpoints(request):
            return request
        fingerprint, tokens = prefix
        times = self._sightings.see(
            fingerprint, settings.clock(), settings.window_s, headers.get(REQUEST_ID_HEADER)
        )
        model = str(request["model"])
        placement = cache.decide(
            times,
            prefix_tokens=tokens,
            minimum=settings.min_tokens.get(model, 1024),
            min_repeats=settings.min_repeats,
            mode=mode,
        )
        if placement is None:
            return request
        if ttl is not None:
            placement = cache.Placement(ttl, placement.prefix_tokens)
        return cache.place(request, placement)

    def notes(
        self, model: str, usage: Mapping[str, Any] | None, *, batch: bool = False
    ) -> dict[str, Any]:
        """Cache reads and writes for the routing log, and the write premium as an extra
        cost: the price table's write price less the input price the pricer already
        counts (by default 125 % / 200 % of input for 5-minute / 1-hour entries); in a
        Message Batch the batch discount applies to it too (the discounts stack,
        providers-2.md 3)."""
        notes = reply.cache_notes(usage)
        created = (usage or {}).get("cache_creation") or {}
        price = self.caching.prices(model)
        if notes and price is not None:
            write_5m = price.cache_write
            write_1h = price.cache_write_1h
            if write_5m is None:
                write_5m = price.input * (1 + cache.WRITE_PREMIUM["5m"])
            if write_1h is None:
                write_1h = price.input * (1 + cache.WRITE_PREMIUM["1h"])
            premium = int(created.get("ephemeral_5m_input_tokens") or 0) * (
                write_5m - price.input
            ) + int(created.get("ephemeral_1h_input_tokens") or 0) * (write_1h - price.input)
            rate = 1.0 - price.batch_discount if batch else 1.0
            notes["cache_storage_usd"] = premium * rate / 1_000_000
        return notes


class AnthropicAdapter:
    provider_type = "anthropic"

    def __init__(
        self,
        upstream: Upstream,
        *,
        api_key: str | None,
        translator: Translator | None = None,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._upstream = upstream
        self._headers = headers_for(api_key)
        self._max_response_bytes = max_response_bytes
        self.translator = translator or Translator()

    async def aclose(self) -> None:
        await self._upstream.aclose()

    def translate(
        self, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        return self.translator.translate(body, headers)

    def _notes(self, model: str, usage: Mapping[str, Any] | None) -> dict[str, Any]:
        return self.translator.notes(model, usage)

    async def complete(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply:
        request = self.translate({k: v for k, v in body.items() if k != "stream"}, headers)
        response = await self._upstream.post("/messages", orjson.dumps(request), self._headers)
        try:
            content = await response.read(self._max_response_bytes)
        finally:
            await response.close()
        if response.status >= 300:
            raise status_error(response.status, content, response.headers)
        try:
            message = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError() from None
        if not isinstance(message, dict) or message.get("type") != "message":
            raise UpstreamProtocolError()
        parsed = reply.completion(message, model=request["model"], created=int(time.time()))
        return Reply(
            body=orjson.dumps(parsed),
            headers=_forwarded(response.headers),
            parsed=parsed,
            notes=self._notes(request["model"], message.get("usage")),
        )

    async def open_stream(
        self, body: dict[str, Any], *, headers: Mapping[str, str]
    ) -> AnthropicStream:
        request = self.translate({**body, "stream": True}, headers)
        response = await self._upstream.post(
            "/messages", orjson.dumps(request), {**self._headers, "accept": "text/event-stream"}
        )
        await raise_for_status(response, self._max_response_bytes)
        translator = reply.StreamTranslator(model=request["model"], created=int(time.time()))
        return AnthropicStream(
            response,
            translator,
            max_event_bytes=self._max_response_bytes,
            notes=lambda usage: self._notes(request["model"], usage),
        )

    async def embed(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply:
        raise Unsupported("Anthropic has no embeddings API.", param="model")


class AnthropicStream:
    """An open Messages stream, translated event by event into OpenAI chunks."""

    def __init__(
        self,
        response: UpstreamResponse,
        translator: reply.StreamTranslator,
        *,
        max_event_bytes: int,
        notes: Callable[[Mapping[str, Any]], dict[str, Any]] = reply.cache_notes,
    ) -> None:
        self._response = response
        self._translator = translator
        self._max_event_bytes = max_event_bytes
        self.headers: Mapping[str, str] = _forwarded(response.headers)
        self._notes: dict[str, Any] = {}
        self._make_notes = notes
        self.notes: Mapping[str, Any] = self._notes  # complete once the events are exhausted

    async def events(self) -> AsyncIterator[bytes]:
        translator = self._translator
        ended = False
        groups = sse_event_groups(self._response.chunks(), max_event_bytes=self._max_event_bytes)
        async for payloads in groups:
            for payload in payloads:
                try:
                    event = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    raise UpstreamProtocolError() from None
                if not isinstance(event, dict):
                    raise UpstreamProtocolError()
                kind = event.get("type")
                if kind == "error":
                    # A mid-stream failure (e.g. overloaded_error): the relay turns it into
                    # the in-band error costroute sends for every provider.
                    raise status_error(_status_of(event), payload, {})
                if kind == "message_stop":
                    ended = True
                    break
                for chunk in translator.feed(event):
                    yield frame(orjson.dumps(chunk))
            if ended:
                break
        if not ended:
            raise UpstreamUnreachable("The upstream stream ended before it was complete.")
        for chunk in translator.finish():
            yield frame(orjson.dumps(chunk))
        self._notes.update(self._make_notes(translator.usage))
        yield DONE_EVENT

    async def aclose(self) -> None:
        await self._response.close()


_STATUS = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500,
           "invalid_request_error": 400, "timeout_error": 504}  # fmt: skip


def _status_of(event: Mapping[str, Any]) -> int:
    error = event.get("error") or {}
    return _STATUS.get(str(error.get("type")), 500)


def headers_for(api_key: str | None) -> dict[str, str]:
    """The provider's headers: its own key (never a caller's) and the API version."""
    headers = {"anthropic-version": VERSION, "content-type": "application/json"}
    if api_key:
        headers["x-api-key"] = api_key
    return headers


def _forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    return pick_headers(headers, _FORWARDED, _FORWARDED_PREFIX)
