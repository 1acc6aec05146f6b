"""The floor: the thinnest Starlette passthrough we can write, run under the same uvicorn
settings as costroute. Whatever costroute costs above this is costroute's own work (auth,
validation, planning, logging); what this costs above the upstream is the stack's.

``--client aiohttp`` (the floor the targets are measured against) forwards with a raw
aiohttp session; ``httpx-aiohttp`` uses httpx's API over httpx-aiohttp's transport (the
stack costroute uses); ``httpx`` is plain httpx, for orientation.

    python -m tests.benchmarks.floor --port 9200 --upstream http://127.0.0.1:9100
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

Forward = Callable[[str, bytes], Awaitable[Response]]
_PASSED = ("content-type", "x-request-id")


def _aiohttp_forward(session: aiohttp.ClientSession, upstream: str) -> Forward:
    async def forward(path: str, body: bytes) -> Response:
        response = await session.post(
            upstream + path, data=body, headers={"content-type": "application/json"}
        )
        headers = {k: response.headers[k] for k in _PASSED if k in response.headers}
        if response.content_type != "text/event-stream":
            async with response:
                return Response(await response.read(), response.status, headers=headers)

        async def events() -> AsyncIterator[bytes]:
            async with response:
                async for chunk in response.content.iter_any():
                    yield chunk

        return StreamingResponse(events(), response.status, headers=headers)

    return forward


def _httpx_forward(client: httpx.AsyncClient) -> Forward:
    async def forward(path: str, body: bytes) -> Response:
        request = client.build_request(
            "POST", path, content=body, headers={"content-type": "application/json"}
        )
        response = await client.send(request, stream=True)
        headers = {k: response.headers[k] for k in _PASSED if k in response.headers}
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            try:
                content = await response.aread()
            finally:
                await response.aclose()
            return Response(content, response.status_code, headers=headers)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return StreamingResponse(events(), response.status_code, headers=headers)

    return forward


def _httpx_client(upstream: str, aiohttp_pool: bool) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    transport: httpx.AsyncBaseTransport | None = None
    if aiohttp_pool:
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits, trust_env=False)
    return httpx.AsyncClient(
        base_url=upstream, limits=limits, timeout=60.0, transport=transport, trust_env=False
    )


def build_app(upstream: str, client: str) -> Starlette:
    forward: Forward | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal forward
        if client == "aiohttp":
            connector = aiohttp.TCPConnector(limit=512)
            async with aiohttp.ClientSession(connector=connector) as session:
                forward = _aiohttp_forward(session, upstream)
                yield
        else:
            async with _httpx_client(upstream, client == "httpx-aiohttp") as http:
                forward = _httpx_forward(http)
                yield

    async def passthrough(request: Request) -> Response:
        assert forward is not None
        return await forward(request.url.path, await request.body())

    route = Route("/{path:path}", passthrough, methods=["POST"])
    return Starlette(routes=[route], lifespan=lifespan)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument(
        "--client", default="aiohttp", choices=["aiohttp", "httpx-aiohttp", "httpx"]
    )
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--http", default="h11")
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.upstream, args.client),
        host="127.0.0.1",
        port=args.port,
        loop=args.loop,
        http=args.http,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
