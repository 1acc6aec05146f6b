"""The upstream HTTP clients.

The real-time lane (OpenAI, DeepSeek) posts through ``Upstream``: a two-method seam with
a raw aiohttp implementation for production and an httpx one for tests, which inject
``httpx.MockTransport``/``ASGITransport``. httpx's client layer costs about 0.4 ms of
CPU per call over raw aiohttp (request and header objects, the transport adapter), which
is the whole latency budget costroute has (README, Performance), so the hot path does not
go through it.

The slower, rarer calls (Files and Batch API, Gemini, webhooks) keep httpx's richer API
(``make_client``) over ``httpx-aiohttp``'s pool: plain ``httpx.AsyncClient`` falls to
~118 req/s with a 2.4 s p99 at 64 concurrent calls against a 50 ms upstream.

Both raise only ``adapters.errors`` for transport failures: timeouts as
``UpstreamTimeout``, everything else (refused, reset, cut mid-body) as
``UpstreamUnreachable``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from typing import Protocol, TypedDict

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from adapters.errors import (
    AdapterError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
)


class UpstreamResponse(Protocol):
    """An open response: the status and headers are in, the body is not yet read."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, one item per read from the socket."""
        ...

    async def read(self, limit: int) -> bytes:
        """The whole body, refused (``UpstreamProtocolError``) once it exceeds ``limit``."""
        ...

    async def close(self) -> None:
        """Give the connection back (or drop it if the body was not read to the end)."""
        ...


class Upstream(Protocol):
    base_url: str

    async def post(
        self,
        path: str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        read_timeout: float | None = None,
    ) -> UpstreamResponse:
        """POST ``content`` to ``base_url + path``. ``read_timeout`` overrides the
        client's wait for each read (flex requests are slow)."""
        ...

    async def send(
        self,
        method: str,
        path: str,
        content: bytes | AsyncIterable[bytes] | None,
        headers: Mapping[str, str],
    ) -> UpstreamResponse:
        """Any other request to ``base_url + path``; a body given as an async iterable is
        streamed (chunked) as it is read."""
        ...

    async def aclose(self) -> None: ...


def pick_headers(headers: Mapping[str, str], names: tuple[str, ...], prefix: str) -> dict[str, str]:
    """The upstream response headers worth handing to callers (lower-cased): ``names``
    and every header starting with ``prefix`` (rate-limit state)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in names or lower.startswith(prefix):
            out[lower] = value
    return out


async def read_capped(response: UpstreamResponse, limit: int) -> bytes:
    """The whole body by chunks, refusing one larger than ``limit`` before or while
    reading it (for bodies of unknown length)."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in response.chunks():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _too_large(limit: int) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"The upstream response is larger than {limit} bytes.")


# -- production: raw aiohttp -------------------------------------------------------------


class AiohttpUpstream:
    """A keep-alive pool to one provider. The session is made on first use, inside the
    running event loop (aiohttp binds it to the loop that creates it)."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 512,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._max_connections = max_connections
        # Per read and per connect, as httpx's timeouts are; the proxy bounds the whole
        # attempt itself (``within`` in proxy.lanes.realtime).
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, keepalive_timeout=30.0
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trust_env=False,
            # The caller's body is forwarded as is; no auto "Accept-Encoding: deflate"
            # etc. beyond aiohttp's defaults, and no cookies carried between callers.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
        )
        return self._session

    async def post(
        self,
        path: str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        read_timeout: float | None = None,
    ) -> AiohttpResponse:
        session = self._session or self._open_session()
        timeout = self._timeout
        if read_timeout is not None:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=timeout.sock_connect, sock_read=read_timeout
            )
        try:
            response = await session.post(
                self.base_url + path,
                data=content,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            )
        except _AIOHTTP_FAILURES as exc:
            raise _aiohttp_failure(exc) from exc
        return AiohttpResponse(response)

    async def send(
        self,
        method: str,
        path: str,
        content: bytes | AsyncIterable[bytes] | None,
        headers: Mapping[str, str],
    ) -> AiohttpResponse:
        session = self._session or self._open_session()
        try:
            response = await session.request(
                method, self.base_url + path, data=content, headers=headers, allow_redirects=False
            )
        except _AIOHTTP_FAILURES as exc:
            raise _aiohttp_failure(exc) from exc
        return AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AiohttpResponse:
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _AIOHTTP_FAILURES as exc:
            raise _aiohttp_failure(exc) from exc

    async def read(self, limit: int) -> bytes:
        response = self._response
        length = response.content_length
        if length is None:  # chunked: count while reading
            return await read_capped(self, limit)
        if length > limit:
            raise _too_large(limit)
        try:
            # aiohttp stops at the declared length; one call, no per-chunk generator.
            return await response.read()
        except _AIOHTTP_FAILURES as exc:
            raise _aiohttp_failure(exc) from exc

    async def close(self) -> None:
        # A body read to its end returns the connection to the pool; one abandoned
        # half-way (a caller gone mid-stream) must not be reused.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


# Hot path: a plain ``except`` rather than a context manager per call and per chunk.
# TimeoutError (asyncio's too) is an OSError; aiohttp's ServerTimeoutError is both.
_AIOHTTP_FAILURES = (aiohttp.ClientError, OSError)


def _aiohttp_failure(exc: BaseException) -> AdapterError:
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout()
    return UpstreamUnreachable()


# -- tests, and the httpx-based adapters ------------------------------------------------


class HttpxUpstream:
    """``Upstream`` over an ``httpx.AsyncClient``: the seam for in-process tests."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.base_url = str(client.base_url).rstrip("/")

    async def post(
        self,
        path: str,
        content: bytes,
        headers: Mapping[str, str],
        *,
        read_timeout: float | None = None,
    ) -> HttpxResponse:
        extensions = {}
        if read_timeout is not None:
            connect = self.client.timeout.connect
            extensions["timeout"] = httpx.Timeout(read_timeout, connect=connect).as_dict()
        request = self.client.build_request(
            "POST", self.base_url + path, content=content, headers=headers, extensions=extensions
        )
        with httpx_errors_mapped():
            response = await self.client.send(request, stream=True)
        return HttpxResponse(response)

    async def send(
        self,
        method: str,
        path: str,
        content: bytes | AsyncIterable[bytes] | None,
        headers: Mapping[str, str],
    ) -> HttpxResponse:
        request = self.client.build_request(
            method, self.base_url + path, content=content, headers=headers
        )
        with httpx_errors_mapped():
            response = await self.client.send(request, stream=True)
        return HttpxResponse(response)

    async def aclose(self) -> None:
        await self.client.aclose()


class HttpxResponse:
    __slots__ = ("_response",)

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        with httpx_errors_mapped():
            async for chunk in self._response.aiter_bytes():
                yield chunk

    async def read(self, limit: int) -> bytes:
        return await read_capped(self, limit)

    async def close(self) -> None:
        await self._response.aclose()


@contextlib.contextmanager
def httpx_errors_mapped() -> Iterator[None]:
    try:
        yield
    except AdapterError:
        raise
    except httpx.TimeoutException as exc:
        if isinstance(exc.__cause__, aiohttp.ClientConnectorError) and not isinstance(
            exc.__cause__, asyncio.TimeoutError
        ):
            # httpx-aiohttp maps a refused connection to ConnectTimeout; it is not one.
            raise UpstreamUnreachable() from exc
        raise UpstreamTimeout() from exc
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise UpstreamUnreachable() from exc


class PoolOptions(TypedDict, total=False):
    """What ``make_upstream`` and ``make_client`` share, for callers building both."""

    max_connections: int
    timeout: float
    connect_timeout: float
    transport: httpx.AsyncBaseTransport | None


def make_upstream(
    base_url: str,
    *,
    max_connections: int = 512,
    timeout: float = 600.0,
    connect_timeout: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Upstream:
    """The real-time pool for one provider; ``transport`` (tests) swaps in httpx."""
    if transport is None:
        return AiohttpUpstream(
            base_url,
            max_connections=max_connections,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
    return HttpxUpstream(
        make_client(base_url, timeout=timeout, connect_timeout=connect_timeout, transport=transport)
    )


def make_client(
    base_url: str,
    *,
    max_connections: int = 512,
    timeout: float = 600.0,
    connect_timeout: float = 10.0,
    headers: dict[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A pooled httpx client for one provider. ``transport`` overrides the aiohttp pool."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=timeout),
        limits=limits,
        transport=transport or AiohttpTransport(limits=limits, trust_env=False),
        follow_redirects=False,
        trust_env=False,
    )
