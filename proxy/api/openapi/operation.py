"""The building blocks of costroute's OpenAPI document: references, JSON bodies, query
parameters, and ``operation``, which gives every operation the OpenAI error envelope
for each explicit failure status and as its ``default``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Json = dict[str, Any]

REF = "#/components/schemas/{model}"
ERRORS = ("400", "401", "403", "404", "405", "409", "413", "429", "500", "502", "503", "504")
TICKET_ID = {"type": "string", "pattern": "^tkt_[A-Za-z0-9_-]{32}$"}


def ref(name: str) -> Json:
    """A reference to the component schema ``name``."""
    return {"$ref": REF.format(model=name)}


def json_body(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def param(name: str) -> Json:
    """A reference to the shared component parameter ``name``."""
    return {"$ref": f"#/components/parameters/{name}"}


def query(name: str, schema: Json) -> Json:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def operation(
    summary: str,
    ok: dict[str, Json],
    *,
    body: Json | None = None,
    parameters: Sequence[Json] = (),
    auth: str = "required",
    tag: str = "openai",
) -> Json:
    """``auth``: "required", "none", or "optional" (``/metrics`` with require_key)."""
    responses: Json = dict(ok)
    for status in ERRORS:
        responses.setdefault(status, {"$ref": "#/components/responses/Error"})
    responses["default"] = {"$ref": "#/components/responses/Error"}
    described: Json = {"summary": summary, "tags": [tag], "responses": responses}
    if parameters:
        described["parameters"] = list(parameters)
    if body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if auth == "none":
        described["security"] = []
    elif auth == "optional":
        described["security"] = [{}, {"bearerAuth": []}]
    return described
