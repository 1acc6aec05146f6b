"""``GET /models`` objects. OpenAI's carry ``created`` and ``owned_by``; DeepSeek's list
has no ``created`` (it only says ``owned_by: "deepseek"``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Literal

# Around 2023-11: the exact dates do not matter, only that they are stable.
_EPOCH = 1_698_000_000


def model_object(model: str, flavour: Literal["openai", "deepseek"]) -> dict[str, Any]:
    if flavour == "deepseek":
        return {"id": model, "object": "model", "owned_by": "deepseek"}
    offset = int.from_bytes(hashlib.sha256(model.encode()).digest()[:4], "big") % 50_000_000
    return {"id": model, "object": "model", "created": _EPOCH + offset, "owned_by": "system"}


def model_list(models: Iterable[str], flavour: Literal["openai", "deepseek"]) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(m, flavour) for m in models]}
