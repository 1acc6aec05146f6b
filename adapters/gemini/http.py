"""The thin I/O edge shared by the Gemini adapter and its cache manager: JSON calls with
the ``x-goog-api-key`` header, capped reads, and httpx/Gemini failures mapped to
``adapters.errors`` (timeouts -> UpstreamTimeout, transport -> UpstreamUnreachable,
non-2xx -> UpstreamStatus/RateLimited with an OpenAI-shaped error object)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from adapters.errors import (
    UpstreamProtocolError,
)
from adapters.gemini.errors import status_error
from adapters.http import HttpxResponse, httpx_errors_mapped, read_capped

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class GeminiHttp:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_key: str,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.client = client
        self._headers = {"x-goog-api-key": api_key, "content-type": "application/json"}
        self._max = max_response_bytes

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One JSON request; the parsed JSON object of a 2xx answer."""
        response = await self.open(method, path, body=body, params=params)
        try:
            content = await self._read(response)
        finally:
            await response.aclose()
        if not content.strip():
            return {}
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError() from None
        if not isinstance(parsed, dict):
            raise UpstreamProtocolError()
        return parsed

    async def open(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send and return the open response after checking its status (the body of an
        error is read and mapped; a success is left for the caller to read and close)."""
        request = self.client.build_request(
            method,
            path,
            content=orjson.dumps(body) if body is not None else None,
            params=params,
            headers=self._headers,
        )
        with httpx_errors_mapped():
            response = await self.client.send(request, stream=True)
            if response.status_code < 300:
                return response
            try:
                content = await self._read(response)
            finally:
                await response.aclose()
        raise status_error(response.status_code, content, response.headers)

    async def _read(self, response: httpx.Response) -> bytes:
        return await read_capped(HttpxResponse(response), self._max)
