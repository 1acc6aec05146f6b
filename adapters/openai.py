"""The OpenAI adapter: passes OpenAI wire-format requests through to an OpenAI-compatible
API with the provider's key, and hands replies back unchanged.

Streams are always requested with ``stream_options.include_usage`` so the proxy can meter
them; the proxy strips the usage chunk again for callers that did not ask for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import httpx
import orjson

from adapters.base import Reply
from adapters.errors import (
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from adapters.openai_wire import DONE_EVENT, frame, sse_event_groups, status_error

# Upstream response headers worth handing to callers (rate-limit state, request ids).
_FORWARDED = ("x-request-id", "openai-processing-ms")
_FORWARDED_PREFIX = "x-ratelimit-"


class OpenAIAdapter:
    provider_type = "openai"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str | None,
        max_response_bytes: int = 64 * 1024 * 1024,
        flex_timeout: float | None = None,
    ) -> None:
        self._client = client
        self._base = str(client.base_url).rstrip("/")
        self._transport = client._transport
        self._timeout = client.timeout.as_dict()
        # Flex requests are slower; OpenAI suggests a 15-minute client timeout for them.
        self._flex_timeout = flex_timeout
        self._auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._max_response_bytes = max_response_bytes

    async def aclose(self) -> None:
        await self._client.aclose()

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
        request = httpx.Request(
            "POST",
            self._base + "/chat/completions",
            extensions={"timeout": self._timeout},
            content=orjson.dumps(upstream_body),
            headers={
                **self._auth,
                "content-type": "application/json",
                "accept": "text/event-stream",
            },
        )
        with _mapped_errors():
            response = await self._transport.handle_async_request(request)
        if response.status_code >= 300:
            try:
                content = await _read_capped(response, self._max_response_bytes)
            finally:
                await response.aclose()
            raise status_error(response.status_code, content, response.headers)
        return OpenAIStream(response, max_event_bytes=self._max_response_bytes)

    async def _post_json(self, path: str, body: dict[str, Any]) -> Reply:
        extensions = {}
        if self._flex_timeout is not None and body.get("service_tier") == "flex":
            timeout = httpx.Timeout(self._flex_timeout, connect=self._client.timeout.connect)
            extensions["timeout"] = timeout.as_dict()
        request = httpx.Request(
            "POST",
            self._base + path,
            content=orjson.dumps(body),
            headers={**self._auth, "content-type": "application/json"},
            extensions=extensions or {"timeout": self._timeout},
        )
        with _mapped_errors():
            response = await self._transport.handle_async_request(request)
            try:
                content = await _read_capped(response, self._max_response_bytes)
            finally:
                await response.aclose()
        if response.status_code >= 300:
            raise status_error(response.status_code, content, response.headers)
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError() from None
        if not isinstance(parsed, dict):
            raise UpstreamProtocolError()
        return Reply(body=content, headers=forwarded_headers(response.headers), parsed=parsed)


class OpenAIStream:
    """An open upstream SSE stream, re-framed event by event."""

    def __init__(self, response: httpx.Response, *, max_event_bytes: int) -> None:
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
        with _mapped_errors():
            groups = sse_event_groups(
                self._response.aiter_bytes(), max_event_bytes=self._max_event_bytes
            )
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
                    break
        if not saw_done:
            # The connection ended without the terminator: the answer is incomplete.
            raise UpstreamUnreachable("The upstream stream ended before it was complete.")

    async def aclose(self) -> None:
        await self._response.aclose()


def forwarded_headers(headers: httpx.Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _FORWARDED or lower.startswith(_FORWARDED_PREFIX):
            out[lower] = value
    return out


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UpstreamProtocolError(f"The upstream response is larger than {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise UpstreamProtocolError(f"The upstream response is larger than {limit} bytes.")
        parts.append(chunk)
    return b"".join(parts)


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    """Translate httpx transport failures into adapter errors."""
    try:
        yield
    except httpx.TimeoutException as exc:
        if isinstance(exc.__cause__, aiohttp.ClientConnectorError) and not isinstance(
            exc.__cause__, asyncio.TimeoutError
        ):
            # httpx-aiohttp maps a refused connection to ConnectTimeout; it is not one.
            raise UpstreamUnreachable() from exc
        raise UpstreamTimeout() from exc
    except httpx.TransportError as exc:
        raise UpstreamUnreachable() from exc
