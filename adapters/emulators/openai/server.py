"""A faithful OpenAI (or DeepSeek) API as a Starlette app.

    app = create_app(OpenAIEmulatorConfig(flavour="openai"), clock=ManualClock())

Every API request goes one straight way: record it (``app.state.requests``), check the
bearer key, take a fault (``app.state.faults``) and apply it, wait ``latency``, then
answer. Routes (providers.md §1, §4):

    POST /v1/chat/completions      JSON or SSE (``stream: true``)
    POST /v1/embeddings            OpenAI only
    GET  /v1/models, /v1/models/{id}
    /v1/responses*                 OpenAI only, from ``responses.ResponsesEmulator``
    /v1/completions, /v1/moderations, /v1/images/{generations,edits},
    /v1/audio/{speech,transcriptions,translations}   OpenAI only, from ``extras.py``
    /v1/files*, /v1/batches*       OpenAI only, from ``openai_batches.BatchEmulator``
    /chat/completions, /models     DeepSeek also serves these without ``/v1``
    /_emulator/*                   test control, see ``control.py``

Fault semantics: ``latency`` sleeps first; then ``drop`` cuts the connection, ``status``
answers that status (``body`` or a default error body, plus ``retry-after``,
``retry-after-ms``, ``x-should-retry`` and, for OpenAI 429s, ``x-ratelimit-*``),
``malformed`` answers 200 with a body that is not JSON; ``drop_after_events`` /
``error_after_events`` apply to the SSE stream of a streaming request.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from adapters.clock import Clock, SystemClock
from adapters.emulators.control import RequestLog, control_routes
from adapters.emulators.faults import Fault, FaultPlan
from adapters.emulators.openai import extras
from adapters.emulators.openai.chat import ChatEngine, random_id
from adapters.emulators.openai.config import OpenAIEmulatorConfig
from adapters.emulators.openai.embeddings import embed
from adapters.emulators.openai.errors import (
    BAD_JSON,
    EmulatorError,
    default_error_body,
    flex_unavailable,
    invalid,
    invalid_url,
    server_error_event,
    unauthorized,
)
from adapters.emulators.openai.models import model_list, model_object
from adapters.emulators.openai.ratelimit import RateWindow
from adapters.emulators.openai.responses import ResponsesEmulator
from adapters.emulators.openai.responses import frame as response_event
from adapters.emulators.openai.stream import sse_stream
from adapters.emulators.transport import (
    DONE,
    MALFORMED_BODY,
    DroppedResponse,
    SSEResponse,
    quiet_uvicorn_drops,
)

__all__ = ["OpenAIEmulator", "OpenAIEmulatorConfig", "create_app"]


@dataclass(frozen=True, slots=True)
class Incoming:
    json: Any  # the parsed JSON body, or None
    fault: Fault | None


Handler = Callable[[Request, Incoming], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(payload), status, headers, "application/json")


class OpenAIEmulator:
    def __init__(self, config: OpenAIEmulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.engine = ChatEngine(config, clock)
        self.faults = FaultPlan()
        self.requests = RequestLog(config.request_log_size)
        self.window = RateWindow(
            clock, rpm=config.rpm_limit, tpm=config.tpm_limit, enforce=config.enforce_rate_limits
        )
        self._flex_seen: dict[str, int] = {}
        self.responses = ResponsesEmulator(
            self.engine,
            clock,
            background_queued_s=config.background_queued_s,
            background_run_s=config.background_run_s,
        )

    # --- shared logic, also used by the batch emulator -------------------------------

    def answer_line(self, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer one batch input line as the synchronous endpoint would (no streaming)."""
        try:
            if endpoint == "/v1/chat/completions":
                if isinstance(body, dict) and body.get("stream"):
                    raise invalid("Streaming is not supported in the Batch API.", param="stream")
                return 200, self.engine.chat(body)[1].to_dict()
            if endpoint == "/v1/embeddings" and not self.config.is_deepseek:
                return 200, embed(body, self.config)
            if endpoint == "/v1/responses" and not self.config.is_deepseek:
                if isinstance(body, dict) and body.get("stream"):
                    raise invalid("Streaming is not supported in the Batch API.", param="stream")
                if isinstance(body, dict) and body.get("background"):
                    raise invalid(
                        "Background mode is not supported in the Batch API.", param="background"
                    )
                return 200, self.responses.create(body)[0]
            raise invalid_url("POST", endpoint)
        except EmulatorError as exc:
            return exc.status, exc.body()

    # --- routes --------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        api: list[tuple[str, Handler, str]] = [
            ("/chat/completions", self.chat, "POST"),
            ("/models", self.list_models, "GET"),
            ("/models/{model:path}", self.get_model, "GET"),
        ]
        if not self.config.is_deepseek:
            api += [
                ("/embeddings", self.embeddings, "POST"),
                ("/responses", self.create_response, "POST"),
                ("/responses/{response_id}", self.get_response, "GET"),
                ("/responses/{response_id}", self.delete_response, "DELETE"),
                ("/responses/{response_id}/cancel", self.cancel_response, "POST"),
                ("/responses/{response_id}/input_items", self.response_input_items, "GET"),
                ("/completions", self.legacy_completion, "POST"),
                ("/moderations", self.moderation, "POST"),
                ("/images/generations", self.image_generation, "POST"),
                ("/images/edits", self.image_edit, "POST"),
                ("/audio/speech", self.speech, "POST"),
                ("/audio/transcriptions", self.transcription, "POST"),
                ("/audio/translations", self.transcription, "POST"),
            ]
        prefixes = ("/v1", "") if self.config.is_deepseek else ("/v1",)
        routes: list[BaseRoute] = list(control_routes())
        for prefix in prefixes:
            routes += [Route(prefix + p, self.wrap(h), methods=[m]) for p, h, m in api]
        return routes

    def wrap_route(self, route: BaseRoute) -> BaseRoute:
        """Give a teammate's route (files, batches) the same recording, auth and faults."""
        if isinstance(route, Route) and callable(route.endpoint):
            inner = route.endpoint

            async def handler(request: Request, incoming: Incoming) -> Response:
                response = inner(request)
                return await response if asyncio.iscoroutine(response) else response  # type: ignore[no-any-return]

            return Route(route.path, self.wrap(handler), methods=route.methods, name=route.name)
        return route

    def wrap(self, handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            body, bad_json = await _read_json(request)
            path = request.url.path
            self.requests.record(request.method, path, dict(request.headers), body)
            try:
                self._authenticate(request)
                fault = self.faults.take(path)
                if fault is not None:
                    early = await self._apply(fault, body)
                    if early is not None:
                        return early
                if self.config.latency > 0:
                    await asyncio.sleep(self.config.latency)
                if bad_json:
                    raise EmulatorError(400, BAD_JSON)
                response = await handler(request, Incoming(body, fault))
            except EmulatorError as exc:
                response = json_response(exc.body(), exc.status, exc.headers)
            self._decorate(response, started)
            return response

        return endpoint

    def _authenticate(self, request: Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise unauthorized(self.config.flavour, None)
        if self.config.api_keys is not None and key not in self.config.api_keys:
            raise unauthorized(self.config.flavour, key)

    async def _apply(self, fault: Fault, body: Any) -> Response | None:
        if fault.latency > 0:
            await asyncio.sleep(fault.latency)
        if fault.drop:
            return DroppedResponse()
        if fault.status is not None:
            headers = self._fault_headers(fault)
            payload = fault.body or default_error_body(fault.status, self.config.flavour)
            return json_response(payload, fault.status, headers)
        if fault.malformed:
            if isinstance(body, dict) and body.get("stream") is True:
                return SSEResponse([b"data: " + MALFORMED_BODY + b"\n\n", DONE])
            return Response(MALFORMED_BODY, 200, media_type="application/json")
        return None

    def _fault_headers(self, fault: Fault) -> dict[str, str]:
        headers: dict[str, str] = {}
        if fault.status == 429 and not self.config.is_deepseek:
            headers.update(self.window.headers(exhausted=True))
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        if fault.should_retry is not None:
            headers["x-should-retry"] = "true" if fault.should_retry else "false"
        return headers

    def _decorate(self, response: Response, started: float) -> None:
        if self.config.is_deepseek:
            return
        headers = response.headers
        headers.setdefault("x-request-id", random_id("req_", 32))
        headers.setdefault("openai-version", "2020-10-01")
        headers.setdefault("openai-organization", "org-emulator")
        headers.setdefault("openai-processing-ms", str(int((time.perf_counter() - started) * 1000)))
        if "x-ratelimit-limit-requests" not in headers:
            for key, value in self.window.headers().items():
                headers[key] = value

    # --- handlers ------------------------------------------------------------------

    async def chat(self, request: Request, incoming: Incoming) -> Response:
        model = incoming.json.get("model") if isinstance(incoming.json, dict) else None
        self._check_flex_capacity(incoming.json)
        self.window.admit(str(model))
        chat, completion = self.engine.chat(incoming.json)
        self.window.spend(int(completion.usage["total_tokens"]))
        if not chat.stream:
            return json_response(completion.to_dict())
        return SSEResponse(
            sse_stream(completion, chat),
            delay=self.config.stream_delay,
            fault=incoming.fault,
            error=(incoming.fault.body if incoming.fault else None) or server_error_event(),
        )

    def _check_flex_capacity(self, body: Any) -> None:
        capacity = self.config.flex_capacity
        if capacity >= 1.0 or not isinstance(body, dict) or body.get("service_tier") != "flex":
            return
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        seen = self._flex_seen[digest] = self._flex_seen.get(digest, 0) + 1
        if random.Random(f"{self.config.seed}/{digest}/{seen}").random() >= capacity:
            raise flex_unavailable()

    async def embeddings(self, request: Request, incoming: Incoming) -> Response:
        model = incoming.json.get("model") if isinstance(incoming.json, dict) else None
        self.window.admit(str(model))
        answer = embed(incoming.json, self.config)
        self.window.spend(int(answer["usage"]["total_tokens"]))
        return json_response(answer)

    async def create_response(self, request: Request, incoming: Incoming) -> Response:
        body = incoming.json
        model = body.get("model") if isinstance(body, dict) else None
        self.window.admit(str(model))
        response, stored = self.responses.create(body)
        self.window.spend(int(response["usage"]["total_tokens"]))
        if isinstance(body, dict) and body.get("stream"):
            events = stored.events
            if stored.background:
                events = events[:2]  # the rest is read with GET ?stream=true once it runs
            return self._event_stream(events, incoming.fault)
        return json_response(self.responses.view(stored))

    async def get_response(self, request: Request, incoming: Incoming) -> Response:
        response_id = request.path_params["response_id"]
        if request.query_params.get("stream") == "true":
            after = request.query_params.get("starting_after")
            if after is not None and not after.lstrip("-").isdigit():
                raise invalid(
                    "Invalid 'starting_after': expected an integer.", param="starting_after"
                )
            events = self.responses.replay(response_id, None if after is None else int(after))
            return self._event_stream(events, incoming.fault)
        return json_response(self.responses.view(self.responses.get(response_id)))

    async def delete_response(self, request: Request, incoming: Incoming) -> Response:
        return json_response(self.responses.delete(request.path_params["response_id"]))

    async def cancel_response(self, request: Request, incoming: Incoming) -> Response:
        return json_response(self.responses.cancel(request.path_params["response_id"]))

    async def response_input_items(self, request: Request, incoming: Incoming) -> Response:
        query = request.query_params
        limit = query.get("limit", "20")
        if not limit.isdigit():
            raise invalid("Invalid 'limit': expected an integer.", param="limit")
        page = self.responses.list_input_items(
            request.path_params["response_id"],
            limit=int(limit),
            order=query.get("order", "desc"),
            after=query.get("after"),
        )
        return json_response(page)

    def _event_stream(self, events: list[dict[str, Any]], fault: Fault | None) -> Response:
        # Production sends the nested error shape mid-stream (providers-2.md §1.5).
        error = (fault.body if fault else None) or {
            "type": "error",
            "sequence_number": len(events),
            "error": {"type": "server_error", "code": "server_error",
                      "message": "The server had an error while processing your request.",
                      "param": None},
        }  # fmt: skip
        return SSEResponse(
            [response_event(event) for event in events],
            delay=self.config.stream_delay,
            fault=fault,
            error=error,
        )

    # --- the rest of the stateless API (extras.py) --------------------------------------

    async def legacy_completion(self, request: Request, incoming: Incoming) -> Response:
        return json_response(extras.completion(incoming.json))

    async def moderation(self, request: Request, incoming: Incoming) -> Response:
        return json_response(extras.moderation(incoming.json))

    async def image_generation(self, request: Request, incoming: Incoming) -> Response:
        return json_response(extras.images(incoming.json))

    async def image_edit(self, request: Request, incoming: Incoming) -> Response:
        return json_response(await extras.image_edit(request))

    async def speech(self, request: Request, incoming: Incoming) -> Response:
        return extras.speech(incoming.json)

    async def transcription(self, request: Request, incoming: Incoming) -> Response:
        return json_response(await extras.transcription(request))

    def _visible(self) -> list[str]:
        now = self.clock.now()
        return [m for m in self.config.models if not self.config.retired(m, now)]

    async def list_models(self, request: Request, incoming: Incoming) -> Response:
        return json_response(model_list(self._visible(), self.config.flavour))

    async def get_model(self, request: Request, incoming: Incoming) -> Response:
        model = request.path_params["model"]
        if model not in self._visible():
            raise EmulatorError(
                404, f"The model '{model}' does not exist", param="model", code="model_not_found"
            )
        return json_response(model_object(model, self.config.flavour))


async def _read_json(request: Request) -> tuple[Any, bool]:
    """(parsed body or None, whether a body was sent that is not JSON). Multipart and
    other non-JSON uploads are left unread for the handler to stream."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return None, False
    content_type = request.headers.get("content-type", "")
    if content_type and "json" not in content_type:
        return None, False
    raw = await request.body()
    if not raw.strip():
        # An empty body is no body (POST /v1/batches/{id}/cancel sends none); the
        # handler decides whether it needed one.
        return None, False
    try:
        return orjson.loads(raw), False
    except orjson.JSONDecodeError:
        return None, True


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if status in (404, 405):
        error = invalid_url(request.method, request.url.path)
        return json_response(error.body(), 404)
    return json_response(default_error_body(status), status)


def _batch_emulator_class() -> Any:
    # The Files/Batch emulator is a teammate's module; the app works without it.
    if importlib.util.find_spec("adapters.emulators.openai.batch.emulator") is None:
        return None
    module = importlib.import_module("adapters.emulators.openai.batch.emulator")
    return getattr(module, "BatchEmulator", None)


def create_app(
    config: OpenAIEmulatorConfig | None = None,
    *,
    clock: Clock | None = None,
    batch_config: Any = None,
) -> Starlette:
    """The emulator app. ``batch_config`` (an ``openai_batches.BatchEmulatorConfig``)
    tunes the Files/Batch emulator mounted under the OpenAI flavour."""
    config = config or OpenAIEmulatorConfig()
    clock = clock or SystemClock()
    emulator = OpenAIEmulator(config, clock)
    routes = emulator.routes()
    batches = None
    batch_class = None if config.is_deepseek else _batch_emulator_class()
    if batch_class is not None:
        extra = {} if batch_config is None else {"config": batch_config}
        batches = batch_class(clock=clock, execute=emulator.answer_line, **extra)
        routes += [emulator.wrap_route(route) for route in batches.routes()]
    quiet_uvicorn_drops()
    app = Starlette(
        routes=routes,
        exception_handlers={404: _not_found, 405: _not_found, HTTPException: _not_found},
    )
    app.state.emulator = emulator
    app.state.config = config
    app.state.faults = emulator.faults
    app.state.requests = emulator.requests
    app.state.clock = clock
    app.state.batches = batches
    return app
