"""A small generator of JSON values that satisfy a JSON Schema.

Enough for structured outputs and tool arguments: object (every property, so
``required`` and ``additionalProperties: false`` both hold), string (with ``enum``,
``const``, ``format``, ``minLength``), number/integer (within ``minimum``/``maximum``),
boolean, null, array (``minItems`` items), ``anyOf``/``oneOf``/``allOf`` (first branch)
and local ``$ref`` into ``$defs``/``definitions``. Values derive from ``seed`` so the same
request gets the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_MAX_DEPTH = 8


def sample(schema: Mapping[str, Any] | None, seed: str = "") -> Any:
    """A value valid under ``schema`` (an empty object for no schema)."""
    if not schema:
        return {}
    return _Sampler(schema, seed).value(schema, "", 0)


class _Sampler:
    def __init__(self, root: Mapping[str, Any], seed: str) -> None:
        self._root = root
        self._seed = seed

    def _pick(self, path: str, count: int) -> int:
        digest = hashlib.sha256(f"{self._seed}/{path}".encode()).digest()
        return digest[0] % count

    def _resolve(self, ref: str) -> Mapping[str, Any]:
        node: Any = self._root
        if not ref.startswith("#"):
            return {}
        for part in ref.lstrip("#/").split("/"):
            if not part:
                continue
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return node if isinstance(node, Mapping) else {}

    def value(self, schema: Mapping[str, Any], path: str, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            return None
        if "$ref" in schema:
            return self.value(self._resolve(str(schema["$ref"])), path, depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf", "allOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                first = next((b for b in branches if b.get("type") != "null"), branches[0])
                return self.value(first, path, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        return self._typed(str(kind), schema, path, depth)

    def _typed(self, kind: str, schema: Mapping[str, Any], path: str, depth: int) -> Any:
        if kind == "object":
            props = schema.get("properties") or {}
            return {
                name: self.value(sub, f"{path}/{name}", depth + 1) for name, sub in props.items()
            }
        if kind == "array":
            items = schema.get("items") or {}
            count = max(1, int(schema.get("minItems", 1)))
            if "maxItems" in schema:
                count = min(count, int(schema["maxItems"]))
            return [self.value(items, f"{path}/{i}", depth + 1) for i in range(count)]
        if kind == "string":
            if schema.get("format") in _FORMATS:
                return _FORMATS[str(schema["format"])]
            word = _WORDS[self._pick(path, len(_WORDS))]
            text = word * max(1, -(-int(schema.get("minLength", 0)) // len(word)))
            return text[: int(schema["maxLength"])] if "maxLength" in schema else text
        if kind in ("number", "integer"):
            low = schema.get("minimum", schema.get("exclusiveMinimum"))
            high = schema.get("maximum", schema.get("exclusiveMaximum"))
            number = 1 + self._pick(path, 9)
            if low is not None:
                number = max(number, int(low) + 1)
            if high is not None:
                number = min(number, int(high) - (1 if "exclusiveMaximum" in schema else 0))
            return number if kind == "integer" else number + 0.5 if high is None else number
        if kind == "boolean":
            return self._pick(path, 2) == 0
        return None
