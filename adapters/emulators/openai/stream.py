"""A ``Completion`` as the chunks of an OpenAI SSE stream (providers.md §1.4, §4.3).

Per choice: a first chunk with the role (and, for a tool call, its id, type and name),
content or argument fragments, then a chunk with an empty delta and the
``finish_reason``. With ``stream_options.include_usage`` every chunk carries
``"usage": null`` and one last chunk has ``choices: []`` and the usage. The stream ends
with ``data: [DONE]``. OpenAI pads content chunks with a random ``obfuscation`` string
unless ``include_obfuscation`` is false; DeepSeek streams ``reasoning_content`` deltas
before the answer.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterator
from typing import Any

from adapters.emulators.openai.chat import Choice, Completion
from adapters.emulators.openai.validate import ChatRequest
from adapters.emulators.transport import DONE, sse_event

_WORDS_PER_CHUNK = 3
_MAX_PIECE = 32
_ARG_PIECE = 12
_ALNUM = string.ascii_letters + string.digits


def pieces(text: str) -> list[str]:
    """``text`` in pieces of a few words each, whose concatenation is ``text``."""
    words: list[str] = re.findall(r"\s*\S+", text)
    tail = text[len("".join(words)) :]
    if tail:
        words.append(tail)
    out: list[str] = []
    for start in range(0, len(words), _WORDS_PER_CHUNK):
        piece = "".join(words[start : start + _WORDS_PER_CHUNK])
        out += [piece[i : i + _MAX_PIECE] for i in range(0, len(piece), _MAX_PIECE)]
    return out


def stream_chunks(completion: Completion, request: ChatRequest) -> Iterator[dict[str, Any]]:
    base: dict[str, Any] = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
    }
    if completion.service_tier is not None:
        base["service_tier"] = completion.service_tier
    base["system_fingerprint"] = completion.system_fingerprint
    obfuscate = request.include_obfuscation and not completion.deepseek

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        body = dict(base)
        body["choices"] = [
            {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        ]
        if request.include_usage:
            body["usage"] = None
        if obfuscate and delta:
            body["obfuscation"] = "".join(
                secrets.choice(_ALNUM) for _ in range(1 + secrets.randbelow(16))
            )
        return body

    for choice in completion.choices:
        for delta in _deltas(choice, completion.deepseek):
            yield chunk(choice.index, delta)
        yield chunk(choice.index, {}, choice.finish_reason)
    if request.include_usage:
        final = dict(base)
        final["choices"] = []
        final["usage"] = dict(completion.usage)
        yield final


def _deltas(choice: Choice, deepseek: bool) -> Iterator[dict[str, Any]]:
    thinking = choice.reasoning is not None
    role: dict[str, Any] = {"role": "assistant"}
    if deepseek and thinking:
        yield {"role": "assistant", "content": None, "reasoning_content": ""}
        for piece in pieces(choice.reasoning or ""):
            yield {"content": None, "reasoning_content": piece}
        role = {}
    if choice.tool_calls:
        call = choice.tool_calls[0]
        head = dict(role, content=None) if role else {}
        if role and not deepseek:
            head["refusal"] = None
        function = {"name": call.name, "arguments": ""}
        head["tool_calls"] = [{"index": 0, "id": call.id, "type": "function", "function": function}]
        yield head
        for i in range(0, len(call.arguments), _ARG_PIECE):
            fragment = call.arguments[i : i + _ARG_PIECE]
            yield {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
        return
    if role:
        yield (
            {"role": "assistant", "content": ""}
            if deepseek
            else {
                "role": "assistant",
                "content": "",
                "refusal": None,
            }
        )
    for piece in pieces(choice.content or ""):
        yield {"content": piece, "reasoning_content": None} if thinking else {"content": piece}


def sse_stream(completion: Completion, request: ChatRequest) -> Iterator[bytes]:
    for chunk in stream_chunks(completion, request):
        yield sse_event(chunk)
    yield DONE
