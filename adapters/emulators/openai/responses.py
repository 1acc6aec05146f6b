"""OpenAI's Responses API (providers-2.md §1), answered by the emulator's chat engine.

    POST   /v1/responses                       plain, SSE (``stream: true``), background
    GET    /v1/responses/{id}                  also ``?stream=true&starting_after=N``
    DELETE /v1/responses/{id}
    POST   /v1/responses/{id}/cancel           background responses only
    GET    /v1/responses/{id}/input_items      ``limit``, ``order``, ``after``

A request is validated as the real API does (unknown fields refused, ``max_output_tokens``
of at least 16, a model and an input), turned into the engine's chat form (instructions
to a system message, input items to messages, flat function tools to chat tools,
``text.format`` to ``response_format``) and the answer rendered as a ``response`` object
with ``message`` or ``function_call`` output items. Streams are named SSE events with a
``sequence_number`` from 0 and no ``[DONE]`` (the reference stream has none).

Background mode on the injectable clock: ``queued`` for ``background_queued_s``, then
``in_progress`` for ``background_run_s``, then ``completed``; the answer is computed at
create time, so retrieving it later is deterministic. Both durations are unverified
(OpenAI documents none); they are configurable per emulator.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from adapters.clock import Clock
from adapters.emulators.openai.chat import ChatEngine, Completion, random_id
from adapters.emulators.openai.errors import EmulatorError, invalid
from adapters.emulators.openai.stream import pieces

# CreateResponse's fields (the OpenAPI document, 2026); anything else is refused.
KNOWN_FIELDS = frozenset(
    {
        "model", "input", "instructions", "previous_response_id", "conversation", "store",
        "background", "stream", "stream_options", "service_tier", "tools", "tool_choice",
        "parallel_tool_calls", "max_tool_calls", "text", "reasoning", "max_output_tokens",
        "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "metadata",
        "safety_identifier", "user", "temperature", "top_p", "top_logprobs", "include",
        "truncation", "prompt", "context_management", "moderation",
    }
)  # fmt: skip
TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})


@dataclass(slots=True)
class Stored:
    response: dict[str, Any]  # the final object (status as it will end)
    input_items: list[dict[str, Any]]
    background: bool
    created: float
    cancelled: bool = False
    deleted: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)


class ResponsesEmulator:
    def __init__(
        self,
        engine: ChatEngine,
        clock: Clock,
        *,
        background_queued_s: float = 1.0,
        background_run_s: float = 2.0,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.queued_s = background_queued_s
        self.run_s = background_run_s
        self._stored: dict[str, Stored] = {}

    # --- create ------------------------------------------------------------------------

    def create(self, body: Any) -> tuple[dict[str, Any], Stored]:
        """The final response object (and its record, kept when ``store`` is not false or
        the response runs in the background)."""
        if not isinstance(body, dict):
            raise invalid("The request body must be a JSON object.")
        unknown = sorted(set(body) - KNOWN_FIELDS)
        if unknown:
            raise invalid(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0])
        if not body.get("model"):
            raise invalid("Missing required parameter: 'model'.", param="model")
        if body.get("input") is None and body.get("prompt") is None:
            raise invalid("Missing required parameter: 'input'.", param="input")
        cap = body.get("max_output_tokens")
        if cap is not None and (not isinstance(cap, int) or cap < 16):
            raise invalid(
                f"Invalid 'max_output_tokens': integer below minimum value. Expected a value "
                f">= 16, but got {cap} instead.",
                param="max_output_tokens",
                code="integer_below_min_value",
            )
        if body.get("background") and body.get("store") is False:
            raise invalid("Background mode requires store to be true.", param="background")
        if body.get("previous_response_id") and body.get("conversation"):
            raise invalid(
                "Cannot use both 'previous_response_id' and 'conversation'.",
                param="previous_response_id",
            )
        history = self._history(body.get("previous_response_id"))
        items = input_items(body.get("input"))
        chat_body = to_chat(body, history + items)
        _, completion = self.engine.chat(chat_body)
        response = render(body, completion, self.clock.now())
        stored = Stored(
            response=response,
            input_items=[{**item, "id": item.get("id") or random_id("msg_", 24)} for item in items],
            background=bool(body.get("background")),
            created=self.clock.now(),
        )
        stored.events = list(stream_events(response))
        if body.get("store") is not False or stored.background:
            self._stored[response["id"]] = stored
        return response, stored

    def _history(self, previous: Any) -> list[dict[str, Any]]:
        if not previous:
            return []
        stored = self._stored.get(str(previous))
        if stored is None or stored.deleted:
            raise invalid(
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        earlier = self._history(stored.response.get("previous_response_id"))
        return earlier + stored.input_items + list(stored.response["output"])

    # --- the record's life ---------------------------------------------------------------

    def get(self, response_id: str) -> Stored:
        stored = self._stored.get(response_id)
        if stored is None or stored.deleted:
            raise EmulatorError(
                404, f"Response with id '{response_id}' not found.", param="response_id"
            )
        return stored

    def view(self, stored: Stored) -> dict[str, Any]:
        """The object as it stands now (background responses move with the clock)."""
        if not stored.background:
            return stored.response
        status = self.status_of(stored)
        if status == "completed":
            return stored.response
        view = copy.deepcopy(stored.response)
        view["status"] = status
        view["completed_at"] = None
        view["usage"] = None
        view["output"] = []
        return view

    def status_of(self, stored: Stored) -> str:
        if stored.cancelled:
            return "cancelled"
        elapsed = self.clock.now() - stored.created
        if elapsed < self.queued_s:
            return "queued"
        if elapsed < self.queued_s + self.run_s:
            return "in_progress"
        return str(stored.response["status"])

    def cancel(self, response_id: str) -> dict[str, Any]:
        stored = self.get(response_id)
        if not stored.background:
            raise invalid("Cannot cancel a synchronous response.", param="response_id")
        if self.status_of(stored) not in TERMINAL:
            stored.cancelled = True
        # Cancelling twice returns the final object again (providers-2.md §1.1).
        return self.view(stored)

    def delete(self, response_id: str) -> dict[str, Any]:
        self.get(response_id).deleted = True
        return {"id": response_id, "object": "response", "deleted": True}

    def replay(self, response_id: str, starting_after: int | None) -> list[dict[str, Any]]:
        stored = self.get(response_id)
        if stored.background and self.status_of(stored) != "completed":
            events = stored.events[:2]  # created, in_progress: the rest is not there yet
        else:
            events = stored.events
        after = -1 if starting_after is None else starting_after
        return [event for event in events if event["sequence_number"] > after]

    def list_input_items(
        self, response_id: str, *, limit: int, order: str, after: str | None
    ) -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise invalid("Invalid 'limit': expected a value between 1 and 100.", param="limit")
        if order not in ("asc", "desc"):
            raise invalid("Invalid 'order': expected 'asc' or 'desc'.", param="order")
        items = list(self.get(response_id).input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }


# --- translation to the engine's chat form, and back -------------------------------------


def input_items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("Invalid type for 'input': expected a string or an array.", param="input")
    items = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid(f"Invalid type for 'input[{index}]'.", param=f"input[{index}]")
        kind = item.get("type", "message")
        if kind == "message" and "role" not in item:
            raise invalid(
                f"Missing required parameter: 'input[{index}].role'.", param=f"input[{index}].role"
            )
        items.append({**item, "type": kind})
    return items


def to_chat(body: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "developer", "content": str(body["instructions"])})
    for index, item in enumerate(items):
        kind = item["type"]
        if kind == "message":
            messages.append({"role": item["role"], "content": _chat_content(item["content"])})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "reasoning":
            continue  # carried for the model's benefit; nothing to say in chat form
        else:
            raise invalid(
                f"Invalid value: '{kind}'. Supported values are: 'message', 'function_call', "
                "'function_call_output' and 'reasoning'.",
                param=f"input[{index}].type",
            )
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    functions = [t for t in tools if t.get("type") == "function"]
    if len(functions) != len(tools):
        other = next(t.get("type") for t in tools if t.get("type") != "function")
        raise invalid(f"Tool type '{other}' is not supported by this emulator.", param="tools")
    if functions:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    k: v
                    for k, v in t.items()
                    if k in ("name", "description", "parameters", "strict") and v is not None
                },
            }
            for t in functions
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice in ("none", "auto", "required"):
        chat["tool_choice"] = choice
    fmt = (body.get("text") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        inner = {k: v for k, v in fmt.items() if k != "type"}
        chat["response_format"] = {"type": "json_schema", "json_schema": inner}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    return chat


def _chat_content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            url = part.get("image_url") or f"file:{part.get('file_id')}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
    # Assistant history must be text in chat form.
    if parts and all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def render(body: dict[str, Any], completion: Completion, now: float) -> dict[str, Any]:
    # The reference example also carries ``store``; the SDK's ``Response`` type (3.x) does
    # not declare it, and replies are held strictly to that type, so it is left out.
    choice = completion.choices[0]
    output: list[dict[str, Any]] = []
    for call in choice.tool_calls:
        output.append(
            {
                "type": "function_call",
                "id": random_id("fc_", 24),
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments,
                "status": "completed",
            }
        )
    if choice.content is not None:
        output.append(
            {
                "type": "message",
                "id": random_id("msg_", 24),
                "status": "completed",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": choice.content,
                        "annotations": [],
                        "logprobs": [],
                    }
                ],
            }
        )
    usage = completion.usage
    details = usage.get("prompt_tokens_details") or {}
    incomplete = choice.finish_reason == "length"
    fmt = (body.get("text") or {}).get("format") or {"type": "text"}
    return {
        "id": random_id("resp_", 40),
        "object": "response",
        "created_at": int(now),
        "status": "incomplete" if incomplete else "completed",
        "completed_at": None if incomplete else int(now),
        "background": bool(body.get("background")),
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": completion.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default"
        if body.get("service_tier") in (None, "auto")
        else body["service_tier"],
        "temperature": body.get("temperature", 1.0),
        "text": {"format": fmt, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {
                "cached_tokens": details.get("cached_tokens", 0),
                "cache_write_tokens": 0,
            },
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {
                "reasoning_tokens": (usage.get("completion_tokens_details") or {}).get(
                    "reasoning_tokens", 0
                )
            },
            "total_tokens": usage["total_tokens"],
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def stream_events(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The event sequence of a streamed response, ``sequence_number`` from 0."""
    seq = iter(range(1 << 30))
    start = {**response, "status": "in_progress", "output": [], "usage": None}
    start["completed_at"] = None
    start["incomplete_details"] = None
    yield {"type": "response.created", "sequence_number": next(seq), "response": start}
    yield {"type": "response.in_progress", "sequence_number": next(seq), "response": start}
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            yield from _message_events(item, index, seq)
        else:
            yield from _call_events(item, index, seq)
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    yield {"type": final, "sequence_number": next(seq), "response": response}


def _message_events(
    item: dict[str, Any], index: int, seq: Iterator[int]
) -> Iterator[dict[str, Any]]:
    text = item["content"][0]["text"]
    empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    opened = {**item, "status": "in_progress", "content": []}
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    yield {"type": "response.output_item.added", "sequence_number": next(seq),
           "output_index": index, "item": opened}  # fmt: skip
    yield {"type": "response.content_part.added", "sequence_number": next(seq), **where,
           "part": empty}  # fmt: skip
    for piece in pieces(text):
        yield {"type": "response.output_text.delta", "sequence_number": next(seq), **where,
               "delta": piece, "logprobs": []}  # fmt: skip
    yield {"type": "response.output_text.done", "sequence_number": next(seq), **where,
           "text": text, "logprobs": []}  # fmt: skip
    yield {"type": "response.content_part.done", "sequence_number": next(seq), **where,
           "part": item["content"][0]}  # fmt: skip
    yield {"type": "response.output_item.done", "sequence_number": next(seq),
           "output_index": index, "item": item}  # fmt: skip


def _call_events(item: dict[str, Any], index: int, seq: Iterator[int]) -> Iterator[dict[str, Any]]:
    opened = {**item, "status": "in_progress", "arguments": ""}
    yield {"type": "response.output_item.added", "sequence_number": next(seq),
           "output_index": index, "item": opened}  # fmt: skip
    yield {"type": "response.function_call_arguments.delta", "sequence_number": next(seq),
           "item_id": item["id"], "output_index": index, "delta": item["arguments"]}  # fmt: skip
    yield {"type": "response.function_call_arguments.done", "sequence_number": next(seq),
           "item_id": item["id"], "output_index": index, "name": item["name"],
           "arguments": item["arguments"]}  # fmt: skip
    yield {"type": "response.output_item.done", "sequence_number": next(seq),
           "output_index": index, "item": item}  # fmt: skip


def frame(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
