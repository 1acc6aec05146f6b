"""JSON Schema (as OpenAI callers write it) to Gemini's ``Schema`` (an OpenAPI 3.0 subset).

Gemini's ``responseSchema`` and function ``parameters`` take upper-case type names, one
type per node (``nullable`` instead of ``["x", "null"]``), no ``$ref``, no ``const`` and
no ``additionalProperties``. The conversion:

- inlines ``$ref`` to ``#/$defs/...`` / ``#/definitions/...``; a recursive schema cannot
  be inlined and is rejected with a 400 that says so;
- turns ``type: [T, "null"]`` and ``anyOf: [..., {"type": "null"}]`` into ``nullable``;
- turns ``const`` into a one-value ``enum``; enums are strings only, so ``null`` in one
  becomes ``nullable`` and a numeric one becomes a note in the description;
- drops ``additionalProperties`` (OpenAI's strict mode requires ``false`` everywhere, which
  is what Gemini does anyway; a schema-valued one is a loosening we accept) and keywords
  Gemini does not know (``$schema``, ``examples``...), which only describe;
- sets ``propertyOrdering`` to the declared order so the JSON comes back in that order,
  as OpenAI's structured outputs do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.errors import Unsupported

_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
# Keywords copied as they are (Gemini spells them like JSON Schema).
_PLAIN = (
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "default",
    "minimum",
    "maximum",
    "propertyOrdering",
)
_MAX_DEPTH = 64


def convert_schema(schema: Any, *, param: str) -> dict[str, Any]:
    """The Gemini ``Schema`` for a JSON Schema object; ``param`` names it in errors."""
    if not isinstance(schema, Mapping):
        raise Unsupported(f"{param} must be a JSON Schema object.", param=param)
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        found = schema.get(key)
        if isinstance(found, Mapping):
            defs.update(found)
    return _Converter(defs, param).node(schema, (), 0)


class _Converter:
    def __init__(self, defs: Mapping[str, Any], param: str) -> None:
        self._defs = defs
        self._param = param

    def fail(self, message: str) -> Unsupported:
        return Unsupported(f"{self._param}: {message}", param=self._param)

    def node(self, schema: Any, refs: tuple[str, ...], depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            raise self.fail("the schema is nested too deeply.")
        if schema is True or schema == {}:
            # "anything": Gemini has no such node; an unconstrained string is the
            # closest it will accept without rejecting the request.
            return {"type": "STRING"}
        if not isinstance(schema, Mapping):
            raise self.fail(f"expected a schema object, got {type(schema).__name__}.")
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self.node(self._resolve(ref, refs), (*refs, ref), depth + 1)

        out: dict[str, Any] = {}
        for key in _PLAIN:
            if key in schema:
                out[key] = schema[key]
        if "const" in schema:
            out["enum"] = [schema["const"]]

        any_of = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(any_of, list):
            options = [s for s in any_of if not _is_null(s)]
            if len(options) < len(any_of):
                out["nullable"] = True
            if len(options) == 1:
                merged = self.node(options[0], refs, depth + 1)
                return {**merged, **out}
            out["anyOf"] = [self.node(s, refs, depth + 1) for s in options]
            return out

        kind = self._type(schema, out)
        if kind == "OBJECT":
            properties = schema.get("properties")
            if isinstance(properties, Mapping) and properties:
                out["properties"] = {
                    str(name): self.node(sub, refs, depth + 1) for name, sub in properties.items()
                }
                out.setdefault("propertyOrdering", [str(name) for name in properties])
            required = schema.get("required")
            if isinstance(required, list) and required:
                out["required"] = [str(name) for name in required]
        elif kind == "ARRAY":
            items = schema.get("items")
            out["items"] = self.node(items if items is not None else {}, refs, depth + 1)
        if kind is not None:
            out["type"] = kind
        _fix_enum(out)
        return out

    def _type(self, schema: Mapping[str, Any], out: dict[str, Any]) -> str | None:
        declared = schema.get("type")
        names = [declared] if isinstance(declared, str) else declared
        if names is None:
            if "properties" in schema:
                return "OBJECT"
            if "items" in schema:
                return "ARRAY"
            if "enum" in out or "const" in schema:
                return "STRING"
            return None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise self.fail(f"invalid type {declared!r}.")
        unknown = [n for n in names if n not in _TYPES]
        if unknown:
            raise self.fail(f"unknown type {unknown[0]!r}.")
        concrete = [n for n in names if n != "null"]
        if len(concrete) < len(names):
            out["nullable"] = True
        if len(concrete) > 1:
            raise self.fail(
                f"a node may have one type for Gemini (plus null), got {concrete}; "
                "use anyOf instead."
            )
        return concrete[0].upper() if concrete else "NULL"

    def _resolve(self, ref: str, refs: tuple[str, ...]) -> Any:
        if ref in refs:
            raise self.fail(f"recursive schemas cannot be expressed for Gemini ({ref}).")
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix) and ref[len(prefix) :] in self._defs:
                return self._defs[ref[len(prefix) :]]
        raise self.fail(f"cannot resolve $ref {ref!r} (only local $defs are supported).")


def _fix_enum(out: dict[str, Any]) -> None:
    """Gemini enums are strings: ``null`` becomes ``nullable``; other values cannot be
    enforced, so they move into the description rather than failing the request."""
    values = out.get("enum")
    if not isinstance(values, list):
        return
    if None in values:
        out["nullable"] = True
        values = [v for v in values if v is not None]
    if all(isinstance(v, str) for v in values):
        out["enum"] = values
        return
    del out["enum"]
    allowed = "Allowed values: " + ", ".join(str(v) for v in values) + "."
    out["description"] = f"{out['description']} {allowed}" if out.get("description") else allowed


def _is_null(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null" and len(schema) == 1
