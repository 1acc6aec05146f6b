"""Deterministic instances of a schema: JSON-mode replies and function-call arguments.

Works on plain dicts of either dialect Google takes: the OpenAPI subset (``Schema``,
upper-case types, ``anyOf``, ``defs``/``ref``) and JSON Schema (``responseJsonSchema``,
lower-case or list types, ``$defs``/``$ref``).
"""

from __future__ import annotations

from typing import Any

from adapters.emulators.tokens import reply_words

_MAX_DEPTH = 8


def instance(schema: Any, seed: str, *, all_properties: bool = True) -> Any:
    """A value valid against ``schema``. Objects get every property, or with
    ``all_properties=False`` only the required ones (function-call arguments)."""
    root = schema if isinstance(schema, dict) else {}
    return _value(root, root, seed, all_properties, 0)


def _value(schema: dict[str, Any], root: dict[str, Any], seed: str, every: bool, depth: int) -> Any:
    schema = _resolve(schema, root)
    if depth > _MAX_DEPTH:
        return None
    for key in ("anyOf", "any_of", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _value(options[0], root, seed, every, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    kind = _type(schema)
    if isinstance(enum, list) and enum:
        choice = enum[0]
        return int(choice) if kind == "integer" and str(choice).lstrip("-").isdigit() else choice
    if kind == "object":
        return _object(schema, root, seed, every, depth)
    if kind == "array":
        item = schema.get("items")
        low = int(schema.get("minItems") or schema.get("min_items") or 1)
        high = schema.get("maxItems", schema.get("max_items"))
        count = min(low, int(high)) if high is not None else low
        return [
            _value(item if isinstance(item, dict) else {}, root, f"{seed}/{i}", every, depth + 1)
            for i in range(count)
        ]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        minimum = schema.get("minimum")
        return float(minimum) if minimum is not None else 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, seed)


def _object(
    schema: dict[str, Any], root: dict[str, Any], seed: str, every: bool, depth: int
) -> Any:
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    order = schema.get("propertyOrdering") or schema.get("property_ordering") or list(properties)
    result: dict[str, Any] = {}
    for name in order:
        if name in properties and (every or name in required):
            result[name] = _value(properties[name], root, f"{seed}/{name}", every, depth + 1)
    return result


def _string(schema: dict[str, Any], seed: str) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2026-01-01T00:00:00Z"
    if fmt == "date":
        return "2026-01-01"
    words = reply_words(seed, 2)
    text = " ".join(words)
    low = int(schema.get("minLength") or schema.get("min_length") or 0)
    if len(text) < low:
        text = text + "x" * (low - len(text))
    high = schema.get("maxLength", schema.get("max_length"))
    return text[: int(high)] if high is not None else text


def _type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if kind is None:
        if "properties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        return "string"
    return str(kind).lower()


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    for _ in range(_MAX_DEPTH):
        ref = schema.get("$ref", schema.get("ref"))
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        node: Any = root
        for key in ref[2:].split("/"):
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return {}
        schema = node
    return schema
