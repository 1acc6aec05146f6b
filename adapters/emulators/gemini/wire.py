"""Pydantic models of the Gemini request bodies the emulator accepts (providers.md §3.2, §3.5).

Field names are snake_case in Python and accepted in both spellings on the wire, as
proto3 JSON parsing does; responses are built as camelCase dicts elsewhere. Messages
whose fields we know in full (the request, ``generationConfig``, ``Content``, ``Schema``,
``CachedContent``) reject unknown names like Google's parser ("Unknown name ... Cannot
find field"); messages that keep growing (``Part``, ``Tool``) tolerate extras so that
new SDKs are not refused for fields the emulator does not model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class _Strict(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
    )


class _Open(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="allow",
        frozen=True,
    )


class Blob(_Strict):
    mime_type: str
    data: str


class FileData(_Strict):
    mime_type: str | None = None
    file_uri: str


class FunctionCall(_Open):
    id: str | None = None
    name: str
    args: dict[str, Any] | None = None


class FunctionResponse(_Open):
    id: str | None = None
    name: str
    response: dict[str, Any] | None = None


class Part(_Open):
    text: str | None = None
    inline_data: Blob | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    file_data: FileData | None = None
    executable_code: dict[str, Any] | None = None
    code_execution_result: dict[str, Any] | None = None
    thought: bool | None = None
    thought_signature: str | None = None

    def data_fields(self) -> list[str]:
        """The members of the ``data`` oneof that are set."""
        names = (
            "text",
            "inline_data",
            "function_call",
            "function_response",
            "file_data",
            "executable_code",
            "code_execution_result",
        )
        return [name for name in names if getattr(self, name) is not None]


class Content(_Strict):
    role: str | None = None
    parts: list[Part] | None = None


class Schema(_Strict):
    """The OpenAPI subset Google accepts in ``parameters`` and ``responseSchema``."""

    type: str | None = None
    format: str | None = None
    title: str | None = None
    description: str | None = None
    nullable: bool | None = None
    enum: list[str] | None = None
    max_items: int | None = None
    min_items: int | None = None
    properties: dict[str, Schema] | None = None
    required: list[str] | None = None
    min_properties: int | None = None
    max_properties: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    example: Any = None
    any_of: list[Schema] | None = None
    property_ordering: list[str] | None = None
    default: Any = None
    items: Schema | None = None
    minimum: float | None = None
    maximum: float | None = None
    additional_properties: Any = None
    defs: dict[str, Schema] | None = None
    ref: str | None = None


class FunctionDeclaration(_Open):
    name: str
    description: str | None = None
    parameters: Schema | None = None
    parameters_json_schema: Any = None
    response: Schema | None = None
    response_json_schema: Any = None
    behavior: str | None = None


class Tool(_Open):
    function_declarations: list[FunctionDeclaration] | None = None


class FunctionCallingConfig(_Strict):
    mode: str | None = None
    allowed_function_names: list[str] | None = None


class ToolConfig(_Open):
    function_calling_config: FunctionCallingConfig | None = None


class ThinkingConfig(_Open):
    include_thoughts: bool | None = None
    thinking_budget: int | None = None
    thinking_level: str | None = None


class GenerationConfig(_Strict):
    stop_sequences: list[str] | None = None
    response_mime_type: str | None = None
    response_schema: Schema | None = None
    response_json_schema: Any = None
    response_modalities: list[str] | None = None
    candidate_count: int | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_logprobs: bool | None = None
    logprobs: int | None = None
    enable_enhanced_civic_answers: bool | None = None
    speech_config: dict[str, Any] | None = None
    thinking_config: ThinkingConfig | None = None
    image_config: dict[str, Any] | None = None
    media_resolution: str | None = None


class SafetySetting(_Open):
    category: str | None = None
    threshold: str | None = None


class GenerateContentRequest(_Strict):
    model: str | None = None
    contents: list[Content] | None = None
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    safety_settings: list[SafetySetting] | None = None
    generation_config: GenerationConfig | None = None
    cached_content: str | None = None
    labels: dict[str, str] | None = None
    service_tier: str | None = None
    store: bool | None = None


class CachedContentBody(_Strict):
    """A ``CachedContent`` as sent to create or patch; output-only fields are ignored."""

    name: str | None = None
    display_name: str | None = None
    model: str | None = None
    system_instruction: Content | None = None
    contents: list[Content] | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    ttl: str | None = None
    expire_time: str | None = None
    create_time: str | None = None
    update_time: str | None = None
    usage_metadata: dict[str, Any] | None = None


class CountTokensRequest(_Strict):
    contents: list[Content] | None = None
    generate_content_request: GenerateContentRequest | None = None


class EmbedContentRequest(_Strict):
    model: str | None = None
    content: Content
    task_type: str | None = None
    title: str | None = None
    output_dimensionality: int | None = None


class BatchEmbedContentsRequest(_Strict):
    requests: list[EmbedContentRequest]


class InlinedRequest(_Strict):
    # Checked as a GenerateContentRequest only when the batch runs, so one bad request
    # fails alone (a Status in its result line) instead of the whole batch.
    request: dict[str, Any]
    metadata: dict[str, Any] | None = None


class InlinedRequests(_Strict):
    requests: list[InlinedRequest]


class InputConfig(_Strict):
    requests: InlinedRequests | None = None
    file_name: str | None = None


class BatchBody(_Strict):
    name: str | None = None
    model: str | None = None
    display_name: str | None = None
    input_config: InputConfig
    priority: int | None = None
    webhook_config: dict[str, Any] | None = None


class BatchCreateRequest(_Strict):
    batch: BatchBody
