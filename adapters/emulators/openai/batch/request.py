"""The body of ``POST /v1/batches`` (providers.md §2.2), checked the way OpenAI checks
it: synchronously, with a 400 in OpenAI's envelope naming the offending ``param``.
Problems inside the input file are not checked here; they surface later as a
``failed`` batch (see ``openai_batch_validate``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.emulators.openai.errors import EmulatorError

DAY = 86_400
ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
_FIELDS = frozenset(
    {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
)


@dataclass(frozen=True, slots=True)
class CreateFields:
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    output_ttl: int


def create_fields(body: dict[str, Any], endpoints: tuple[str, ...]) -> CreateFields:
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise EmulatorError(
            400,
            f"Unrecognized request argument supplied: {unknown[0]}",
            param=unknown[0],
            code="unknown_parameter",
        )
    for name in ("input_file_id", "endpoint", "completion_window"):
        if body.get(name) is None:
            raise EmulatorError(
                400,
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
    input_file_id, target, window = (
        body["input_file_id"],
        body["endpoint"],
        body["completion_window"],
    )
    if not isinstance(input_file_id, str):
        raise _invalid("input_file_id", input_file_id, "a string")
    if target not in endpoints:
        raise _invalid("endpoint", target, ", ".join(repr(e) for e in endpoints))
    if window != "24h":
        raise _invalid("completion_window", window, "'24h'")
    return CreateFields(
        input_file_id=input_file_id,
        endpoint=target,
        metadata=_metadata(body.get("metadata")),
        output_ttl=_output_ttl(body.get("output_expires_after")),
    )


def _invalid(param: str, value: Any, supported: str) -> EmulatorError:
    return EmulatorError(
        400,
        f"Invalid value for '{param}': {value!r}. Supported values are: {supported}.",
        param=param,
        code="invalid_value",
    )


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EmulatorError(
            400,
            "Invalid type for 'metadata': expected an object.",
            param="metadata",
            code="invalid_type",
        )
    if len(value) > 16:
        raise EmulatorError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(value)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > 64:
            raise _too_long(f"metadata.{key}", "key", 64, len(key))
        if not isinstance(item, str):
            raise EmulatorError(
                400,
                f"Invalid type for 'metadata.{key}': expected a string.",
                param=f"metadata.{key}",
                code="invalid_type",
            )
        if len(item) > 512:
            raise _too_long(f"metadata.{key}", "value", 512, len(item))
    return dict(value)


def _too_long(param: str, what: str, limit: int, got: int) -> EmulatorError:
    return EmulatorError(
        400,
        f"Invalid '{param}': {what} too long. Expected a string with maximum length {limit}, "
        f"but got a string with length {got} instead.",
        param=param,
        code="string_above_max_length",
    )


def _output_ttl(value: Any) -> int:
    if value is None:
        return 30 * DAY
    seconds = value.get("seconds") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or value.get("anchor") != "created_at"
        or not isinstance(seconds, int)
        or not 3600 <= seconds <= 30 * DAY
    ):
        raise EmulatorError(
            400,
            'Invalid \'output_expires_after\': expected {"anchor": "created_at", '
            '"seconds": 3600..2592000}.',
            param="output_expires_after",
            code="invalid_value",
        )
    return seconds
