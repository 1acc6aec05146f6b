"""A generic operation for any route of the app that ``openapi_paths`` does not describe
(an admin page added later, say): its first docstring line as the summary, its path
parameters as strings, and still the OpenAI error envelope, so fuzzing and the isolation
tests reach it without an edit to the document."""

from __future__ import annotations

import re

from starlette.routing import Route

from proxy.api.openapi.operation import Json, operation

# A Starlette path parameter with its converter, e.g. ``{model:path}``.
_CONVERTER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:[A-Za-z_]+)?\}")


def openapi_path(path: str) -> tuple[str, list[str]]:
    names = [match.group(1) for match in _CONVERTER.finditer(path)]
    return _CONVERTER.sub(lambda m: "{" + m.group(1) + "}", path), names


def generic_operation(route: Route, method: str, names: list[str]) -> Json:
    doc = (route.endpoint.__doc__ or "").strip().splitlines()
    tag = "admin" if route.path.startswith("/admin") else "other"
    ok = {"200": {"description": "Success.", "content": {"*/*": {"schema": {}}}}}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in names
    ]
    summary = doc[0] if doc else f"{method} {route.path}"
    return operation(summary, ok, parameters=params, tag=tag)
