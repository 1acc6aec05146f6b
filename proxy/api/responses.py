"""OpenAI's Responses API through costroute (providers-2.md §1).

    POST   /v1/responses                    real time (plain, streamed, OpenAI background
                                            mode) or deferred with a latency tolerance
    GET    /v1/responses/{id}               also ``?stream=true&starting_after=N``
    DELETE /v1/responses/{id}
    POST   /v1/responses/{id}/cancel
    GET    /v1/responses/{id}/input_items

Providers without a Responses API (Gemini, DeepSeek, ...) are bridged through their chat
translation (``adapters/responses_bridge.py``): the reply is built as a ``response`` and a
stream as the Responses event sequence; what cannot be bridged is a 400 naming the field.
A bridged response is not stored by any provider, so its id has no routes.

Real time for providers that speak the API natively (``Capabilities.responses``): the
request goes through untouched but for the upstream model, and the provider's objects and
named SSE events come back as they are. Each id that the provider keeps is remembered
with its key and provider (``store/responses.py``), so the id's routes reach the right
provider and any other key gets 404.

Deferred (``X-Latency-Tolerance`` or the key's ``default_tolerance``): the request is a
ticket like a deferred chat call, and the caller gets what OpenAI's background mode gives,
a ``response`` object with ``status: "queued"``, whose id is ``resp_`` + the ticket id.
``GET`` shows the ticket as a response (queued -> in_progress -> completed with the
provider's output and usage, or failed, or cancelled); ``cancel`` cancels the ticket even
inside a provider batch (the late result is then discarded, but may still be billed).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from adapters import responses_bridge as bridge
from adapters.base import Reply, ResponsesAdapter, ResponsesStreamReply, StreamReply
from adapters.errors import AdapterError
from adapters.registry import capabilities
from proxy.api.dispatch import complete, flex, open_stream, plan_request, services_of
from proxy.api.http_io import parse_json, read_body
from proxy.context import Caller, Services
from proxy.deferral.queue import TICKET_HEADER, deferral_of
from proxy.errors import BadRequest, NotFound, UpstreamFailure, envelope
from proxy.lanes.planner import Decision, Lane
from proxy.ops import accounting
from proxy.ops.log_context import LogContext
from proxy.store import responses as owners
from proxy.store import tickets as store
from proxy.store.jobs import Outcome, Ticket, TicketStatus

ENDPOINT = "/v1/responses"
CHAT = "/v1/chat/completions"
# Deferred responses are tickets: their response id is this prefix + the ticket id.
DEFERRED_PREFIX = "resp_"
_TICKET_PREFIX = "tkt_"
_STATUS = {
    TicketStatus.QUEUED: "queued",
    TicketStatus.SUBMITTED: "in_progress",
    TicketStatus.REALTIME: "in_progress",
    TicketStatus.FAILED: "failed",
    TicketStatus.CANCELLED: "cancelled",
}


async def create_response(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    caller: Caller = request.state.caller
    server = services.settings.server
    raw = await read_body(request, server.max_body_bytes, float(server.client_timeout))
    payload = parse_json(raw)
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        # OpenAI can take the model from a stored prompt; costroute routes by model.
        raise BadRequest("Missing required parameter: 'model'.", param="model")
    ctx.model = model
    ctx.stream = payload.get("stream") is True
    config = services.settings.models.get(model)
    kind = "" if config is None else services.settings.providers[config.provider].type
    native = capabilities(kind).responses
    # A bridged request is a chat request to its provider, planned as one (flex, batch).
    endpoint = ENDPOINT if native else CHAT
    decision = plan_request(services, ctx, request, caller, model, endpoint, stream=ctx.stream)
    adapter = services.chat[decision.provider]
    if not native:
        return await _bridged(services, ctx, request, caller, payload, decision, kind)
    if not isinstance(adapter, ResponsesAdapter):
        raise BadRequest(f"The provider of `{model}` has no Responses API.", param="model")
    if decision.deferred:
        return await _defer(services, ctx, request, caller, payload, decision, ENDPOINT)
    body: dict[str, Any] = payload
    body["model"] = decision.upstream_model
    keeps = body.get("store") is not False or body.get("background") is True
    if ctx.stream:
        return await _stream(services, ctx, decision, adapter, body, caller, keeps)

    async def send(sent: dict[str, Any]) -> Reply:
        reply = await adapter.respond(sent, headers={})
        if keeps and reply.parsed is not None:
            await _remember(services, reply.parsed.get("id"), caller, decision.provider)
        return reply

    if decision.lane is Lane.FLEX:
        return await flex(services, ctx, decision, send, body)
    return await complete(services, ctx, decision, lambda: send(body))


async def _bridged(
    services: Services,
    ctx: LogContext,
    request: Request,
    caller: Caller,
    payload: dict[str, Any],
    decision: Decision,
    kind: str,
) -> Response:
    """A provider without a Responses API: the request as chat, the reply as a response."""
    try:
        chat_body = bridge.to_chat(payload, provider=kind)
    except AdapterError as error:
        raise UpstreamFailure(error) from None
    if decision.deferred:
        return await _defer(services, ctx, request, caller, chat_body, decision, CHAT)
    chat_body["model"] = decision.upstream_model
    adapter = services.chat[decision.provider]
    response_id = bridge.new_id("resp_")
    if ctx.stream:
        started = time.perf_counter()
        stream = await open_stream(
            services, ctx, lambda: adapter.open_stream(chat_body, headers={})
        )
        created = int(services.clock.now())
        bridged = BridgedStream(stream, payload, response_id=response_id, created=created)
        return _relay(services, ctx, decision, bridged, started, None)

    async def call() -> Reply:
        reply = await adapter.complete(chat_body, headers={})
        completion = reply.parsed if reply.parsed is not None else orjson.loads(reply.body)
        response = bridge.to_response(completion, payload, response_id=response_id)
        return Reply(orjson.dumps(response), reply.headers, parsed=response, notes=reply.notes)

    return await complete(services, ctx, decision, call)


class BridgedStream:
    """A chat stream seen as a Responses stream (``ResponsesStreamReply``)."""

    def __init__(
        self, stream: StreamReply, request: dict[str, Any], *, response_id: str, created: int
    ) -> None:
        self._stream = stream
        self._bridge = bridge.StreamBridge(request, response_id=response_id, created=created)
        self.headers = stream.headers
        self.notes = stream.notes

    async def events(self) -> AsyncIterator[tuple[dict[str, Any], bytes]]:
        for event in self._bridge.start():
            yield event, _frame(event)
        async for raw in self._stream.events():
            payload = raw[len(b"data: ") :].strip()
            if payload == b"[DONE]":
                break
            chunk = orjson.loads(payload)
            if isinstance(chunk, dict) and "error" in chunk:
                # An adapter's in-band failure: the production shape of a Responses error.
                error = {"type": "error", "error": chunk["error"]}
                yield error, _frame(error)
                return
            for event in self._bridge.feed(chunk):
                yield event, _frame(event)
        for event in self._bridge.finish():
            yield event, _frame(event)

    async def aclose(self) -> None:
        await self._stream.aclose()


def _frame(event: dict[str, Any]) -> bytes:
    kind = str(event.get("type", ""))
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def _remember(services: Services, response_id: Any, caller: Caller, provider: str) -> None:
    if isinstance(response_id, str) and response_id:
        now_ms = int(services.clock.now() * 1000)
        await owners.remember(
            services.db, response_id, key_name=caller.name, provider=provider, created_ms=now_ms
        )


# --- streams -----------------------------------------------------------------------------


async def _stream(
    services: Services,
    ctx: LogContext,
    decision: Decision,
    adapter: ResponsesAdapter,
    body: dict[str, Any],
    caller: Caller,
    keeps: bool,
) -> Response:
    started = time.perf_counter()
    stream = await open_stream(
        services, ctx, lambda: adapter.open_response_stream(body, headers={})
    )
    remember = caller if keeps else None
    return _relay(services, ctx, decision, stream, started, remember)


def _relay(
    services: Services,
    ctx: LogContext,
    decision: Decision,
    stream: ResponsesStreamReply,
    started: float,
    remember: Caller | None,
) -> StreamingResponse:
    lane = accounting.lane_of(decision, stream.notes)
    headers = {
        **stream.headers,
        "x-costroute-lane": lane,
        "x-request-id": ctx.request_id,
        "cache-control": "no-cache",
    }
    events = _events(services, ctx, decision, stream, started, remember, lane)
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


async def _events(
    services: Services,
    ctx: LogContext,
    decision: Decision,
    stream: ResponsesStreamReply,
    started: float,
    remember: Caller | None,
    lane: str,
) -> AsyncIterator[bytes]:
    """Named events as they come. Usage, cost and cached tokens are read from the final
    ``response`` (completed, incomplete or failed); the id from ``response.created``."""
    final: dict[str, Any] | None = None
    status, code = 200, None
    try:
        async for event, framed in stream.events():
            kind = event.get("type")
            response = event.get("response")
            if kind == "response.created" and remember is not None and isinstance(response, dict):
                await _remember(services, response.get("id"), remember, decision.provider)
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                final = response if isinstance(response, dict) else None
            elif kind == "error":
                status, code = 502, _error_code(event)
            yield framed
    except AdapterError as error:
        status, code = error.status, error.code
        # The production shape of an in-band error (providers-2.md §1.5): the SDK raises.
        yield b"event: error\ndata: " + envelope(error.error_object()) + b"\n\n"
    except BaseException:
        status, code = 499, "client_closed_request"
        raise
    finally:
        ctx.upstream_ms = (time.perf_counter() - started) * 1000.0
        await stream.aclose()
        if status == 200:
            accounting.record_success(
                services, ctx, decision, lane=lane, payload=final, notes=stream.notes
            )
        else:
            ctx.lane = lane
            accounting.record_failure(services, ctx, status=status, code=code)


def _error_code(event: dict[str, Any]) -> str | None:
    inner = event.get("error")
    found = inner.get("code") if isinstance(inner, dict) else event.get("code")
    return found if isinstance(found, str) else None


# --- deferral ------------------------------------------------------------------------------


async def _defer(
    services: Services,
    ctx: LogContext,
    request: Request,
    caller: Caller,
    payload: dict[str, Any],
    decision: Decision,
    endpoint: str,
) -> Response:
    """Commit the ticket (a chat ticket for a bridged provider) and answer as OpenAI's
    background mode does."""
    # The ticket is the background job: the provider's batch lines take no background flag.
    body = {k: v for k, v in payload.items() if k != "background"}
    ticket, replayed = await deferral_of(services).commit(
        services,
        caller,
        endpoint=endpoint,
        model=str(payload["model"]),
        body=body,
        decision=decision,
        headers=request.headers,
        request_id=ctx.request_id,
    )
    headers = {
        TICKET_HEADER: ticket.id,
        "x-costroute-lane": ticket.lane,
        "x-request-id": ctx.request_id,
    }
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return _json(deferred_object(ticket, body), headers)


def deferred_object(ticket: Ticket, request: dict[str, Any]) -> dict[str, Any]:
    """The ticket as a background ``response`` object: the provider's answer once the
    ticket completed (with the deferred id and ``background: true``), a skeleton from the
    request before that."""
    response_id = DEFERRED_PREFIX + ticket.id
    if ticket.status is TicketStatus.COMPLETED and ticket.result is not None:
        done = orjson.loads(ticket.result)
        if isinstance(done, dict) and ticket.endpoint == CHAT:
            done = bridge.to_response(done, request, response_id=response_id)
        if isinstance(done, dict):
            done["id"] = response_id
            done["background"] = True
            return done
    text = request.get("text")
    return {
        "id": response_id,
        "object": "response",
        "created_at": ticket.created_ms // 1000,
        "status": _STATUS.get(ticket.status, "failed"),
        "background": True,
        "completed_at": None,
        "error": _error_of(ticket),
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": ticket.model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": request.get("reasoning"),
        "service_tier": request.get("service_tier", "auto"),
        "temperature": request.get("temperature", 1.0),
        "text": text if isinstance(text, dict) else {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": None,
        "metadata": request.get("metadata") or {},
    }


def _error_of(ticket: Ticket) -> dict[str, Any] | None:
    if ticket.status is not TicketStatus.FAILED:
        return None
    error = ticket.error or {}
    code = error.get("code") if isinstance(error.get("code"), str) else "server_error"
    return {"code": code, "message": str(error.get("message") or "The request failed.")}


# --- one response's routes --------------------------------------------------------------


async def retrieve_response(request: Request, ctx: LogContext) -> Response:
    response_id = request.path_params["response_id"]
    ticket = await _deferred(request, response_id)
    if ticket is not None:
        if request.query_params.get("stream") == "true":
            raise BadRequest(
                "A deferred response has no event stream; retrieve it without stream=true.",
                param="stream",
            )
        return await _ticket_view(request, ticket)
    return await _forward(request, ctx, "GET", response_id, "")


async def delete_response(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    caller: Caller = request.state.caller
    response_id = request.path_params["response_id"]
    ticket = await _deferred(request, response_id)
    if ticket is not None:
        if not ticket.status.final:
            await _cancel_ticket(services, ticket, caller)
        now_ms = int(services.clock.now() * 1000)
        await owners.mark_deleted(services.db, response_id, key_name=caller.name, now_ms=now_ms)
        return _json({"id": response_id, "object": "response", "deleted": True})
    reply = await _forward(request, ctx, "DELETE", response_id, "")
    await owners.forget(services.db, response_id)
    return reply


async def cancel_response(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    response_id = request.path_params["response_id"]
    ticket = await _deferred(request, response_id)
    if ticket is not None:
        if not ticket.status.final:
            await _cancel_ticket(services, ticket, request.state.caller)
        # Cancelling an ended response returns it as it is (OpenAI: idempotent).
        return await _ticket_view(request, ticket)
    return await _forward(request, ctx, "POST", response_id, "/cancel")


async def list_input_items(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    response_id = request.path_params["response_id"]
    ticket = await _deferred(request, response_id)
    if ticket is None:
        return await _forward(request, ctx, "GET", response_id, "/input_items")
    body = await store.body_owned(services.db, ticket.id, request.state.caller.name)
    request_body = orjson.loads(body) if body else {}
    if ticket.endpoint == CHAT:  # a bridged request was stored as chat messages
        request_body = {"input": _items_of(request_body.get("messages") or [])}
    return _json(input_item_list(request_body, request.query_params))


def _items_of(messages: list[Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") == "system":
            continue  # instructions are not input items
        if message.get("role") == "tool":
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id"),
                          "output": message.get("content")})  # fmt: skip
        elif message.get("tool_calls"):
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call.get("id"),
                              "name": function.get("name"),
                              "arguments": function.get("arguments")})  # fmt: skip
        else:
            items.append({"type": "message", "role": message.get("role"),
                          "content": message.get("content")})  # fmt: skip
    return items


def input_item_list(body: dict[str, Any], query: Any) -> dict[str, Any]:
    """The input items of a deferred request, paged as OpenAI pages them."""
    given = body.get("input")
    items = (
        [{"type": "message", "role": "user", "content": given}]
        if isinstance(given, str)
        else [item for item in given or [] if isinstance(item, dict)]
    )
    listed = [
        {**item, "type": item.get("type", "message"), "id": item.get("id") or f"msg_{index:08d}"}
        for index, item in enumerate(items)
    ]
    limit = query.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise BadRequest("Invalid 'limit': expected an integer from 1 to 100.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    if order == "desc":
        listed.reverse()
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in listed]
        listed = listed[ids.index(after) + 1 :] if after in ids else []
    page = listed[: int(limit)]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(listed) > len(page),
    }


async def _deferred(request: Request, response_id: str) -> Ticket | None:
    """The caller's ticket behind a deferred response id; 404 for a deleted one or one
    of another key. None when the id is not a deferred one."""
    if not response_id.startswith(DEFERRED_PREFIX + _TICKET_PREFIX):
        return None
    services = services_of(request)
    ticket_id = response_id[len(DEFERRED_PREFIX) :]
    ticket = await store.get_owned(services.db, ticket_id, request.state.caller.name)
    if ticket is None or await owners.is_deleted(services.db, response_id):
        raise _not_found(response_id)
    return ticket


async def _ticket_view(request: Request, ticket: Ticket) -> Response:
    services = services_of(request)
    fresh = await store.get_owned(services.db, ticket.id, ticket.key_name) or ticket
    body = await store.body_owned(services.db, ticket.id, ticket.key_name)
    request_body = orjson.loads(body) if body else {}
    return _json(deferred_object(fresh, request_body), {TICKET_HEADER: ticket.id})


async def _cancel_ticket(services: Services, ticket: Ticket, caller: Caller) -> None:
    from proxy.store import route_rows

    now_ms = int(services.clock.now() * 1000)
    cancelled = Outcome(ticket.id, TicketStatus.CANCELLED, detail="cancelled by caller")
    await store.cancel(
        services.db,
        ticket.id,
        caller.name,
        now_ms,
        route=lambda before: route_rows.final(before, cancelled, now_ms=now_ms),
        started_too=True,
    )


async def _forward(
    request: Request, ctx: LogContext, method: str, response_id: str, suffix: str
) -> Response:
    """A passed-through response's route, sent to the provider that holds it."""
    services = services_of(request)
    provider = await owners.provider_of(
        services.db, response_id, key_name=request.state.caller.name
    )
    adapter = None if provider is None else services.chat.get(provider)
    if provider is None or not isinstance(adapter, ResponsesAdapter):
        raise _not_found(response_id)
    ctx.provider = provider
    query = request.url.query
    path = f"/responses/{quote(response_id, safe='')}{suffix}" + (f"?{query}" if query else "")
    stream = method == "GET" and not suffix and request.query_params.get("stream") == "true"
    try:
        reply = await adapter.resource(method, path, stream=stream)
    except AdapterError as error:
        raise UpstreamFailure(error) from None
    if isinstance(reply, Reply):
        headers = {**reply.headers, "x-request-id": ctx.request_id}
        return Response(reply.body, media_type="application/json", headers=headers)
    headers = {**reply.headers, "x-request-id": ctx.request_id, "cache-control": "no-cache"}
    return StreamingResponse(_passthrough(reply), media_type="text/event-stream", headers=headers)


async def _passthrough(stream: ResponsesStreamReply) -> AsyncIterator[bytes]:
    try:
        async for _, framed in stream.events():
            yield framed
    except AdapterError as error:
        yield b"event: error\ndata: " + envelope(error.error_object()) + b"\n\n"
    finally:
        await stream.aclose()


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")


def _json(payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)
