"""costroute's own Batch API (OpenAI's wire format, providers.md §2.2-2.10), executed
through costroute's queue (``proxy/deferral/userbatch.py``).

    POST /v1/batches                 ``input_file_id``, ``endpoint``, ``completion_window``
                                     (``"24h"``, or any costroute duration: an extension),
                                     ``metadata``, ``output_expires_after``
    GET  /v1/batches/{id}
    GET  /v1/batches                 ``after``, ``limit``
    POST /v1/batches/{id}/cancel

Creating a batch validates its file and queues every line before it answers; a file
that fails validation gives a batch in ``failed`` with ``errors.data`` naming line and
reason, and nothing is queued. Batches belong to the key that created them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.api.dispatch import services_of
from proxy.api.files import folder_of
from proxy.api.http_io import parse_json, read_body
from proxy.deferral import userbatch
from proxy.errors import BadRequest, NotFound
from proxy.ops.log_context import LogContext
from proxy.store import userfiles as store
from proxy.store.userfiles import UserBatch


async def create(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    caller = request.state.caller
    server = services.settings.server
    payload = parse_json(
        await read_body(request, server.max_body_bytes, float(server.client_timeout))
    )
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    endpoint = payload.get("endpoint")
    if endpoint not in userbatch.ENDPOINTS:
        raise BadRequest(
            f"Invalid 'endpoint': expected one of {', '.join(userbatch.ENDPOINTS)}.",
            param="endpoint",
        )
    window_text = payload.get("completion_window", "24h")
    try:
        window = userbatch.window_seconds(window_text)
    except ValueError as exc:
        raise BadRequest(str(exc), param="completion_window") from None
    metadata = payload.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > 16
        or not all(isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                   for k, v in metadata.items())
    ):  # fmt: skip
        raise BadRequest("metadata takes at most 16 string pairs.", param="metadata")
    output_ttl = _output_expiry(payload.get("output_expires_after"))
    now = services.clock.now()
    now_ms = int(now * 1000)
    input_id = payload.get("input_file_id")
    record = await store.get_file(services.db, str(input_id), caller.name, now_ms)
    if record is None:
        raise NotFound(f"No such File object: {input_id}", param="input_file_id")
    if record.purpose != "batch":
        raise BadRequest("The input file's purpose must be 'batch'.", param="input_file_id")
    path = folder_of(services) / record.id
    count, errors = await asyncio.to_thread(
        userbatch.validate, path, str(endpoint), services.settings
    )
    batch = UserBatch(
        id=userbatch.new_user_batch_id(),
        key_name=caller.name,
        endpoint=str(endpoint),
        model=None,
        input_file_id=record.id,
        completion_window=str(window_text),
        status="failed" if errors else "in_progress",
        created_ms=now_ms,
        expires_ms=now_ms + window * 1000,
        times={"validating": now_ms, ("failed" if errors else "in_progress"): now_ms},
        output_file_id=None,
        error_file_id=None,
        errors=[error.as_dict() for error in errors] or None,
        metadata=metadata,
        output_expires_s=output_ttl,
        total=0 if errors else count,
        usage=None,
    )
    if errors:
        await store.create_batch(services.db, batch)
    else:
        chunks = userbatch.tickets_of(path, batch, services.settings, now=now)
        await store.queue_lines(services.db, batch, chunks)
    return _batch_response(batch, {}, ctx)


def _output_expiry(value: Any) -> int | None:
    if value is None:
        return None
    seconds = value.get("seconds") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or value.get("anchor") != "created_at"
        or not isinstance(seconds, int)
        or not 3600 <= seconds <= 2_592_000
    ):
        raise BadRequest(
            "output_expires_after takes anchor 'created_at' and 3600 to 2592000 seconds.",
            param="output_expires_after",
        )
    return seconds


async def _owned(request: Request) -> UserBatch:
    services = services_of(request)
    batch_id = request.path_params["batch_id"]
    batch = await store.get_batch(services.db, batch_id, request.state.caller.name)
    if batch is None:
        raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
    return await userbatch.refresh(services, batch, folder_of(services))


async def retrieve(request: Request, ctx: LogContext) -> Response:
    batch = await _owned(request)
    counts = await store.line_counts(services_of(request).db, batch.id)
    return _batch_response(batch, counts, ctx)


async def cancel(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    batch = await _owned(request)
    now_ms = int(services.clock.now() * 1000)
    if batch.status in ("in_progress", "validating"):
        await store.move_batch(services.db, batch.id, (batch.status,), "cancelling", now_ms)
        # No line starts from now on; finished lines stay in the output file.
        await userbatch.cancel_unfinished(services, batch, "batch_cancelled", now_ms)
        batch = await store.get_batch(services.db, batch.id, batch.key_name) or batch
    elif batch.status not in ("cancelling", "cancelled"):
        raise BadRequest(f"Cannot cancel a batch with status '{batch.status}'.", param="batch_id")
    counts = await store.line_counts(services.db, batch.id)
    # OpenAI answers with the batch in ``cancelling``; the next read finishes the cancel.
    return _batch_response(batch, counts, ctx)


async def list_batches(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    limit = request.query_params.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise BadRequest("Invalid 'limit': expected 1 to 100.", param="limit")
    batches = await store.list_batches(
        services.db, request.state.caller.name, limit=int(limit) + 1,
        after=request.query_params.get("after"),
    )  # fmt: skip
    page = batches[: int(limit)]
    data = []
    for batch in page:
        fresh = await userbatch.refresh(services, batch, folder_of(services))
        data.append(userbatch.batch_object(fresh, await store.line_counts(services.db, fresh.id)))
    return JSONResponse({
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(batches) > len(page),
    })  # fmt: skip


def _batch_response(batch: UserBatch, counts: dict[str, int], ctx: LogContext) -> Response:
    body = orjson.dumps(userbatch.batch_object(batch, counts))
    return Response(body, media_type="application/json", headers={"x-request-id": ctx.request_id})
