"""costroute's own API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

The request schemas come from the pydantic models in ``proxy.api.wire`` (the ones that
validate requests), so the description cannot drift from what the proxy accepts. Every
route of the running app is described: the ones in ``openapi_paths`` in full, and any
route added later (an admin page, say) with a generic operation that still promises the
OpenAI error envelope (``openapi_fallback``), so fuzzing and the isolation tests reach
it without an edit here.

Failures are always ``{"error": {"message", "type", "param", "code"}}``; the document
says so for every operation (explicit statuses plus ``default``), which is what the
schemathesis tier checks.

    openapi_operation   references, bodies, parameters, an operation with its errors
    openapi_components  request/error/reply schemas, shared parameters, error response
    openapi_paths       the paths described in full (API, tickets, ops, admin)
    openapi_fallback    a generic operation for any other route of the app
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from proxy.api.openapi.components import components
from proxy.api.openapi.fallback import generic_operation, openapi_path
from proxy.api.openapi.operation import Json
from proxy.api.openapi.paths import admin_paths, api_paths

__all__ = ["describe", "openapi_json"]


def describe(routes: Iterable[BaseRoute] = ()) -> Json:
    """The OpenAPI document; ``routes`` (the app's) adds any route not described in full."""
    paths = {**api_paths(), **admin_paths()}
    for route in routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        path, names = openapi_path(route.path)
        item = paths.setdefault(path, {})
        for method in sorted(route.methods - {"HEAD"}):
            item.setdefault(method.lower(), generic_operation(route, method, names))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "costroute",
            "version": "1",
            "description": "OpenAI-compatible cost-routing proxy. Errors are OpenAI envelopes.",
        },
        "paths": paths,
        "components": components(),
        "security": [{"bearerAuth": []}],
    }


async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``: no key needed; it names no models, keys or hosts."""
    cached = getattr(request.app.state, "openapi_document", None)
    if not isinstance(cached, bytes):
        cached = orjson.dumps(describe(request.app.routes))
        request.app.state.openapi_document = cached
    return Response(cached, media_type="application/json")
