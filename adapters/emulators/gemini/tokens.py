"""Token counts and seed text of Gemini prompts, built on the shared estimates in tokens.py.

Text costs about a token per four characters; every media part costs a flat 258 tokens
(Gemini's price of an image up to 384 px) in its own modality, so usage reports carry a
per-modality breakdown like the real ``promptTokensDetails``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from adapters.emulators.gemini.wire import Content, Part, Tool
from adapters.emulators.tokens import count_text

MEDIA_PART_TOKENS = 258


def modality_of(mime_type: str | None) -> str:
    mime = (mime_type or "").lower()
    if mime.startswith("image/"):
        return "IMAGE"
    if mime.startswith("audio/"):
        return "AUDIO"
    if mime.startswith("video/"):
        return "VIDEO"
    if mime.startswith("text/"):
        return "TEXT"
    return "DOCUMENT"


def count_part(part: Part) -> Counter[str]:
    tally: Counter[str] = Counter()
    if part.text is not None:
        tally["TEXT"] += count_text(part.text)
    elif part.inline_data is not None:
        tally[modality_of(part.inline_data.mime_type)] += MEDIA_PART_TOKENS
    elif part.file_data is not None:
        tally[modality_of(part.file_data.mime_type)] += MEDIA_PART_TOKENS
    else:
        tally["TEXT"] += count_text(_structured_text(part))
    return tally


def count_contents(contents: Iterable[Content]) -> Counter[str]:
    tally: Counter[str] = Counter()
    for content in contents:
        for part in content.parts or []:
            tally.update(count_part(part))
    return tally


def count_prompt(
    *,
    contents: Iterable[Content] = (),
    system: Content | None = None,
    tools: Iterable[Tool] | None = None,
) -> Counter[str]:
    """Tokens of everything the model reads: system instruction, tools and turns."""
    tally = count_contents([system] if system is not None else [])
    tally.update(count_contents(contents))
    declarations = [_dump(tool) for tool in tools or []]
    if declarations:
        tally["TEXT"] += count_text(json.dumps(declarations, sort_keys=True))
    return +tally


def details(tally: Counter[str]) -> list[dict[str, Any]]:
    """``[{"modality": "TEXT", "tokenCount": N}, ...]`` in a stable order."""
    return [{"modality": name, "tokenCount": tally[name]} for name in sorted(tally) if tally[name]]


def prompt_text(contents: Iterable[Content], system: Content | None = None) -> str:
    """All text of a prompt, one line per part: the seed of the reply and the text the
    safety marker is looked for in."""
    lines: list[str] = []
    for content in [system] if system is not None else []:
        lines.extend(f"system: {_part_text(part)}" for part in content.parts or [])
    for content in contents:
        role = content.role or "user"
        lines.extend(f"{role}: {_part_text(part)}" for part in content.parts or [])
    return "\n".join(lines)


def _part_text(part: Part) -> str:
    if part.text is not None:
        return part.text
    if part.inline_data is not None:
        return f"<{part.inline_data.mime_type} {len(part.inline_data.data)}>"
    if part.file_data is not None:
        return f"<{part.file_data.mime_type} {part.file_data.file_uri}>"
    return _structured_text(part)


def _structured_text(part: Part) -> str:
    return json.dumps(_dump(part), sort_keys=True)


def _dump(model: BaseModel) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True)
