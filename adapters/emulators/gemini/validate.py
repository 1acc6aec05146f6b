"""The rules Gemini enforces on a request body beyond its JSON shape (providers.md §3.2).

Each check raises ``GeminiError`` with Google's wording where it is known. Rules the
reference does not pin down are accepted rather than invented (for example consecutive
turns with the same role).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.errors import from_validation, invalid_argument
from adapters.emulators.gemini.wire import Content, GenerationConfig, Tool, ToolConfig

M = TypeVar("M", bound=BaseModel)

ROLES = ("user", "model")
MIME_TYPES = (
    "text/plain",
    "application/json",
    "application/xml",
    "application/yaml",
    "text/x.enum",
)
CALLING_MODES = ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")
MAX_CANDIDATES = 8
MAX_STOP_SEQUENCES = 5
# FunctionDeclaration.name: letters, digits, underscores, colons, dots and dashes, ≤64.
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,63}")


def parse(model: type[M], body: Any, *, root: str = "") -> M:
    if not isinstance(body, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise from_validation(error, root=root) from None


def check_contents(contents: list[Content], *, where: str, required: bool) -> None:
    if not contents:
        if required:
            raise invalid_argument(
                f"* {where}.contents: contents is not specified", field=f"{where}.contents"
            )
        return
    for turn_index, content in enumerate(contents):
        path = f"contents[{turn_index}]"
        if content.role is not None and content.role not in ROLES:
            raise invalid_argument("Please use a valid role: user, model.", field=f"{path}.role")
        check_parts(content, path=path, where=where)


def check_parts(content: Content, *, path: str, where: str) -> None:
    if not content.parts:
        raise invalid_argument(
            f"* {where}.{path}.parts: contents.parts must not be empty.", field=f"{path}.parts"
        )
    for part_index, part in enumerate(content.parts):
        part_path = f"{path}.parts[{part_index}]"
        fields = part.data_fields()
        if not fields:
            raise invalid_argument(
                f"* {where}.{part_path}.data: required oneof field 'data' must have one "
                "initialized field",
                field=f"{part_path}.data",
            )
        if len(fields) > 1:
            raise invalid_argument(
                "Invalid JSON payload received. Oneof field 'data' is already set. "
                f"Cannot set '{_camel(fields[1])}'",
                field=part_path,
            )
        if part.inline_data is not None:
            _check_base64(part.inline_data.data, f"{part_path}.inline_data.data")


def check_system(system: Content | None) -> None:
    if system is None:
        return
    for part in system.parts or []:
        if part.data_fields() != ["text"]:
            raise invalid_argument(
                "System instruction must contain only text parts.", field="system_instruction"
            )


def check_tools(tools: list[Tool] | None, tool_config: ToolConfig | None) -> None:
    for tool_index, tool in enumerate(tools or []):
        for decl_index, decl in enumerate(tool.function_declarations or []):
            path = f"tools[{tool_index}].function_declarations[{decl_index}]"
            if not _FUNCTION_NAME.fullmatch(decl.name):
                raise invalid_argument(
                    f"* GenerateContentRequest.{path}.name: Invalid function name. Must start "
                    "with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
                    "underscores (_), dots (.), colons (:) or dashes (-), with a maximum "
                    "length of 64.",
                    field=f"{path}.name",
                )
            if decl.parameters is not None and decl.parameters_json_schema is not None:
                raise invalid_argument(
                    f"* GenerateContentRequest.{path}: parameters and parameters_json_schema "
                    "are mutually exclusive.",
                    field=path,
                )
    calling = tool_config.function_calling_config if tool_config else None
    if calling is not None and calling.mode is not None and calling.mode not in CALLING_MODES:
        raise invalid_argument(
            "Invalid value at 'tool_config.function_calling_config.mode' "
            "(type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode)"
            f', "{calling.mode}"',
            field="tool_config.function_calling_config.mode",
        )


def check_generation_config(
    config: GenerationConfig | None, *, model: str, settings: GeminiEmulatorConfig
) -> None:
    if config is None:
        return
    where = "generation_config"
    if config.candidate_count is not None and not 1 <= config.candidate_count <= MAX_CANDIDATES:
        raise invalid_argument(
            f"* GenerateContentRequest.{where}.candidate_count: must be between 1 and "
            f"{MAX_CANDIDATES}, got {config.candidate_count}.",
            field=f"{where}.candidate_count",
        )
    if config.stop_sequences is not None and len(config.stop_sequences) > MAX_STOP_SEQUENCES:
        raise invalid_argument(
            f"* GenerateContentRequest.{where}.stop_sequences: at most {MAX_STOP_SEQUENCES} stop "
            "sequences are allowed.",
            field=f"{where}.stop_sequences",
        )
    _range(config.max_output_tokens, 0, None, f"{where}.max_output_tokens")
    _range(config.temperature, 0.0, 2.0, f"{where}.temperature")
    _range(config.top_p, 0.0, 1.0, f"{where}.top_p")
    _range(config.top_k, 0, None, f"{where}.top_k")
    _range(config.logprobs, 0, 20, f"{where}.logprobs")
    mime = config.response_mime_type
    if mime is not None and mime not in MIME_TYPES:
        raise invalid_argument(
            f"* GenerateContentRequest.{where}.response_mime_type: allowed mimetypes are "
            "`text/plain`, `application/json`, `application/xml`, `application/yaml` and "
            "`text/x.enum`.",
            field=f"{where}.response_mime_type",
        )
    has_schema = config.response_schema is not None
    has_json_schema = config.response_json_schema is not None
    if has_schema and has_json_schema:
        raise invalid_argument(
            f"* GenerateContentRequest.{where}: response_schema and response_json_schema are "
            "mutually exclusive.",
            field=where,
        )
    if (has_schema or has_json_schema) and mime in (None, "text/plain"):
        name = "response_schema" if has_schema else "response_json_schema"
        raise invalid_argument(
            f"* GenerateContentRequest.{where}.response_mime_type: When using {name}, "
            "response_mime_type must be set to a compatible value (application/json or "
            "text/x.enum).",
            field=f"{where}.response_mime_type",
        )
    thinking = config.thinking_config
    if thinking is not None:
        if not settings.is_thinking(model):
            raise invalid_argument("Thinking is not supported by this model.", field=where)
        budget = thinking.thinking_budget
        if budget is not None and budget < -1:
            raise invalid_argument(
                f"* GenerateContentRequest.{where}.thinking_config.thinking_budget: must be -1 "
                "(dynamic) or non-negative.",
                field=f"{where}.thinking_config.thinking_budget",
            )


def _range(value: float | None, low: float, high: float | None, field: str) -> None:
    if value is None:
        return
    if value < low or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise invalid_argument(
            f"* GenerateContentRequest.{field}: {value} is out of range {bounds}.", field=field
        )


def _check_base64(data: str, field: str) -> None:
    # proto3 JSON accepts both the standard and the URL-safe alphabet, padded or not.
    standard = data.replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument(
            f"Invalid value at '{field}' (TYPE_BYTES), Base64 decoding failed for \"{data[:40]}\"",
            field=field,
        ) from None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)
