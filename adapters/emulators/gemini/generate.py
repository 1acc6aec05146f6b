"""Deterministic ``GenerateContentResponse``s (providers.md §3.3, §3.4).

A request becomes a ``ReplyPlan`` once (text, function call or JSON per candidate,
thinking, finish reasons, token counts); the plan is then rendered whole for
``generateContent`` or as incremental chunks with cumulative usage for streaming.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from adapters.emulators.gemini.cache import CacheEntry
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.schema import instance
from adapters.emulators.gemini.tokens import count_prompt, details, prompt_text
from adapters.emulators.gemini.wire import (
    Content,
    FunctionDeclaration,
    GenerateContentRequest,
    GenerationConfig,
)
from adapters.emulators.tokens import answer_text, count_text, reply_text

_WORD = re.compile(r"\S+\s*")


@dataclass(frozen=True, slots=True)
class CandidatePlan:
    parts: tuple[dict[str, Any], ...]
    finish_reason: str
    tokens: int


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    model: str
    response_id: str
    prompt: Counter[str]
    cached: Counter[str] | None
    candidates: tuple[CandidatePlan, ...] = ()
    thoughts: int = 0
    thought_text: str | None = None
    block_reason: str | None = None

    def usage(self, candidate_tokens: int | None = None) -> dict[str, Any]:
        """``usageMetadata``; ``candidate_tokens`` is the running count while streaming."""
        prompt = sum(self.prompt.values())
        out = (
            sum(c.tokens for c in self.candidates) if candidate_tokens is None else candidate_tokens
        )
        body: dict[str, Any] = {"promptTokenCount": prompt}
        if self.block_reason is None:
            body["candidatesTokenCount"] = out
        body["totalTokenCount"] = prompt + out + self.thoughts
        if self.cached is not None:
            body["cachedContentTokenCount"] = sum(self.cached.values())
        body["promptTokensDetails"] = details(self.prompt)
        if self.cached is not None:
            body["cacheTokensDetails"] = details(self.cached)
        if self.thoughts:
            body["thoughtsTokenCount"] = self.thoughts
        return body

    def envelope(self, **fields: Any) -> dict[str, Any]:
        return {**fields, "modelVersion": self.model, "responseId": self.response_id}


def plan_reply(
    request: GenerateContentRequest,
    *,
    model: str,
    cache: CacheEntry | None,
    settings: GeminiEmulatorConfig,
    response_id: str,
) -> ReplyPlan:
    contents = [*(cache.contents if cache else ()), *(request.contents or ())]
    system = cache.system if cache else request.system_instruction
    tools = list(cache.tools) if cache else list(request.tools or ())
    tool_config = cache.tool_config if cache else request.tool_config
    prompt = count_prompt(contents=request.contents or (), system=request.system_instruction)
    prompt.update(cache.tally if cache else count_prompt(tools=tools))
    text = prompt_text(contents, system)
    base = ReplyPlan(model, response_id, prompt, cache.tally if cache else None)
    marker = settings.blocked_marker
    if marker and marker in text:
        return replace(base, block_reason=settings.block_reason)
    config = request.generation_config or GenerationConfig()
    seed = text if config.seed is None else f"{text}\n#seed={config.seed}"
    thoughts, thought_text = _thinking(config, model=model, seed=seed, settings=settings)
    budget = None if not config.max_output_tokens else config.max_output_tokens - thoughts
    declarations = [d for tool in tools for d in tool.function_declarations or ()]
    calling = tool_config.function_calling_config if tool_config else None
    mode = (calling.mode if calling else None) or "AUTO"
    wants_call = declarations and mode != "NONE" and not _answers_call(contents)
    candidates = []
    for index in range(config.candidate_count or 1):
        candidate_seed = f"{seed}\n#candidate={index}" if index else seed
        if wants_call:
            allowed = calling.allowed_function_names if calling else None
            candidates.append(_call(declarations, allowed, contents, candidate_seed))
        else:
            candidates.append(_text(config, candidate_seed, budget))
    return replace(base, candidates=tuple(candidates), thoughts=thoughts, thought_text=thought_text)


def render(plan: ReplyPlan) -> dict[str, Any]:
    if plan.block_reason is not None:
        return _blocked(plan)
    candidates = []
    for index, candidate in enumerate(plan.candidates):
        parts = [*_thought_parts(plan), *candidate.parts]
        content: dict[str, Any] = {"parts": parts, "role": "model"} if parts else {"role": "model"}
        candidates.append(
            {"content": content, "finishReason": candidate.finish_reason, "index": index}
        )
    return plan.envelope(candidates=candidates, usageMetadata=plan.usage())


def stream_chunks(plan: ReplyPlan, *, words: int) -> list[dict[str, Any]]:
    """Incremental chunks: a thought part, text deltas of ``words`` words (function calls
    whole), then a last chunk with only the finish reasons; usage is cumulative on each."""
    if plan.block_reason is not None:
        return [_blocked(plan)]
    pieces = [_pieces(candidate, words) for candidate in plan.candidates]
    chunks: list[dict[str, Any]] = []
    if plan.thought_text is not None:
        thought = [
            {"content": {"parts": _thought_parts(plan), "role": "model"}, "index": i}
            for i in range(len(plan.candidates))
        ]
        chunks.append(plan.envelope(candidates=thought, usageMetadata=plan.usage(0)))
    emitted = [0] * len(pieces)
    for step in range(max((len(p) for p in pieces), default=0)):
        step_candidates = []
        for index, candidate_pieces in enumerate(pieces):
            if step < len(candidate_pieces):
                part, tokens = candidate_pieces[step]
                emitted[index] = tokens
                content = {"parts": [part], "role": "model"}
                step_candidates.append({"content": content, "index": index})
        chunks.append(
            plan.envelope(candidates=step_candidates, usageMetadata=plan.usage(sum(emitted)))
        )
    final = [{"finishReason": c.finish_reason, "index": i} for i, c in enumerate(plan.candidates)]
    chunks.append(plan.envelope(candidates=final, usageMetadata=plan.usage()))
    return chunks


def _pieces(candidate: CandidatePlan, words: int) -> list[tuple[dict[str, Any], int]]:
    """(part, cumulative tokens of the candidate so far) for each delta."""
    pieces: list[tuple[dict[str, Any], int]] = []
    total = 0
    for part in candidate.parts:
        if "text" not in part:
            total += count_text(json.dumps(part, sort_keys=True))
            pieces.append((part, total))
            continue
        tokens = _WORD.findall(part["text"])
        sent = ""
        for start in range(0, len(tokens), max(1, words)):
            delta = "".join(tokens[start : start + max(1, words)])
            sent += delta
            pieces.append(({"text": delta}, total + count_text(sent)))
        total += count_text(part["text"])
    return pieces


def _blocked(plan: ReplyPlan) -> dict[str, Any]:
    feedback: dict[str, Any] = {"blockReason": plan.block_reason}
    if plan.block_reason == "SAFETY":
        feedback["safetyRatings"] = [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        ]
    return plan.envelope(promptFeedback=feedback, usageMetadata=plan.usage())


def _thought_parts(plan: ReplyPlan) -> list[dict[str, Any]]:
    return [{"text": plan.thought_text, "thought": True}] if plan.thought_text else []


def _thinking(
    config: GenerationConfig, *, model: str, seed: str, settings: GeminiEmulatorConfig
) -> tuple[int, str | None]:
    if not settings.is_thinking(model):
        return 0, None
    thinking = config.thinking_config
    budget = thinking.thinking_budget if thinking else None
    if budget == 0:
        return 0, None
    tokens = 24 + _digest(seed) % 200
    if budget is not None and budget > 0:
        tokens = min(tokens, budget)
    # Thinking spends the output budget first, as on Gemini 2.5.
    if config.max_output_tokens:
        tokens = min(tokens, config.max_output_tokens)
    summary = None
    if thinking is not None and thinking.include_thoughts:
        summary = "**Thinking it over**\n\n" + reply_text(f"{seed}\n#thought")
    return tokens, summary


def _text(config: GenerationConfig, seed: str, budget: int | None) -> CandidatePlan:
    mime = config.response_mime_type or "text/plain"
    schema: Any = config.response_json_schema
    if config.response_schema is not None:
        schema = config.response_schema.model_dump(by_alias=True, exclude_none=True)
    if mime == "application/json":
        value = instance(schema, seed) if schema is not None else {"response": reply_text(seed)}
        text = json.dumps(value)
    elif mime == "text/x.enum" and isinstance(schema, dict) and schema.get("enum"):
        options = schema["enum"]
        text = str(options[_digest(seed) % len(options)])
    else:
        text = answer_text(seed)
    finish = "STOP"
    for stop in config.stop_sequences or ():
        if stop and stop in text:
            text = text[: text.index(stop)]
    if budget is not None and count_text(text) > budget:
        text = text[: max(0, budget) * 4].rstrip()
        finish = "MAX_TOKENS"
    parts = ({"text": text},) if text else ()
    return CandidatePlan(parts, finish, count_text(text))


def _call(
    declarations: list[FunctionDeclaration],
    allowed: list[str] | None,
    contents: list[Content],
    seed: str,
) -> CandidatePlan:
    choices = [d for d in declarations if not allowed or d.name in allowed] or declarations
    last = _last_user_text(contents)
    chosen = next((d for d in choices if d.name in last), choices[0])
    schema: Any = chosen.parameters_json_schema
    if chosen.parameters is not None:
        schema = chosen.parameters.model_dump(by_alias=True, exclude_none=True)
    args = instance(schema, seed, all_properties=False) if schema is not None else {}
    part = {"functionCall": {"name": chosen.name, "args": args if isinstance(args, dict) else {}}}
    return CandidatePlan((part,), "STOP", count_text(json.dumps(part, sort_keys=True)))


def _answers_call(contents: list[Content]) -> bool:
    if not contents:
        return False
    return any(part.function_response is not None for part in contents[-1].parts or ())


def _last_user_text(contents: list[Content]) -> str:
    for content in reversed(contents):
        if content.role in (None, "user"):
            return " ".join(part.text for part in content.parts or () if part.text)
    return ""


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
