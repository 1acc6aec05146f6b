"""The Anthropic adapter: OpenAI chat in, ``POST {base_url}/messages`` out (with the
provider's ``x-api-key`` and ``anthropic-version``), OpenAI back. Translation lives in
``translate.py`` and ``reply.py`` (pure); this module only sends."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from adapters.anthropic import reply
from adapters.anthropic.translate import build_request
from adapters.base import Reply
from adapters.errors import Unsupported, UpstreamProtocolError, UpstreamUnreachable
from adapters.http import Upstream, UpstreamResponse, pick_headers
from adapters.wire import DONE_EVENT, frame, raise_for_status, sse_event_groups, status_error

VERSION = "2023-06-01"
# Upstream headers worth handing to callers: request ids and rate-limit state.
_FORWARDED = ("request-id", "retry-after")
_FORWARDED_PREFIX = "anthropic-ratelimit-"
# Models that take extended thinking (``reasoning_effort`` becomes ``thinking``). Claude
# 3.7 and the 4.x families do; older models refuse the field.
_THINKING = ("claude-3-7", "claude-sonnet-4", "claude-opus-4", "claude-haiku-4", "claude-4")


class AnthropicAdapter:
    provider_type = "anthropic"

    def __init__(
        self,
        upstream: Upstream,
        *,
        api_key: str | None,
        max_tokens: Mapping[str, int] | None = None,
        max_response_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._upstream = upstream
        self._headers = {"anthropic-version": VERSION, "content-type": "application/json"}
        if api_key:
            self._headers["x-api-key"] = api_key
        self._max_tokens = dict(max_tokens or {})
        self._max_response_bytes = max_response_bytes

    async def aclose(self) -> None:
        await self._upstream.aclose()

    def translate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        model = str(body.get("model"))
        return build_request(
            body,
            max_tokens_default=self._max_tokens.get(model, 4096),
            thinking=model.startswith(_THINKING),
        )

    async def complete(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply:
        request = self.translate({k: v for k, v in body.items() if k != "stream"})
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
            notes=reply.cache_notes(message.get("usage")),
        )

    async def open_stream(
        self, body: dict[str, Any], *, headers: Mapping[str, str]
    ) -> AnthropicStream:
        request = self.translate({**body, "stream": True})
        response = await self._upstream.post(
            "/messages", orjson.dumps(request), {**self._headers, "accept": "text/event-stream"}
        )
        await raise_for_status(response, self._max_response_bytes)
        translator = reply.StreamTranslator(model=request["model"], created=int(time.time()))
        return AnthropicStream(response, translator, max_event_bytes=self._max_response_bytes)

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
    ) -> None:
        self._response = response
        self._translator = translator
        self._max_event_bytes = max_event_bytes
        self.headers: Mapping[str, str] = _forwarded(response.headers)
        self._notes: dict[str, Any] = {}
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
        self._notes.update(translator.notes)
        yield DONE_EVENT

    async def aclose(self) -> None:
        await self._response.close()


_STATUS = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500,
           "invalid_request_error": 400, "timeout_error": 504}  # fmt: skip


def _status_of(event: Mapping[str, Any]) -> int:
    error = event.get("error") or {}
    return _STATUS.get(str(error.get("type")), 500)


def _forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    return pick_headers(headers, _FORWARDED, _FORWARDED_PREFIX)
