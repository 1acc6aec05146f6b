"""The OpenAI adapter: passes OpenAI wire-format requests through to an OpenAI-compatible
API with the provider's key, and hands replies back unchanged.

Streams are always requested with ``stream_options.include_usage`` so the proxy can meter
them; the proxy strips the usage chunk again for callers that did not ask for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import orjson

from adapters.base import Reply
from adapters.errors import AdapterError, UpstreamProtocolError, UpstreamUnreachable
from adapters.http import Upstream, UpstreamResponse, pick_headers
from adapters.wire import DONE_EVENT, frame, raise_for_status, sse_event_groups, status_error

# Upstream response headers worth handing to callers (rate-limit state, request ids).
_FORWARDED = ("x-request-id", "openai-processing-ms")
_FORWARDED_PREFIX = "x-ratelimit-"
# How long to wait for the end of a stream's body after its [DONE] event.
_DRAIN_SECONDS = 0.1


class OpenAIAdapter:
    provider_type = "openai"

    def __init__(
        self,
        upstream: Upstream,
        *,
        api_key: str | None,
        max_response_bytes: int = 64 * 1024 * 1024,
        flex_timeout: float | None = None,
    ) -> None:
        self._upstream = upstream
        # Flex requests are slower; OpenAI suggests a 15-minute client timeout for them.
        self._flex_timeout = flex_timeout
        auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._json_headers = {**auth, "content-type": "application/json"}
        self._sse_headers = {**self._json_headers, "accept": "text/event-stream"}
        self._max_response_bytes = max_response_bytes

    async def aclose(self) -> None:
        await self._upstream.aclose()

    async def complete(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply:
        return await self._post_json("/chat/completions", body)

    async def embed(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply:
        return await self._post_json("/embeddings", body)

    async def open_stream(
        self, body: dict[str, Any], *, headers: Mapping[str, str]
    ) -> OpenAIStream:
        upstream_body = dict(body)
        options = dict(upstream_body.get("stream_options") or {})
        options["include_usage"] = True
        upstream_body["stream_options"] = options
        response = await self._upstream.post(
            "/chat/completions", orjson.dumps(upstream_body), self._sse_headers
        )
        await raise_for_status(response, self._max_response_bytes)
        return OpenAIStream(response, max_event_bytes=self._max_response_bytes)

    # --- the Responses API (passed through natively) ------------------------------------

    async def respond(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply:
        """``POST /responses`` without streaming (background mode included)."""
        return await self._post_json("/responses", body)

    async def open_response_stream(
        self, body: dict[str, Any], *, headers: Mapping[str, str]
    ) -> ResponsesStream:
        response = await self._upstream.post("/responses", orjson.dumps(body), self._sse_headers)
        await raise_for_status(response, self._max_response_bytes)
        return ResponsesStream(response, max_event_bytes=self._max_response_bytes)

    async def resource(
        self, method: str, path: str, *, stream: bool = False
    ) -> Reply | ResponsesStream:
        """A stored response's own routes (``GET``/``DELETE /responses/{id}``, ``cancel``,
        ``input_items``, a resumed stream): the path and query are the caller's."""
        headers = self._sse_headers if stream else self._json_headers
        response = await self._upstream.send(method, path, None, headers)
        if response.status >= 300 or not stream:
            try:
                content = await response.read(self._max_response_bytes)
            finally:
                await response.close()
            if response.status >= 300:
                raise status_error(response.status, content, response.headers)
            return _json_reply(content, response.headers)
        return ResponsesStream(response, max_event_bytes=self._max_response_bytes)

    # --- the stateless rest of the API, forwarded as is ---------------------------------

    async def forward(
        self,
        path: str,
        body: bytes | AsyncIterable[bytes],
        *,
        content_type: str,
        accept: str | None = None,
    ) -> UpstreamResponse:
        """``POST path`` with the caller's body (streamed when it is an iterable) under the
        provider's key; the provider's answer, open, for the caller to stream back."""
        headers = {**self._json_headers, "content-type": content_type}
        if accept:
            headers["accept"] = accept
        return await self._upstream.send("POST", path, body, headers)

    async def _post_json(self, path: str, body: dict[str, Any]) -> Reply:
        read_timeout = None
        if self._flex_timeout is not None and body.get("service_tier") == "flex":
            read_timeout = self._flex_timeout
        response = await self._upstream.post(
            path, orjson.dumps(body), self._json_headers, read_timeout=read_timeout
        )
        try:
            content = await response.read(self._max_response_bytes)
        finally:
            await response.close()
        if response.status >= 300:
            raise status_error(response.status, content, response.headers)
        return _json_reply(content, response.headers)


def _json_reply(content: bytes, headers: Mapping[str, str]) -> Reply:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError() from None
    if not isinstance(parsed, dict):
        raise UpstreamProtocolError()
    return Reply(body=content, headers=forwarded_headers(headers), parsed=parsed)


class OpenAIStream:
    """An open upstream SSE stream, re-framed event by event."""

    def __init__(self, response: UpstreamResponse, *, max_event_bytes: int) -> None:
        self._response = response
        self._max_event_bytes = max_event_bytes
        self.headers: Mapping[str, str] = forwarded_headers(response.headers)
        self.notes: Mapping[str, Any] = {}

    async def events(self) -> AsyncIterator[bytes]:
        async for group in self.event_groups():
            for event in group:
                yield event

    async def event_groups(self) -> AsyncIterator[list[bytes]]:
        """The events of each upstream read together: the relay sends them in one write."""
        saw_done = False
        groups = sse_event_groups(self._response.chunks(), max_event_bytes=self._max_event_bytes)
        async for payloads in groups:
            group: list[bytes] = []
            for payload in payloads:
                if payload == b"[DONE]":
                    saw_done = True
                    break
                group.append(frame(payload))
            if saw_done:
                group.append(DONE_EVENT)
            if group:
                yield group
            if saw_done:
                await _drain(groups)
                break
        if not saw_done:
            # The connection ended without the terminator: the answer is incomplete.
            raise UpstreamUnreachable("The upstream stream ended before it was complete.")

    async def aclose(self) -> None:
        await self._response.close()


class ResponsesStream:
    """An open Responses API stream: named events (``event: <type>``), passed through as
    they come with their ``sequence_number`` intact. It ends with ``response.completed``,
    ``response.incomplete`` or ``response.failed`` and carries no ``[DONE]``."""

    TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def __init__(self, response: UpstreamResponse, *, max_event_bytes: int) -> None:
        self._response = response
        self._max_event_bytes = max_event_bytes
        self.headers: Mapping[str, str] = forwarded_headers(response.headers)
        self.notes: Mapping[str, Any] = {}

    async def events(self) -> AsyncIterator[tuple[dict[str, Any], bytes]]:
        """Each event parsed (the relay reads ids and usage from them) and framed."""
        ended = False
        groups = sse_event_groups(self._response.chunks(), max_event_bytes=self._max_event_bytes)
        async for payloads in groups:
            for payload in payloads:
                if payload == b"[DONE]":  # some gateways add one; the SDK stops on it
                    continue
                try:
                    event = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    raise UpstreamProtocolError() from None
                if not isinstance(event, dict):
                    raise UpstreamProtocolError()
                kind = str(event.get("type", ""))
                yield event, b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"
                ended = ended or kind in self.TERMINAL or kind == "error"
        if not ended:
            raise UpstreamUnreachable("The upstream stream ended before it was complete.")

    async def aclose(self) -> None:
        await self._response.close()


async def _drain(groups: AsyncIterator[list[bytes]]) -> None:
    """Read past ``[DONE]`` to the end of the body, so the connection can be reused: it
    normally arrives with the last event. An upstream that keeps talking is cut off (the
    connection is then dropped rather than pooled)."""
    with contextlib.suppress(TimeoutError, AdapterError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in groups:
                pass


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return pick_headers(headers, _FORWARDED, _FORWARDED_PREFIX)
