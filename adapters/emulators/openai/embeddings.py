"""``POST /v1/embeddings`` (OpenAI only; DeepSeek has no embeddings).

``input`` is a string, a list of strings, a list of token ids or a list of such lists;
empty strings and empty lists are refused with OpenAI's ``'$.input' is invalid``.
``encoding_format: "base64"`` is the little-endian float32 bytes of the vector, which
is what the SDK asks for by default and decodes.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from adapters.emulators.openai.config import EMBEDDING_DIMENSIONS, OpenAIEmulatorConfig
from adapters.emulators.openai.errors import (
    EmulatorError,
    invalid,
    missing,
    model_not_found,
    wrong_type,
)
from adapters.emulators.tokens import count_text, embedding

_MAX_INPUTS = 2048
_INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)


def _inputs(value: Any) -> list[tuple[str, int]]:
    """(text the vector derives from, token count) per input."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > _MAX_INPUTS:
        raise invalid(_INVALID_INPUT)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [(" ".join(map(str, value)), len(value))]
    out: list[tuple[str, int]] = []
    for item in value:
        if isinstance(item, str) and item:
            out.append((item, count_text(item)))
        elif (
            isinstance(item, list)
            and item
            and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
        ):
            out.append((" ".join(map(str, item)), len(item)))
        else:
            raise invalid(_INVALID_INPUT)
    return out


def encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def embed(body: Any, config: OpenAIEmulatorConfig) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise wrong_type("body", "an object", body)
    model = body.get("model")
    if model is None:
        raise invalid("you must provide a model parameter")
    if not isinstance(model, str):
        raise wrong_type("model", "a string", model)
    if "input" not in body:
        raise missing("input")
    if model not in config.models:
        raise model_not_found(config.flavour, model)
    if not config.is_embedding(model):
        raise EmulatorError(400, f"The model `{model}` does not support embeddings.", param="model")
    inputs = _inputs(body["input"])
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise invalid(
            f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
    native = EMBEDDING_DIMENSIONS.get(model, 1536)
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if "ada" in model:
            raise invalid("This model does not support specifying dimensions.")
        if not isinstance(dimensions, int) or isinstance(dimensions, bool):
            raise wrong_type("dimensions", "an integer", dimensions)
        if not 1 <= dimensions <= native:
            raise invalid(
                f"Invalid 'dimensions': expected a value between 1 and {native}, but got "
                f"{dimensions} instead.",
                param="dimensions",
                code="invalid_value",
            )
    size = dimensions or native
    tokens = sum(count for _, count in inputs)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(embedding(text, size), fmt)}
            for i, (text, _) in enumerate(inputs)
        ],
        "model": config.resolved_models.get(model, model),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
