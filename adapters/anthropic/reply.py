"""Anthropic Messages replies as OpenAI ``chat.completion`` objects and chunks
(providers-2.md §2.4, §2.5, §2.7). Pure.

``finish_reason`` from ``stop_reason``: end_turn/stop_sequence -> stop, max_tokens and
model_context_window_exceeded -> length, tool_use -> tool_calls, refusal ->
content_filter, pause_turn -> stop. Usage: ``prompt_tokens`` = every input token
(uncached + cache writes + cache reads), ``prompt_tokens_details.cached_tokens`` = cache
reads. Thinking blocks are not shown to an OpenAI caller (its tokens count as reasoning).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

_FINISH = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls",
    "refusal": "content_filter",
}  # fmt: skip


def chat_id() -> str:
    return "chatcmpl-" + secrets.token_urlsafe(18)


def usage_of(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    uncached = int(usage.get("input_tokens") or 0)
    writes = int(usage.get("cache_creation_input_tokens") or 0)
    reads = int(usage.get("cache_read_input_tokens") or 0)
    output = int(usage.get("output_tokens") or 0)
    thinking = int((usage.get("output_tokens_details") or {}).get("thinking_tokens") or 0)
    prompt = uncached + writes + reads
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": reads, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": thinking, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }  # fmt: skip


def cache_notes(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the routing log needs of Anthropic's cache usage."""
    usage = usage or {}
    reads = int(usage.get("cache_read_input_tokens") or 0)
    writes = int(usage.get("cache_creation_input_tokens") or 0)
    notes: dict[str, Any] = {}
    if reads or writes:
        notes = {"lane_suffix": "cache", "cached_tokens": reads, "cache_write_tokens": writes}
    return notes


def completion(message: Mapping[str, Any], *, model: str, created: int) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": orjson.dumps(block.get("input") or {})
                                       .decode()}})  # fmt: skip
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None,
                             "refusal": None, "annotations": []}  # fmt: skip
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": chat_id(),
        "object": "chat.completion",
        "created": created,
        "model": str(message.get("model") or model),
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": _FINISH.get(str(message.get("stop_reason")), "stop")}],
        "usage": usage_of(message.get("usage")),
    }  # fmt: skip


class StreamTranslator:
    """Anthropic's named events in, OpenAI chunks out (a usage chunk at the end)."""

    def __init__(self, *, model: str, created: int) -> None:
        self._id = chat_id()
        self._model = model
        self._created = created
        self._usage: dict[str, Any] = {}
        self._finish: str | None = None
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self.notes: dict[str, Any] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                "model": self._model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}  # fmt: skip

    def feed(self, event: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._model = str(message.get("model") or self._model)
            self._usage.update(message.get("usage") or {})
            yield self._chunk({"role": "assistant", "content": ""})
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = len(self._tools)
                self._tools[int(event.get("index") or 0)] = index
                yield self._chunk({"tool_calls": [{
                    "index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}]})  # fmt: skip
            elif block.get("type") == "text" and block.get("text"):
                yield self._chunk({"content": block["text"]})
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                yield self._chunk({"content": delta["text"]})
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                index = self._tools.get(int(event.get("index") or 0), 0)
                call = {"index": index, "function": {"arguments": delta["partial_json"]}}
                yield self._chunk({"tool_calls": [call]})
        elif kind == "message_delta":
            # Cumulative counts: replace, never add (providers-2.md §2.5).
            self._usage.update(event.get("usage") or {})
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason is not None:
                self._finish = _FINISH.get(str(reason), "stop")

    def finish(self) -> Iterator[dict[str, Any]]:
        yield self._chunk({}, self._finish or "stop")
        usage = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                 "model": self._model, "choices": [], "usage": usage_of(self._usage)}  # fmt: skip
        self.notes = cache_notes(self._usage)
        yield usage

    @property
    def usage(self) -> Mapping[str, Any]:
        """Anthropic's usage as it stands (cumulative)."""
        return self._usage
