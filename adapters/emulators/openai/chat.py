"""Chat completions: deterministic answers with realistic usage (providers.md §1.3, §4.3).

``ChatEngine.chat(body)`` validates a request and returns a ``Completion``; the HTTP
route renders it as JSON or SSE and the batch emulator calls it for each line. Replies
come from ``tokens.py`` (same prompt, same words), tool calls and structured outputs
from ``schema_sample.py``. ``max_tokens``/``max_completion_tokens`` cap reasoning plus
visible tokens, as on the real API: a reasoning model with a tiny cap answers ``""``
with ``finish_reason: "length"``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.clock import Clock
from adapters.emulators.openai.config import OpenAIEmulatorConfig
from adapters.emulators.openai.errors import EmulatorError, invalid, model_not_found
from adapters.emulators.openai.validate import ChatRequest, validate_chat
from adapters.emulators.prompt_cache import DeepSeekPrefixCache, OpenAIPrefixCache, render_message
from adapters.emulators.schema_sample import sample
from adapters.emulators.tokens import answer_text, count_messages, count_text, reply_text

_ALNUM = string.ascii_letters + string.digits
# DeepSeek answers parameter range errors with 422 "Invalid Parameters" (§4.6).
_RANGE_CODES = frozenset(
    {
        "integer_below_min_value",
        "integer_above_max_value",
        "decimal_below_min_value",
        "decimal_above_max_value",
        "invalid_value",
    }
)


def random_id(prefix: str, length: int = 29) -> str:
    # One read of the system's randomness, not one per character: a simulated day asks
    # for hundreds of thousands of ids. (The slight modulo bias is no matter for ids.)
    return prefix + "".join(_ALNUM[b % len(_ALNUM)] for b in secrets.token_bytes(length))


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, Any]:
        fn = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": fn}


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    content: str | None
    reasoning: str | None  # DeepSeek ``reasoning_content``
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    completion_tokens: int
    reasoning_tokens: int


@dataclass(frozen=True, slots=True)
class Completion:
    id: str
    created: int
    model: str
    choices: tuple[Choice, ...]
    usage: Mapping[str, Any]
    service_tier: str | None  # None: the provider does not report one (DeepSeek)
    system_fingerprint: str
    deepseek: bool

    def message(self, choice: Choice) -> dict[str, Any]:
        calls = [call.to_dict() for call in choice.tool_calls]
        if self.deepseek:
            message: dict[str, Any] = {"role": "assistant", "content": choice.content or ""}
            if choice.reasoning is not None:
                message["reasoning_content"] = choice.reasoning
            if calls:
                message["tool_calls"] = calls
            return message
        message = {
            "role": "assistant",
            "content": choice.content,
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = calls
        return message

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": c.index,
                    "message": self.message(c),
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for c in self.choices
            ],
            "usage": dict(self.usage),
        }
        if self.service_tier is not None:
            body["service_tier"] = self.service_tier
        body["system_fingerprint"] = self.system_fingerprint
        return body


def fingerprint(model: str) -> str:
    return "fp_" + hashlib.sha256(model.encode()).hexdigest()[:10]


def fit_words(text: str, budget: int) -> str:
    words = text.split(" ")
    while words and count_text(" ".join(words)) > budget:
        words.pop()
    return " ".join(words)


class ChatEngine:
    def __init__(self, config: OpenAIEmulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.openai_cache = OpenAIPrefixCache(
            clock,
            min_tokens=config.prompt_cache_min_tokens,
            step=config.prompt_cache_step,
            ttl=config.prompt_cache_ttl,
        )
        self.deepseek_cache = DeepSeekPrefixCache()

    def check_model(self, model: str) -> None:
        config = self.config
        if model not in config.models or config.retired(model, self.clock.now()):
            raise model_not_found(config.flavour, model)
        if config.is_embedding(model):
            raise EmulatorError(
                404,
                "This is not a chat model and thus not supported in the v1/chat/completions "
                "endpoint. Did you mean to use v1/completions?",
                param="model",
            )

    def chat(self, body: Any) -> tuple[ChatRequest, Completion]:
        try:
            request = validate_chat(body, self.config)
        except EmulatorError as exc:
            if self.config.is_deepseek:
                raise _deepseek_shaped(exc) from None
            raise
        self.check_model(request.model)
        return request, self.complete(request)

    def complete(self, request: ChatRequest) -> Completion:
        prompt = count_messages(request.messages)
        asked = request.max_output or 0
        if prompt + asked > self.config.context_window:
            raise _too_long(self.config.context_window, prompt, asked)
        seed = request.model + "".join(render_message(m) for m in request.messages)
        choices = tuple(self._choice(request, i, seed) for i in range(request.n))
        completion_tokens = sum(c.completion_tokens for c in choices)
        reasoning_tokens = sum(c.reasoning_tokens for c in choices)
        if self.config.is_deepseek:
            hits = self.deepseek_cache.use(request.model, request.messages)
            reply = {"role": "assistant", "content": choices[0].content or ""}
            self.deepseek_cache.store_output(request.model, [*request.messages, reply])
            usage = _deepseek_usage(prompt, completion_tokens, hits, reasoning_tokens, request)
        else:
            cached = self.openai_cache.use(request.model, request.messages, prompt)
            usage = _openai_usage(prompt, completion_tokens, cached, reasoning_tokens)
        deepseek = self.config.is_deepseek
        return Completion(
            id=str(uuid.uuid4()) if deepseek else random_id("chatcmpl-"),
            created=int(self.clock.now()),
            model=self.config.resolved_models.get(request.model, request.model),
            choices=choices,
            usage=usage,
            service_tier=None if deepseek else request.service_tier,
            system_fingerprint=fingerprint(request.model),
            deepseek=deepseek,
        )

    def _choice(self, request: ChatRequest, index: int, prompt_seed: str) -> Choice:
        seed = f"{index}|{prompt_seed}"
        digest = hashlib.sha256(seed.encode()).digest()
        cap = request.max_output
        reasoning: str | None = None
        reasoning_tokens = 0
        if self.config.is_deepseek and request.thinking:
            reasoning = reply_text(seed + "|think") + " " + reply_text(seed + "|again")
            if cap is not None:
                reasoning = fit_words(reasoning, cap)
            reasoning_tokens = count_text(reasoning)
        elif self.config.is_reasoning(request.model):
            reasoning_tokens = min(64 + digest[1] % 128, cap if cap is not None else 1 << 30)
        budget = None if cap is None else cap - reasoning_tokens

        call = self._tool_call(request, seed)
        if call is not None:
            arguments = call.arguments
            if budget is not None and count_text(call.name) + count_text(arguments) > budget:
                arguments = arguments[: max(0, budget - count_text(call.name)) * 4]
                call = ToolCall(call.id, call.name, arguments)
                finish = "length"
            else:
                finish = "tool_calls"
            used = count_text(call.name) + count_text(call.arguments)
            return Choice(
                index, None, reasoning, (call,), finish, used + reasoning_tokens, reasoning_tokens
            )

        content, is_json = self._content(request, seed)
        content = _cut_at_stop(content, request.stop)
        finish = "stop"
        if budget is not None and count_text(content) > budget:
            content = content[: budget * 4] if is_json else fit_words(content, budget)
            finish = "length"
        used = count_text(content)
        return Choice(
            index, content, reasoning, (), finish, used + reasoning_tokens, reasoning_tokens
        )

    def _tool_call(self, request: ChatRequest, seed: str) -> ToolCall | None:
        if not request.tools or request.tool_choice == "none":
            return None
        if request.messages[-1].get("role") == "tool":
            return None  # a tool result came back: answer in words
        functions = {t["function"]["name"]: t["function"] for t in request.tools}
        if isinstance(request.tool_choice, dict):
            name = request.tool_choice["function"]["name"]
        else:
            name = next(iter(functions))
        arguments = _compact(sample(functions[name].get("parameters"), seed))
        return ToolCall(random_id("call_", 24), name, arguments)

    def _content(self, request: ChatRequest, seed: str) -> tuple[str, bool]:
        fmt = request.response_format
        if fmt is None:
            return answer_text(seed), False
        if fmt.get("type") == "json_schema":
            schema = fmt["json_schema"].get("schema")
            return _compact(sample(schema, seed)), True
        return _compact({"answer": reply_text(seed)}), True


def _openai_usage(prompt: int, completion: int, cached: int, reasoning: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _deepseek_usage(
    prompt: int, completion: int, hits: int, reasoning: int, request: ChatRequest
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": hits},
        "prompt_cache_hit_tokens": hits,
        "prompt_cache_miss_tokens": prompt - hits,
    }
    if request.thinking:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def _too_long(window: int, prompt: int, asked: int) -> EmulatorError:
    if asked:
        message = (
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt + asked} tokens ({prompt} in the messages, {asked} in the completion). "
            "Please reduce the length of the messages or completion."
        )
    else:
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {prompt} tokens. Please reduce the length of the messages."
        )
    return invalid(message, param="messages", code="context_length_exceeded")


def _deepseek_shaped(exc: EmulatorError) -> EmulatorError:
    status = 422 if exc.code in _RANGE_CODES else exc.status
    return EmulatorError(
        status, exc.message, error_type="invalid_request_error", code="invalid_request_error"
    )


def _cut_at_stop(content: str, stops: tuple[str, ...]) -> str:
    # Generation ends before the first stop sequence, which is not returned.
    cuts = [content.find(stop) for stop in stops if stop and stop in content]
    return content[: min(cuts)] if cuts else content


def _compact(value: Any) -> str:
    # The models emit JSON without spaces after separators.
    return json.dumps(value, separators=(",", ":"))
