"""HTTP helpers shared by the OpenAI Files and Batch emulators: bearer auth, JSON bodies,
list pagination, and rendering ``EmulatorError`` (``openai_errors``), each written once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from adapters.emulators.openai.errors import EmulatorError

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


def json_response(
    payload: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


def endpoint(
    handler: Handler, *, auth: bool, api_key: str | None, before: Callable[[], None]
) -> Handler:
    """Wrap ``handler``: check the bearer key (when ``auth``), bring the emulator's state
    up to the clock's now (``before``), and render ``EmulatorError`` as OpenAI does."""

    async def wrapped(request: Request) -> Response:
        try:
            if auth:
                check_bearer(request, api_key)
            before()
            return await handler(request)
        except EmulatorError as exc:
            return json_response(exc.body(), status=exc.status, headers=exc.headers)

    return wrapped


def check_bearer(request: Request, api_key: str | None) -> None:
    """OpenAI's auth: a non-empty ``Bearer`` key, or exactly ``api_key`` when one is set."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise EmulatorError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    if api_key is not None and key != api_key:
        shown = key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "*" * len(key)
        raise EmulatorError(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )


async def read_json_object(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip() and allow_empty:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise EmulatorError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
        )
    return body


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise EmulatorError(
            400,
            f"Invalid 'limit': integer must be between 1 and {maximum}, got {raw!r}.",
            param="limit",
            code="invalid_value",
        )
    return limit


def page(
    items: Sequence[T], *, limit: int, render: Callable[[T], dict[str, Any]]
) -> dict[str, Any]:
    """The first ``limit`` of ``items`` (already past the cursor, in answer order) as an
    OpenAI cursor page: ``{object, data, first_id, last_id, has_more}``."""
    data = [render(item) for item in items[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(items) > limit,
    }
