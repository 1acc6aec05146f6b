"""Gemini ``GenerateContentResponse`` to OpenAI ``chat.completion`` and stream chunks. Pure.

- Text parts (not thought summaries) join into ``content``; ``functionCall`` parts become
  ``tool_calls`` whose ids are Gemini's own when it sends one, else derived from the
  response id, position, name and arguments, so the same reply always gets the same ids;
  a call's ``thoughtSignature`` rides along in ``extra_content.google.thought_signature``.
- ``finishReason``: STOP -> stop, MAX_TOKENS -> length, the safety family -> content_filter,
  any reply with function calls -> tool_calls, everything else -> stop. A prompt blocked
  by ``promptFeedback`` (HTTP 200, no candidates) is one empty ``content_filter`` choice.
- Usage: ``promptTokenCount`` (which already includes cached tokens) plus tool-use prompt
  tokens is ``prompt_tokens``; thinking tokens count as completion (they are billed as
  output) and are reported as ``reasoning_tokens``.
- Streams: Gemini sends incremental deltas with cumulative usage and no terminator; the
  translator emits a role chunk, content/tool-call deltas, a finish chunk per choice, and
  at the end one usage chunk (the last usage seen) before the caller's ``[DONE]``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

import orjson

from adapters.errors import UpstreamUnreachable

_CONTENT_FILTER = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)


def finish_reason(reason: object, *, has_tool_calls: bool) -> str:
    if has_tool_calls:
        return "tool_calls"
    if reason is not None and not isinstance(reason, str):
        # A malformed reply; the adapter turns this into a 502 for the caller.
        raise ValueError(f"finishReason is not a string: {reason!r}")
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _CONTENT_FILTER:
        return "content_filter"
    return "stop"


def usage_of(metadata: Any) -> dict[str, Any] | None:
    """OpenAI ``usage`` from Gemini ``usageMetadata`` (``None`` when absent)."""
    if not isinstance(metadata, Mapping):
        return None
    prompt = _int(metadata.get("promptTokenCount")) + _int(metadata.get("toolUsePromptTokenCount"))
    thoughts = _int(metadata.get("thoughtsTokenCount"))
    completion = _int(metadata.get("candidatesTokenCount")) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": _int(metadata.get("cachedContentTokenCount")),
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": thoughts,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def tool_call_id(
    response_id: str, choice: int, position: int, name: str, args: Any, given: Any = None
) -> str:
    if isinstance(given, str) and given:
        return given
    canonical = orjson.dumps(args, option=orjson.OPT_SORT_KEYS)
    seed = f"{response_id}\x00{choice}\x00{position}\x00{name}\x00".encode() + canonical
    return "call_" + hashlib.sha256(seed).hexdigest()[:24]


def parse_response(data: Mapping[str, Any], *, model: str, created: int) -> dict[str, Any]:
    """The ``chat.completion`` for a whole (non-streamed) Gemini response."""
    response_id = str(data.get("responseId") or "")
    choices: list[dict[str, Any]] = []
    for position, candidate in enumerate(_candidates(data)):
        index = _int(candidate.get("index"), default=position)
        texts, calls = _split_parts(candidate, response_id, index, 0)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts or not calls else None,
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(
                    candidate.get("finishReason"), has_tool_calls=bool(calls)
                ),
            }
        )
    if not choices and _blocked(data):
        choices.append(
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None},
                "logprobs": None,
                "finish_reason": "content_filter",
            }
        )
    reply: dict[str, Any] = {
        "id": completion_id(response_id),
        "object": "chat.completion",
        "created": created,
        "model": str(data.get("modelVersion") or model),
        "choices": choices,
    }
    usage = usage_of(data.get("usageMetadata"))
    if usage is not None:
        reply["usage"] = usage
    return reply


def completion_id(response_id: str) -> str:
    if response_id:
        return f"chatcmpl-{response_id}"
    return "chatcmpl-" + secrets.token_hex(12)


class StreamTranslator:
    """Feed parsed Gemini stream chunks, get OpenAI ``chat.completion.chunk`` dicts."""

    def __init__(self, *, model: str, created: int) -> None:
        self._model = model
        self._created = created
        self._id: str | None = None
        self._response_id = ""
        self._calls: dict[int, int] = {}  # choice index -> tool calls emitted
        self._finished: set[int] = set()
        self.usage: dict[str, Any] | None = None
        self.usage_metadata: Mapping[str, Any] | None = None

    def feed(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self._id is None:
            self._response_id = str(data.get("responseId") or "")
            self._id = completion_id(self._response_id)
            self._model = str(data.get("modelVersion") or self._model)
        metadata = data.get("usageMetadata")
        if isinstance(metadata, Mapping):
            # Cumulative totals: the last one wins, and a chunk without usage changes nothing.
            self.usage_metadata = metadata
            self.usage = usage_of(metadata)
        out: list[dict[str, Any]] = []
        candidates = _candidates(data)
        if not candidates and _blocked(data) and 0 not in self._calls:
            out.append(self._chunk(0, {"role": "assistant", "content": ""}))
            self._calls[0] = 0
            out.append(self._finish(0, "content_filter"))
        for position, candidate in enumerate(candidates):
            index = _int(candidate.get("index"), default=position)
            if index in self._finished:
                continue
            if index not in self._calls:
                self._calls[index] = 0
                out.append(self._chunk(index, {"role": "assistant", "content": ""}))
            texts, calls = _split_parts(candidate, self._response_id, index, self._calls[index])
            if texts:
                out.append(self._chunk(index, {"content": "".join(texts)}))
            if calls:
                deltas = [{"index": self._calls[index] + k, **call} for k, call in enumerate(calls)]
                self._calls[index] += len(calls)
                out.append(self._chunk(index, {"tool_calls": deltas}))
            reason = candidate.get("finishReason")
            if reason:
                has_calls = self._calls[index] > 0
                out.append(self._finish(index, finish_reason(reason, has_tool_calls=has_calls)))
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The closing usage chunk; raises if the stream ended before every choice did."""
        if not self._calls or set(self._calls) - self._finished:
            raise UpstreamUnreachable("The upstream stream ended before it was complete.")
        if self.usage is None:
            return []
        return [{**self._base(), "choices": [], "usage": self.usage}]

    def _finish(self, index: int, reason: str) -> dict[str, Any]:
        self._finished.add(index)
        return self._chunk(index, {}, reason)

    def _chunk(
        self, index: int, delta: dict[str, Any], reason: str | None = None
    ) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {**self._base(), "choices": [choice]}

    def _base(self) -> dict[str, Any]:
        return {
            "id": self._id or completion_id(""),
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }


def _candidates(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = data.get("candidates")
    if not isinstance(found, list):
        return []
    return [c for c in found if isinstance(c, Mapping)]


def _blocked(data: Mapping[str, Any]) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, Mapping) and bool(feedback.get("blockReason"))


def _split_parts(
    candidate: Mapping[str, Any], response_id: str, choice: int, first_call: int
) -> tuple[list[str], list[dict[str, Any]]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, Mapping) or part.get("thought"):
            continue  # thought summaries are not part of the answer
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, Mapping):
            name = str(call.get("name") or "")
            args = call.get("args") if isinstance(call.get("args"), Mapping) else {}
            position = first_call + len(calls)
            tool_call: dict[str, Any] = {
                "id": tool_call_id(response_id, choice, position, name, args, call.get("id")),
                "type": "function",
                "function": {"name": name, "arguments": orjson.dumps(args).decode()},
            }
            signature = part.get("thoughtSignature")
            if isinstance(signature, str) and signature:
                # Where Google's OpenAI-compatible endpoint puts it, so callers send it back.
                tool_call["extra_content"] = {"google": {"thought_signature": signature}}
            calls.append(tool_call)
    return texts, calls


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
