"""A faithful Anthropic Messages API (providers-2.md §2) as a Starlette app.

    POST /v1/messages      JSON, or named SSE events with ``stream: true``
    /_emulator/*           test control (faults), as for the other emulators

Validation as the real API: ``x-api-key`` (or a bearer token) and ``anthropic-version``
required; ``model``, ``max_tokens`` (>= 1) and ``messages`` required; unknown top-level
fields refused ("Extra inputs are not permitted"); roles ``user``/``assistant`` only, the
first one ``user``; ``system`` a string or text blocks; ``temperature`` within 0-1;
``thinking`` budgets of at least 1,024 and below ``max_tokens``; ``tool_result`` blocks
only in user turns. Errors use Anthropic's envelope with a ``request_id``; faults answer
any status (529 ``overloaded_error`` included) or break a stream with an ``error`` event.

Replies are deterministic: a tool call when tools are offered and the last turn is not a
tool result (unless ``tool_choice`` is none), JSON matching ``output_config.format``'s
schema when one is given, otherwise words derived from the conversation, cut by
``max_tokens`` and ``stop_sequences``. Streams follow the recorded framing, padding
included, with a ``ping``.

Prompt caching (providers.md 5.6): each ``cache_control`` breakpoint (in tools, system or
messages, rendered in that order; at most 4, else 400) marks a prefix. The longest prefix
already cached (same model, same key, within its TTL, refreshed on a hit) is read
(``cache_read_input_tokens``); the prefix at the last breakpoint, when new and at least the
model's minimum (1,024 tokens; 4,096 for Haiku 4.5 and Opus 4.5+), is written
(``cache_creation_input_tokens``, split by TTL in ``cache_creation``); a shorter one is
silently not cached. ``input_tokens`` counts only what is neither.

Message Batches: ``batches.py`` (``/v1/messages/batches``), answered by the same
validation, answer and prompt cache as ``/v1/messages``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.clock import Clock, SystemClock
from adapters.emulators.anthropic.batches import BatchError, Batches, BatchSettings
from adapters.emulators.control import RequestLog, control_routes
from adapters.emulators.faults import Fault, FaultPlan
from adapters.emulators.schema_sample import sample
from adapters.emulators.tokens import answer_text, count_text, text_of
from adapters.emulators.transport import DroppedResponse, SSEResponse, quiet_uvicorn_drops

FIELDS = frozenset(
    {
        "model", "max_tokens", "messages", "system", "tools", "tool_choice", "temperature",
        "top_p", "top_k", "stop_sequences", "stream", "metadata", "thinking", "output_config",
        "service_tier", "cache_control", "container", "inference_geo",
    }
)  # fmt: skip
MODELS = (
    "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-haiku-4-5",
    "claude-haiku-4-5-20251001", "claude-opus-4-1", "claude-opus-4-1-20250805",
)  # fmt: skip
_STATUS_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 409: "conflict_error",
    413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
    529: "overloaded_error",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class AnthropicEmulatorConfig:
    api_keys: frozenset[str] | None = None  # None: any non-empty key is accepted
    models: tuple[str, ...] = MODELS
    latency: float = 0.0
    # The smallest cacheable prefix, by model prefix (a 2026 third-party table; unverified
    # for models it does not name, which get the default).
    cache_min_tokens: tuple[tuple[str, int], ...] = (
        ("claude-haiku-4-5", 4096),
        ("claude-opus-4-5", 4096),
    )
    cache_min_default: int = 1024
    batches: BatchSettings = field(default_factory=BatchSettings)
    # Messages requests above 32 MB are refused 413 ``request_too_large`` (providers-2.md 6).
    max_request_bytes: int = 32 * 1024 * 1024

    def cache_min(self, model: str) -> int:
        for prefix, tokens in self.cache_min_tokens:
            if model.startswith(prefix):
                return tokens
        return self.cache_min_default


class PromptCache:
    """Cached prefixes by (key, model, prefix hash) -> expiry on the clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.entries: dict[tuple[str, str, str], float] = {}

    def account(
        self, key: str, body: dict[str, Any], minimum: int
    ) -> tuple[int, int, dict[str, int]]:
        """(tokens read, tokens written, writes by TTL) for this request's breakpoints."""
        prefixes = breakpoints(body)
        if len(prefixes) > 4:
            raise _invalid("A maximum of 4 blocks with cache_control may be provided.")
        now = self.clock.now()
        read = 0
        for tokens, digest, _ in reversed(prefixes):
            entry = (key, str(body["model"]), digest)
            if self.entries.get(entry, 0.0) > now:
                read = tokens
                self.entries[entry] = now + _ttl_of(prefixes, digest)  # refreshed on a hit
                break
        written, by_ttl = 0, {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
        if prefixes:
            tokens, digest, ttl = prefixes[-1]
            entry = (key, str(body["model"]), digest)
            if tokens > read and tokens >= minimum and self.entries.get(entry, 0.0) <= now:
                written = tokens - read
                by_ttl["ephemeral_1h_input_tokens" if ttl == "1h" else
                       "ephemeral_5m_input_tokens"] = written  # fmt: skip
                self.entries[entry] = now + (3600.0 if ttl == "1h" else 300.0)
        return read, written, by_ttl


def _ttl_of(prefixes: list[tuple[int, str, str]], digest: str) -> float:
    ttl = next((t for _, d, t in prefixes if d == digest), "5m")
    return 3600.0 if ttl == "1h" else 300.0


def breakpoints(body: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(prefix tokens, prefix hash, ttl) at each ``cache_control`` mark, in render order
    tools -> system -> messages."""
    blocks: list[Any] = list(body.get("tools") or [])
    system = body.get("system")
    if isinstance(system, list):
        blocks += system
    elif isinstance(system, str):
        blocks.append({"type": "text", "text": system})
    for message in body["messages"]:
        content = message.get("content")
        blocks += content if isinstance(content, list) else [{"type": "text", "text": content}]
    out: list[tuple[int, str, str]] = []
    digest = hashlib.sha256(str(body["model"]).encode())
    tokens = 0
    for block in blocks:
        if not isinstance(block, dict):
            continue
        plain = {k: v for k, v in block.items() if k != "cache_control"}
        digest.update(orjson.dumps(plain, option=orjson.OPT_SORT_KEYS))
        tokens += count_text(text_of(plain.get("text") or plain.get("content") or "")) + (
            count_text(orjson.dumps(plain.get("input_schema")).decode())
            if "input_schema" in plain else 0
        ) + 4  # fmt: skip
        control = block.get("cache_control")
        if isinstance(control, dict):
            out.append((tokens, digest.hexdigest(), str(control.get("ttl") or "5m")))
    return out


class AnthropicError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _STATUS_TYPES.get(status, "api_error"), "message": message},
        "request_id": _request_id(),
    }


def _request_id() -> str:
    return "req_011C" + secrets.token_hex(10)


def _invalid(message: str) -> AnthropicError:
    return AnthropicError(400, message)


# --- validation --------------------------------------------------------------------------


def validate(body: Any, models: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    extra = sorted(set(body) - FIELDS)
    if extra:
        raise _invalid(f"{extra[0]}: Extra inputs are not permitted")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise _invalid(f"{name}: Field required")
    if body["model"] not in models:
        raise AnthropicError(404, f"model: {body['model']}")
    limit = body["max_tokens"]
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise _invalid("max_tokens: Input should be greater than or equal to 1")
    temperature = body.get("temperature")
    if temperature is not None and not 0.0 <= float(temperature) <= 1.0:
        raise _invalid("temperature: Input should be less than or equal to 1")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _invalid("system: Input should be a valid string or a list of text blocks")
    if isinstance(system, list) and any(b.get("type") != "text" for b in system):
        raise _invalid("system: only text blocks are accepted")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _invalid(
                f"messages.{index}.role: Input should be 'user' or 'assistant'"
                + (" (system prompts go in the top-level system field)" if role == "system" else "")
            )
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "tool_result" and role != "user":
                raise _invalid(f"messages.{index}: tool_result blocks belong in user turns")
            if kind == "tool_use" and role != "assistant":
                raise _invalid(f"messages.{index}: tool_use blocks belong in assistant turns")
    if messages[0]["role"] != "user":
        raise _invalid('messages: first message must use the "user" role')
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024 or budget >= limit:
            raise _invalid("thinking.budget_tokens: must be >= 1024 and less than max_tokens")
    return body


# --- the answer ----------------------------------------------------------------------------


def answer(body: dict[str, Any]) -> dict[str, Any]:
    rendered = orjson.dumps([body.get("system"), body["messages"]]).decode()
    seed = body["model"] + rendered
    input_tokens = count_text(text_of(body.get("system") or "")) + sum(
        count_text(text_of(m.get("content"))) for m in body["messages"]
    ) + 8 * len(body["messages"])  # fmt: skip
    limit = int(body["max_tokens"])
    content: list[dict[str, Any]] = []
    stop_reason = "end_turn"
    stop_sequence = None
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {}
    last = body["messages"][-1]
    answered = isinstance(last.get("content"), list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"]
    )
    if tools and choice.get("type") != "none" and not answered:
        tool = next((t for t in tools if t.get("name") == choice.get("name")), tools[0])
        tool_input = sample(tool.get("input_schema"), seed)
        content.append({"type": "tool_use", "id": "toolu_" + _digest(seed)[:24],
                        "name": tool["name"], "input": tool_input})  # fmt: skip
        stop_reason = "tool_use"
        output_tokens = count_text(orjson.dumps(tool_input).decode()) + 8
    else:
        fmt = (body.get("output_config") or {}).get("format") or {}
        if fmt.get("type") == "json_schema":
            text = orjson.dumps(sample(fmt.get("schema"), seed)).decode()
        else:
            text = answer_text(seed)
        for stop in body.get("stop_sequences") or []:
            if stop and stop in text:
                text, stop_reason, stop_sequence = text[: text.index(stop)], "stop_sequence", stop
                break
        if count_text(text) > limit:
            words = text.split(" ")
            while words and count_text(" ".join(words)) > limit:
                words.pop()
            text, stop_reason, stop_sequence = " ".join(words), "max_tokens", None
        content.append({"type": "text", "text": text})
        output_tokens = count_text(text)
    return {
        "id": "msg_01" + _digest(seed + "id")[:22],
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "stop_details": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output_tokens,
            "service_tier": "standard",
            "inference_geo": "not_available",
        },
    }


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def stream_events(message: dict[str, Any]) -> Iterator[bytes]:
    """The recorded framing: compact JSON padded with spaces before the closing brace."""

    def event(name: str, payload: dict[str, Any], pad: int = 4) -> bytes:
        data = orjson.dumps(payload)[:-1] + b" " * pad + b"}"
        return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"

    usage = dict(message["usage"])
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 2}}  # fmt: skip
    yield event("message_start", {"type": "message_start", "message": start}, 10)
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opened: dict[str, Any] = {"type": "text", "text": ""}
            yield event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": opened})  # fmt: skip
            if index == 0:
                yield b'event: ping\ndata: {"type": "ping"}\n\n'
            words = block["text"].split(" ")
            for at in range(0, len(words), 3):
                piece = " ".join(words[at : at + 3]) + (" " if at + 3 < len(words) else "")
                yield event("content_block_delta", {"type": "content_block_delta", "index": index,
                            "delta": {"type": "text_delta", "text": piece}})  # fmt: skip
        else:
            opened = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            yield event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": opened})  # fmt: skip
            arguments = orjson.dumps(block["input"]).decode()
            for piece in ("", arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                payload = {"type": "content_block_delta", "index": index, "delta": delta}
                yield event("content_block_delta", payload)
        yield event("content_block_stop", {"type": "content_block_stop", "index": index}, 3)
    final_usage = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens",
                                         "cache_read_input_tokens", "output_tokens")}  # fmt: skip
    yield event("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": message["stop_reason"],
                                            "stop_sequence": message["stop_sequence"],
                                            "stop_details": None},
                                  "usage": final_usage}, 13)  # fmt: skip
    yield event("message_stop", {"type": "message_stop"}, 9)


# --- the app -------------------------------------------------------------------------------


class _Server:
    def __init__(self, config: AnthropicEmulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.faults = FaultPlan()
        self.requests = RequestLog(1000)
        self.cache = PromptCache(clock)
        self.batches = Batches(config.batches, clock, self._run)

    async def messages(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.record(request.method, request.url.path, dict(request.headers), body)
        try:
            self._authenticate(request)
            fault = self.faults.take(request.url.path)
            if fault is not None:
                early = await self._apply(fault)
                if early is not None:
                    return early
            if self.config.latency:
                await asyncio.sleep(self.config.latency)
            if len(raw) > self.config.max_request_bytes:
                raise AnthropicError(413, "Request exceeds the maximum allowed number of bytes.")
            if body is None:
                raise _invalid("The request body is not valid JSON.")
            message = answer(validate(body, self.config.models))
            self._account_cache(_key_of(request), body, message)
        except AnthropicError as exc:
            return _json(error_body(exc.status, exc.message), exc.status)
        if body.get("stream"):
            error = error_body(529, "Overloaded")
            error.pop("request_id")
            return SSEResponse(list(stream_events(message)), fault=fault, error=error,
                               headers=self._headers())  # fmt: skip
        return _json(message, 200, self._headers())

    def _run(self, key: str, params: dict[str, Any]) -> dict[str, Any]:
        """One Message Batch request, answered as ``/v1/messages`` would answer it."""
        try:
            message = answer(validate(params, self.config.models))
            self._account_cache(key, params, message)
        except AnthropicError as exc:
            raise BatchError(exc.status, exc.message) from None
        return message

    def _account_cache(self, key: str, body: dict[str, Any], message: dict[str, Any]) -> None:
        read, written, by_ttl = self.cache.account(
            key, body, self.config.cache_min(str(body["model"]))
        )
        usage = message["usage"]
        usage["input_tokens"] = max(1, usage["input_tokens"] - read - written)
        usage["cache_read_input_tokens"] = read
        usage["cache_creation_input_tokens"] = written
        usage["cache_creation"] = by_ttl

    def _authenticate(self, request: Request) -> None:
        key = request.headers.get("x-api-key")
        if key is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if not key or (self.config.api_keys is not None and key not in self.config.api_keys):
            raise AnthropicError(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            raise _invalid("anthropic-version: header is required")

    async def _apply(self, fault: Fault) -> Response | None:
        if fault.latency:
            await asyncio.sleep(fault.latency)
        if fault.drop:
            return DroppedResponse()
        if fault.status is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            if fault.should_retry is not None:
                headers["x-should-retry"] = "true" if fault.should_retry else "false"
            message = "Overloaded" if fault.status == 529 else f"emulated {fault.status}"
            return _json(fault.body or error_body(fault.status, message), fault.status, headers)
        return None

    def _headers(self) -> dict[str, str]:
        reset = "2026-01-01T00:01:00Z"
        return {
            "request-id": _request_id(),
            "anthropic-ratelimit-requests-limit": "1000",
            "anthropic-ratelimit-requests-remaining": "999",
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-tokens-limit": "96000",
            "anthropic-ratelimit-tokens-remaining": "95000",
            "anthropic-ratelimit-tokens-reset": reset,
        }

    # --- Message Batches -------------------------------------------------------------

    async def _batch_call(self, request: Request) -> tuple[bytes, Response | None]:
        raw = await request.body()
        self.requests.record(request.method, request.url.path, dict(request.headers), None)
        try:
            self._authenticate(request)
        except AnthropicError as exc:
            return raw, _json(error_body(exc.status, exc.message), exc.status)
        fault = self.faults.take(request.url.path)
        if fault is not None:
            early = await self._apply(fault)
            if early is not None:
                return raw, early
        return raw, None

    def _batch(self, request: Request) -> Any:
        return self.batches.get(str(request.path_params["batch_id"]))

    async def create_batch(self, request: Request) -> Response:
        raw, early = await self._batch_call(request)
        if early is not None:
            return early
        try:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise BatchError(400, "The request body is not valid JSON.") from None
            batch = self.batches.create(body, key=_key_of(request), size=len(raw))
        except BatchError as exc:
            return _json(error_body(exc.status, exc.message), exc.status)
        return _json(self.batches.view(batch, str(request.base_url)), 200, self._headers())

    async def list_batches(self, request: Request) -> Response:
        _, early = await self._batch_call(request)
        if early is not None:
            return early
        query = request.query_params
        try:
            try:
                limit = int(query.get("limit", "20"))
            except ValueError:
                raise BatchError(400, "limit: Input should be a valid integer") from None
            found, more = self.batches.page(
                limit=limit, after_id=query.get("after_id"), before_id=query.get("before_id")
            )
        except BatchError as exc:
            return _json(error_body(exc.status, exc.message), exc.status)
        base = str(request.base_url)
        data = [self.batches.view(b, base) for b in found]
        return _json({"data": data, "has_more": more,
                      "first_id": data[0]["id"] if data else None,
                      "last_id": data[-1]["id"] if data else None})  # fmt: skip

    async def get_batch(self, request: Request) -> Response:
        _, early = await self._batch_call(request)
        if early is not None:
            return early
        try:
            batch = self._batch(request)
        except BatchError as exc:
            return _json(error_body(exc.status, exc.message), exc.status)
        return _json(self.batches.view(batch, str(request.base_url)))

    async def cancel_batch(self, request: Request) -> Response:
        _, early = await self._batch_call(request)
        if early is not None:
            return early
        try:
            batch = self.batches.cancel(self._batch(request))
        except BatchError as exc:
            return _json(error_body(exc.status, exc.message), exc.status)
        return _json(self.batches.view(batch, str(request.base_url)))

    async def delete_batch(self, request: Request) -> Response:
        _, early = await self._batch_call(request)
        if early is not None:
            return early
        try:
            batch = self._batch(request)
            self.batches.delete(batch)
        except BatchError as exc:
            return _json(error_body(exc.status, exc.message), exc.status)
        return _json({"id": batch.id, "type": "message_batch_deleted"})

    async def batch_results(self, request: Request) -> Response:
        _, early = await self._batch_call(request)
        if early is not None:
            return early
        try:
            content = self.batches.jsonl(self._batch(request))
        except BatchError as exc:
            return _json(error_body(exc.status, exc.message), exc.status)
        return Response(content, 200, media_type="application/binary")


def _key_of(request: Request) -> str:
    return request.headers.get("x-api-key") or request.headers.get("authorization", "")


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers, "application/json")


def create_app(
    config: AnthropicEmulatorConfig | None = None, *, clock: Clock | None = None
) -> Starlette:
    server = _Server(config or AnthropicEmulatorConfig(), clock or SystemClock())
    quiet_uvicorn_drops()
    app = Starlette(
        routes=[
            *control_routes(),
            Route("/v1/messages", server.messages, methods=["POST"]),
            Route("/v1/messages/batches", server.create_batch, methods=["POST"]),
            Route("/v1/messages/batches", server.list_batches, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", server.get_batch, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", server.delete_batch, methods=["DELETE"]),
            Route("/v1/messages/batches/{batch_id}/cancel", server.cancel_batch, methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}/results", server.batch_results, methods=["GET"]),
        ]
    )
    app.state.faults = server.faults
    app.state.requests = server.requests
    app.state.clock = server.clock
    app.state.batches = server.batches
    return app
