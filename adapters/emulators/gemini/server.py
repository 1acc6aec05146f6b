"""A faithful local Gemini REST API (generativelanguage v1beta), see providers.md §3.

    app = create_app(GeminiEmulatorConfig(api_keys=frozenset({"k"})), clock=ManualClock())

Routes, under ``/v1beta`` and (for google-genai 3.x, which defaults to it) ``/v1``:

    GET    models, models/{m}
    POST   models/{m}:generateContent | :streamGenerateContent[?alt=sse] | :countTokens
           | :embedContent | :batchEmbedContents | :batchGenerateContent
    GET/POST                cachedContents            (list, create)
    GET/PATCH/DELETE        cachedContents/{id}       (patch: ?updateMask=ttl|expireTime)
    GET; GET/DELETE; POST   batches; batches/{id}; batches/{id}:cancel

State for tests: ``app.state.faults``, ``.requests``, ``.clock``, ``.config``, ``.caches``
(gemini_cache.CacheStore) and ``.batches`` (gemini_batch.BatchStore).

Every API call is recorded (``app.state.requests``), authenticated (``x-goog-api-key``
or ``?key=``), then meets the first matching injected fault (``app.state.faults``) before
the real handler runs. The control routes are the shared ``/_emulator/*`` of control.py
(faults, clock, requests), without auth; recorded requests here also carry ``query``.

Fault semantics (shared FaultPlan): ``latency`` sleeps first; ``drop`` cuts the connection
mid-body; ``malformed`` answers 200 with bytes that are not JSON; ``status`` answers that
status in Google's envelope (or ``body`` verbatim; 200 + body is how a test serves any
reply); ``drop_after_events``/``error_after_events`` break a stream after N events (on a
non-streaming call they act at once: a drop, or an error of ``status``, default 500).
A 429's ``retry_after`` goes into the RetryInfo detail, as Google sends it, not a header;
``retry_after_ms`` and ``should_retry`` become the ``retry-after-ms``/``x-should-retry``
headers only when a test sets them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapters.clock import Clock, SystemClock
from adapters.emulators.control import RequestLog, control_routes
from adapters.emulators.faults import Fault, FaultPlan
from adapters.emulators.gemini.api import GeminiApi
from adapters.emulators.gemini.batch import BatchStore, operation
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.errors import (
    GeminiError,
    api_key_invalid,
    for_status,
    invalid_argument,
    not_found,
    permission_denied,
)
from adapters.emulators.gemini.files import FileStore
from adapters.emulators.gemini.stream import JSON_TYPE, DroppedResponse, stream_response
from adapters.emulators.transport import quiet_uvicorn_drops

__all__ = ["GeminiEmulatorConfig", "create_app"]

Handler = Callable[[Request, Any, Fault | None], Awaitable[Response]]


class GoogleJSON(JSONResponse):
    media_type = JSON_TYPE


def error_response(error: GeminiError, headers: dict[str, str] | None = None) -> Response:
    return GoogleJSON(error.envelope(), status_code=error.code, headers=headers)


class _Server:
    def __init__(self, config: GeminiEmulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.api = GeminiApi(config, clock)
        self.files = FileStore(clock)
        self.batches = BatchStore(self.api, config, clock, self.files)
        self.faults = FaultPlan()
        self.requests = RequestLog(config.max_recorded_requests)

    # -- the pipeline every API call goes through --------------------------------------

    def endpoint(
        self, handler: Handler, *, raw_body: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            raw = await request.body()
            # Upload chunks are bytes, not JSON: their handler reads the body itself.
            body, bad_json = (None, False) if raw_body else _decode(raw)
            self._record(request, body)
            try:
                # An upload session URL is its own credential (Google's resumable
                # protocol; the SDK sends no key with the chunks).
                if not (raw_body and "upload_id" in request.query_params):
                    self._authenticate(request)
                fault = self.faults.take(request.url.path)
                delay = self.config.latency + (fault.latency if fault else 0.0)
                if delay > 0:
                    await asyncio.sleep(delay)
                early = self._fault_reply(fault, request) if fault else None
                if early is not None:
                    return early
                if bad_json:
                    raise invalid_argument(
                        "Invalid JSON payload received. Unexpected token.", field=None
                    )
                return await handler(request, body, fault)
            except GeminiError as error:
                return error_response(error)

        return run

    def _record(self, request: Request, body: Any) -> None:
        if self.requests.limit <= 0:
            return  # recording is off (a simulated day): do not build what is dropped
        # RequestLog.record has no query; Gemini clients may send the key and alt there.
        self.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "json": body,
            }
        )
        overflow = len(self.requests) - self.requests.limit
        if overflow > 0:
            del self.requests[:overflow]

    def _authenticate(self, request: Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key") or ""
        accepted = self.config.api_keys
        if key and (accepted is None or key in accepted):
            return
        raise permission_denied() if self.config.auth_error_status == 403 else api_key_invalid()

    def _fault_reply(self, fault: Fault, request: Request) -> Response | None:
        streaming = ":streamGenerateContent" in request.url.path
        if fault.drop or (fault.drop_after_events is not None and not streaming):
            return DroppedResponse()
        if fault.malformed and not streaming:
            return Response(b'{"candidates": [{"content": ', media_type=JSON_TYPE)
        if fault.error_after_events is not None:
            if streaming:
                return None
            return self._fault_error(fault, fault.status or 500, request)
        if fault.status == 200 and fault.body is not None:
            return GoogleJSON(fault.body)
        if fault.status is not None and fault.status != 200:
            return self._fault_error(fault, fault.status, request)
        return None

    def _fault_error(self, fault: Fault, status: int, request: Request) -> Response:
        headers: dict[str, str] = {}
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        if fault.should_retry is not None:
            headers["x-should-retry"] = "true" if fault.should_retry else "false"
        if fault.body is not None:
            return GoogleJSON(fault.body, status_code=status, headers=headers)
        model = request.path_params.get("target", "").partition(":")[0]
        error = for_status(status, retry_delay=fault.retry_after, model=model)
        return error_response(error, headers)

    # -- /v1beta/models ----------------------------------------------------------------

    async def list_models(self, request: Request, body: Any, fault: Fault | None) -> Response:
        size, after = _paging(request)
        names = list(self.config.models)
        chunk = names[after : after + size]
        result: dict[str, Any] = {"models": [self.api.model_resource(n) for n in chunk]}
        if after + size < len(names):
            result["nextPageToken"] = str(after + size)
        return GoogleJSON(result)

    async def model_call(self, request: Request, body: Any, fault: Fault | None) -> Response:
        model, _, method = request.path_params["target"].partition(":")
        if request.method == "GET":
            if method:
                raise not_found(f"Method not found: {method}.")
            return GoogleJSON(self.api.model_resource(model))
        if method == "streamGenerateContent":
            chunks = self.api.stream(model, body)
            error = fault.body if fault and fault.body is not None else None
            if error is None:
                status = (fault.status if fault else None) or 500
                delay = fault.retry_after if fault else None
                error = for_status(status, retry_delay=delay, model=model).envelope()
            return stream_response(
                chunks,
                sse=request.query_params.get("alt") == "sse",
                newline=self.config.sse_newline,
                drop_after=fault.drop_after_events if fault else None,
                error_after=fault.error_after_events if fault else None,
                error=error,
                malformed=bool(fault and fault.malformed),
            )
        if method == "batchGenerateContent":
            size = len(await request.body())
            return GoogleJSON(operation(self.batches.create(model, body, size)))
        operations = {
            "generateContent": self.api.generate,
            "countTokens": self.api.count_tokens,
            "embedContent": self.api.embed,
            "batchEmbedContents": self.api.batch_embed,
        }
        handler = operations.get(method)
        if handler is None:
            self.api.require_model(model, method or "get")
            raise not_found(f"Method not found: {method}.")
        return GoogleJSON(handler(model, body))

    # -- /v1beta/batches ---------------------------------------------------------------

    async def list_batches(self, request: Request, body: Any, fault: Fault | None) -> Response:
        batches, token = self.batches.page(
            _int_param(request, "pageSize"), request.query_params.get("pageToken", "")
        )
        result: dict[str, Any] = {}
        if batches:
            result["operations"] = [operation(batch) for batch in batches]
        if token:
            result["nextPageToken"] = token
        return GoogleJSON(result)

    async def batch(self, request: Request, body: Any, fault: Fault | None) -> Response:
        batch_id, _, method = request.path_params["target"].partition(":")
        name = f"batches/{batch_id}"
        if request.method == "POST":
            if method != "cancel":
                raise not_found(f"Method not found: {method}.")
            self.batches.cancel(name)
            return GoogleJSON({})
        if method:
            raise not_found(f"Method not found: {method}.")
        if request.method == "DELETE":
            self.batches.delete(name)
            return GoogleJSON({})
        return GoogleJSON(operation(self.batches.get(name)))

    # -- Files: resumable upload, get, delete, download ---------------------------------

    async def upload(self, request: Request, body: Any, fault: Fault | None) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        upload_id = request.query_params.get("upload_id")
        if upload_id is None:
            raw = await request.body()
            parsed, bad = _decode(raw)
            if bad:
                raise invalid_argument("Invalid JSON payload received.", field=None)
            session = self.files.start(headers, parsed)
            url = f"{str(request.base_url).rstrip('/')}{request.url.path}?upload_id={session}"
            return GoogleJSON(
                {}, headers={"x-goog-upload-url": url, "x-goog-upload-status": "active"}
            )
        stored = self.files.chunk(upload_id, headers, await request.body())
        if stored is None:
            return Response(b"", headers={"x-goog-upload-status": "active"})
        base = str(request.base_url).rstrip("/")
        return GoogleJSON(
            {"file": stored.resource(base)}, headers={"x-goog-upload-status": "final"}
        )

    async def file(self, request: Request, body: Any, fault: Fault | None) -> Response:
        file_id, _, method = request.path_params["target"].partition(":")
        name = f"files/{file_id}"
        if method == "download" or request.url.path.startswith("/download/"):
            if request.query_params.get("alt") != "media":
                raise invalid_argument("Downloads need alt=media.", field="alt")
            stored = self.files.get(name)
            return Response(stored.content, media_type=stored.mime_type)
        if method:
            raise not_found(f"Method not found: {method}.")
        if request.method == "DELETE":
            self.files.delete(name)
            return GoogleJSON({})
        return GoogleJSON(self.files.get(name).resource(str(request.base_url).rstrip("/")))

    # -- /v1beta/cachedContents --------------------------------------------------------

    async def caches(self, request: Request, body: Any, fault: Fault | None) -> Response:
        store = self.api.caches
        if request.method == "POST":
            return GoogleJSON(store.create(body).resource())
        entries, token = store.page(
            _int_param(request, "pageSize"), request.query_params.get("pageToken", "")
        )
        # proto3 JSON leaves out empty lists and unset strings: an empty store is "{}".
        result: dict[str, Any] = {}
        if entries:
            result["cachedContents"] = [entry.resource() for entry in entries]
        if token:
            result["nextPageToken"] = token
        return GoogleJSON(result)

    async def cache(self, request: Request, body: Any, fault: Fault | None) -> Response:
        name = f"cachedContents/{request.path_params['cache_id']}"
        store = self.api.caches
        if request.method == "DELETE":
            store.delete(name)
            return GoogleJSON({})
        if request.method == "PATCH":
            mask = request.query_params.get("updateMask") or request.query_params.get(
                "update_mask", ""
            )
            return GoogleJSON(store.patch(name, body if body is not None else {}, mask).resource())
        return GoogleJSON(store.get(name).resource())


def create_app(
    config: GeminiEmulatorConfig | None = None, *, clock: Clock | None = None
) -> Starlette:
    server = _Server(config or GeminiEmulatorConfig(), clock or SystemClock())
    api = server.endpoint
    routes: list[BaseRoute] = []
    # google-genai 3.x calls ``v1`` by default (providers.md's 2026-08 snapshot still used
    # ``v1beta``); both versions serve the same resources here.
    for version in ("/v1beta", "/v1"):
        routes += [
            Route(f"{version}/models", api(server.list_models), methods=["GET"]),
            Route(f"{version}/models/{{target}}", api(server.model_call), methods=["GET", "POST"]),
            Route(f"{version}/cachedContents", api(server.caches), methods=["GET", "POST"]),
            Route(
                f"{version}/cachedContents/{{cache_id}}",
                api(server.cache),
                methods=["GET", "PATCH", "DELETE"],
            ),
            Route(f"{version}/batches", api(server.list_batches), methods=["GET"]),
            Route(
                f"/upload{version}/files",
                server.endpoint(server.upload, raw_body=True),
                methods=["POST"],
            ),
            Route(f"{version}/files/{{target}}", api(server.file), methods=["GET", "DELETE"]),
            Route(f"/download{version}/files/{{target}}", api(server.file), methods=["GET"]),
            Route(
                f"{version}/batches/{{target}}",
                api(server.batch),
                methods=["GET", "POST", "DELETE"],
            ),
        ]
    routes += control_routes()
    quiet_uvicorn_drops()
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.config = server.config
    app.state.faults = server.faults
    app.state.requests = server.requests
    app.state.clock = server.clock
    app.state.caches = server.api.caches
    app.state.batches = server.batches
    app.state.files = server.files
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    # Google's front end answers unknown paths and methods alike with 404.
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "Method not found." if code == 405 else "Requested entity was not found."
    return error_response(not_found(message) if code in (404, 405) else for_status(code))


def _decode(raw: bytes) -> tuple[Any, bool]:
    if not raw.strip():
        return None, False
    try:
        return json.loads(raw), False
    except ValueError:
        return None, True


def _int_param(request: Request, name: str) -> int:
    text = request.query_params.get(name, "0") or "0"
    try:
        return int(text)
    except ValueError:
        raise invalid_argument(
            f"Invalid value at '{name}' (TYPE_INT32), \"{text}\"", field=name
        ) from None


def _paging(request: Request) -> tuple[int, int]:
    """Page size and offset of ``models.list``, whose tokens are plain offsets."""
    size = _int_param(request, "pageSize")
    if size < 0:
        raise invalid_argument("* page_size: must not be negative.", field="page_size")
    size = min(size or 50, 1000)
    token = request.query_params.get("pageToken", "")
    if token and not token.isdigit():
        raise invalid_argument("Invalid page token.", field="page_token")
    return size, int(token or 0)
