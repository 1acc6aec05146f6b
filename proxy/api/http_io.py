"""Small HTTP helpers shared by the handlers: bounded body reading and JSON parsing."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from proxy.errors import BadRequest, PayloadTooLarge, RequestTimeout
from proxy.lanes.deadlines import deadline


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit`` bytes: from
    Content-Length before reading anything, else while streaming it in; and (408) when
    the client takes longer than ``seconds`` to send it."""
    try:
        async with deadline(seconds):
            return await _read_body(request, limit)
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {seconds:g} seconds."
        ) from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"The request body is larger than this proxy's limit of {limit} bytes."
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"The request body is larger than this proxy's limit of {limit} bytes."
            )
        parts.append(chunk)
    return b"".join(parts)


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly.)"
        ) from None
