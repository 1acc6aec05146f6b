"""costroute's own Batch API: a caller's input file becomes tickets; their results become
OpenAI's output and error files.

Validation is OpenAI's (providers.md §2.6, §2.8): each line JSON, a unique ``custom_id``,
``method`` POST, ``url`` equal to the batch's endpoint, a ``body`` whose ``model`` is
configured here. One bad line fails the batch, with ``errors.data`` naming line and
reason, and nothing is queued. Unlike OpenAI, lines may mix models and providers.

Each line is an ordinary ticket owned by the caller, with the completion window as its
deadline, planned like any deferred request: a provider batch, an off-peak window, or,
when its model has no cheaper lane before the deadline, sent directly at once (a queued
ticket of lane ``realtime``, released by the scheduler). Retryable line failures are
retried by the queue up to ``batch.max_attempts``. The batch's own state moves when it is
read (``refresh``): ``in_progress`` until every line ended, then ``finalizing`` while the
output and error files are written, then ``completed``; past the window, unfinished lines
are cancelled and end as ``batch_expired`` (status ``expired``); a cancel ends the
unfinished lines as ``batch_cancelled`` (status ``cancelled``), keeping finished ones.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from adapters import responses_bridge as bridge
from adapters.errors import AdapterError
from adapters.registry import capabilities
from proxy.context import Services
from proxy.deferral.batchfiles import upstream_body
from proxy.durations import parse_duration
from proxy.lanes.planner import Lane, plan
from proxy.settings import Settings
from proxy.store import route_rows
from proxy.store import tickets as tstore
from proxy.store import userfiles as store
from proxy.store.jobs import NewTicket, Outcome, TicketStatus, new_ticket_id
from proxy.store.userfiles import FileRecord, UserBatch

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses")
CHAT = "/v1/chat/completions"
MAX_LINES = 50_000
# Files with purpose "batch" (and batch outputs) expire after 30 days unless told otherwise.
BATCH_FILE_TTL_S = 30 * 24 * 3600
_CHUNK = 5_000


def new_file_id() -> str:
    return "file-" + secrets.token_urlsafe(18)


def new_user_batch_id() -> str:
    return "batch_" + secrets.token_urlsafe(18)


def window_seconds(value: Any) -> int:
    """``"24h"`` as OpenAI takes it, or any costroute duration (``"2h"``, ``"3d"``): a
    documented extension. Raises ValueError with the reason."""
    if not isinstance(value, str):
        raise ValueError("completion_window must be a string such as '24h'")
    seconds = parse_duration(value)
    if not 60 <= seconds <= 30 * 24 * 3600:
        raise ValueError("completion_window must be between 1m and 30d")
    return seconds


# --- validation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    code: str
    message: str
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param,
                "line": self.line}  # fmt: skip


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, raw


def validate(path: Path, endpoint: str, settings: Settings) -> tuple[int, list[LineError]]:
    """(line count, errors): one streamed pass that keeps only the ``custom_id``s."""
    seen: set[str] = set()
    errors: list[LineError] = []
    count = 0
    for number, raw in _lines(path):
        count += 1
        error = _check(number, raw, endpoint, settings, seen)
        if error is not None:
            errors.append(error)
            if len(errors) >= 100:
                break
    if count == 0 and not errors:
        errors.append(LineError(0, "empty_file", "The input file has no requests."))
    if count > MAX_LINES:
        errors.append(LineError(0, "too_many_tasks",
                                f"A batch may hold at most {MAX_LINES} requests."))  # fmt: skip
    return count, errors


def _check(
    number: int, raw: bytes, endpoint: str, settings: Settings, seen: set[str]
) -> LineError | None:
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return LineError(number, "invalid_json_line", "This line is not parseable as valid JSON.")
    if not isinstance(line, dict):
        return LineError(number, "invalid_json_line", "Each line must be a JSON object.")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(number, "missing_custom_id", "The line has no custom_id.", "custom_id")
    if custom_id in seen:
        return LineError(number, "duplicate_custom_id",
                         f"The custom_id '{custom_id}' is used by an earlier line.",
                         "custom_id")  # fmt: skip
    seen.add(custom_id)
    if line.get("method") != "POST":
        return LineError(number, "invalid_method", "The method must be 'POST'.", "method")
    if line.get("url") != endpoint:
        return LineError(number, "url_mismatch",
                         f"The url must be the batch's endpoint '{endpoint}'.", "url")  # fmt: skip
    body = line.get("body")
    if not isinstance(body, dict):
        return LineError(number, "missing_body", "The line has no JSON object body.", "body")
    model = body.get("model")
    if not isinstance(model, str) or model not in settings.models:
        return LineError(number, "model_not_found",
                         f"The model '{model}' is not configured on this proxy.",
                         "body.model")  # fmt: skip
    if body.get("stream"):
        return LineError(number, "invalid_request",
                         "Streaming is not supported in the Batch API.", "body.stream")  # fmt: skip
    return None


# --- queueing ------------------------------------------------------------------------------


def tickets_of(
    path: Path, batch: UserBatch, settings: Settings, *, now: float
) -> Iterator[list[tuple[int, str, NewTicket]]]:
    """The validated file's lines as tickets, in chunks (memory stays bounded)."""
    window = batch.expires_ms - batch.created_ms
    chunk: list[tuple[int, str, NewTicket]] = []
    for number, raw in _lines(path):
        line = orjson.loads(raw)
        chunk.append((number, line["custom_id"], _ticket(line["body"], batch, settings, now,
                                                          window, number)))  # fmt: skip
        if len(chunk) >= _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _ticket(
    body: dict[str, Any], batch: UserBatch, settings: Settings, now: float, window: int, n: int
) -> NewTicket:
    model = str(body["model"])
    endpoint = batch.endpoint
    kind = settings.providers[settings.models[model].provider].type
    if endpoint == "/v1/responses" and not capabilities(kind).responses:
        # A provider without a Responses API gets the line as chat (bridged back at the end).
        try:
            body = bridge.to_chat(body, provider=kind)
        except AdapterError:
            body = {"model": model, "messages": []}  # fails at the provider, line by line
        endpoint = CHAT
    decision = plan(model=model, endpoint=endpoint, tolerance=window // 1000,
                    settings=settings, now=now)  # fmt: skip
    lane, not_before, reason = decision.lane.value, decision.not_before, decision.reason
    if decision.lane in (Lane.REALTIME, Lane.FLEX):
        # No cheaper lane before the deadline: send it directly now.
        lane, not_before = Lane.REALTIME.value, now
        reason = f"batch line: {reason}"
    upstream = upstream_body(body, decision.upstream_model)
    given = body.get("input")
    units = len(given) if endpoint.endswith("/embeddings") and isinstance(given, list) else 1
    return NewTicket(
        id=new_ticket_id(),
        key_name=batch.key_name,
        request_id=f"{batch.id}#{n}",
        idempotency_key=None,
        endpoint=endpoint,
        model=model,
        provider=decision.provider,
        upstream_model=decision.upstream_model,
        lane=lane,
        reason=reason,
        body=upstream,
        est_tokens=len(upstream) // 4,
        created_ms=int(now * 1000),
        deadline_ms=batch.expires_ms,
        not_before_ms=int((not_before or 0) * 1000),
        callback_url=None,
        units=max(1, units),
    )


# --- the batch object ----------------------------------------------------------------------


def batch_object(batch: UserBatch, counts: dict[str, int]) -> dict[str, Any]:
    times = batch.times

    def at(status: str) -> int | None:
        value = times.get(status)
        return None if value is None else int(value) // 1000

    done = counts.get("completed", 0)
    failed = counts.get("failed", 0) + (counts.get("cancelled", 0) if batch.status in
                                        ("completed", "expired", "cancelled") else 0)  # fmt: skip
    errors = None
    if batch.errors:
        errors = {"object": "list", "data": batch.errors}
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": batch.created_ms // 1000,
        "in_progress_at": at("in_progress"),
        "expires_at": batch.expires_ms // 1000,
        "finalizing_at": at("finalizing"),
        "completed_at": at("completed"),
        "failed_at": at("failed"),
        "expired_at": at("expired"),
        "cancelling_at": at("cancelling"),
        "cancelled_at": at("cancelled"),
        "request_counts": {"total": batch.total, "completed": done, "failed": failed},
        "usage": batch.usage,
        "metadata": batch.metadata,
    }


# --- refresh: move the batch along as its lines end ------------------------------------------


async def refresh(services: Services, batch: UserBatch, folder: Path) -> UserBatch:
    """The batch as it stands now, finalized if its lines all ended, expired past its
    window, or cancelled once a cancel found every line ended."""
    if batch.status not in ("in_progress", "cancelling"):
        return batch
    now_ms = int(services.clock.now() * 1000)
    end = None
    if batch.status == "cancelling":
        await cancel_unfinished(services, batch, "batch_cancelled", now_ms)
        end = "cancelled"
    elif now_ms >= batch.expires_ms:
        await cancel_unfinished(services, batch, "batch_expired", now_ms)
        end = "expired"
    elif await store.unfinished_tickets(services.db, batch.id):
        return batch
    if not await store.move_batch(services.db, batch.id, (batch.status,), "finalizing", now_ms):
        return await _reread(services, batch)
    code = "batch_cancelled" if end == "cancelled" else "batch_expired"
    output, error, usage = await _write_results(services, batch, folder, code, now_ms)
    await store.move_batch(
        services.db, batch.id, ("finalizing",), end or "completed", now_ms,
        output_file_id=output, error_file_id=error, usage=usage,
    )  # fmt: skip
    return await _reread(services, batch)


async def _reread(services: Services, batch: UserBatch) -> UserBatch:
    return await store.get_batch(services.db, batch.id, batch.key_name) or batch


async def cancel_unfinished(services: Services, batch: UserBatch, code: str, now_ms: int) -> None:
    """End every unfinished line (queued, or inside a provider batch: its late result
    is then discarded)."""
    detail = "batch expired" if code == "batch_expired" else "batch cancelled"
    cancelled = Outcome("", TicketStatus.CANCELLED, detail=detail)
    for ticket_id in await store.unfinished_tickets(services.db, batch.id):
        await tstore.cancel(
            services.db, ticket_id, batch.key_name, now_ms,
            route=lambda before: route_rows.final(
                before, replace(cancelled, ticket_id=before.id), now_ms=now_ms
            ),
            started_too=True,
        )  # fmt: skip


async def _write_results(
    services: Services, batch: UserBatch, folder: Path, code: str, now_ms: int
) -> tuple[str | None, str | None, dict[str, Any]]:
    """Stream the output and error files in line order, a page of lines at a time; the
    file writes run off the event loop."""
    paths = {"output": folder / new_file_id(), "error": folder / new_file_id()}
    totals = {"input": 0, "output": 0}
    written = {"output": 0, "error": 0}
    await asyncio.to_thread(_create, list(paths.values()))
    after = 0
    while True:
        page = await store.line_outcomes(services.db, batch.id, after_line=after, limit=2000)
        if not page:
            break
        chunks: dict[str, list[bytes]] = {"output": [], "error": []}
        for line, custom_id, ticket_id, request_id, status, result, error, p, c in page:
            after = line
            kind = "output" if status == "completed" else "error"
            chunks[kind].append(_result_line(batch, custom_id, ticket_id, request_id, status,
                                             result, error, code))  # fmt: skip
            if kind == "output":
                totals["input"] += p or 0
                totals["output"] += c or 0
        for kind, data in chunks.items():
            written[kind] += len(data)
            if data:
                await asyncio.to_thread(_append, paths[kind], b"".join(data))
    ttl = batch.output_expires_s or BATCH_FILE_TTL_S
    ids: list[str | None] = []
    for kind, path in paths.items():
        size = await asyncio.to_thread(_keep_or_drop, path, bool(written[kind]))
        if size is None:
            ids.append(None)
            continue
        await store.add_file(services.db, FileRecord(
            path.name, batch.key_name, "batch_output", f"{batch.id}_{kind}.jsonl",
            size, now_ms, now_ms + ttl * 1000,
        ))  # fmt: skip
        ids.append(path.name)
    usage = {
        "input_tokens": totals["input"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": totals["output"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": totals["input"] + totals["output"],
    }
    return ids[0], ids[1], usage


def _create(paths: list[Path]) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def _keep_or_drop(path: Path, keep: bool) -> int | None:
    if keep:
        return path.stat().st_size
    path.unlink()
    return None


def _result_line(
    batch: UserBatch,
    custom_id: str,
    ticket_id: str,
    request_id: str,
    status: str,
    result: bytes | None,
    error: str | None,
    code: str,
) -> bytes:
    line_id = "batch_req_" + ticket_id.removeprefix("tkt_")
    if status == "completed" and result is not None:
        body: Any = orjson.Fragment(result)
        if batch.endpoint == "/v1/responses" and b'"chat.completion"' in result:
            body = bridge.to_response(orjson.loads(result), {}, response_id=bridge.new_id("resp_"))
        response = {"status_code": 200, "request_id": request_id, "body": body}
        return orjson.dumps({"id": line_id, "custom_id": custom_id, "response": response,
                             "error": None}) + b"\n"  # fmt: skip
    if status == "failed":
        parsed = orjson.loads(error) if error else {}
        inner = parsed if isinstance(parsed, dict) else {}
        response = {"status_code": _status_of(inner), "request_id": request_id,
                    "body": {"error": inner}}  # fmt: skip
        return orjson.dumps({"id": line_id, "custom_id": custom_id, "response": response,
                             "error": None}) + b"\n"  # fmt: skip
    message = (
        "This request could not be executed before the completion window expired."
        if code == "batch_expired"
        else "This request was cancelled before it was executed."
    )
    return orjson.dumps({"id": line_id, "custom_id": custom_id, "response": None,
                         "error": {"code": code, "message": message}}) + b"\n"  # fmt: skip


def _status_of(error: dict[str, Any]) -> int:
    """The line's HTTP status, from its error (tickets keep the error object only)."""
    kind, code = str(error.get("type") or ""), str(error.get("code") or "")
    if kind in ("rate_limit_exceeded", "tokens", "requests") or code == "rate_limit_exceeded":
        return 429
    if kind == "invalid_request_error":
        return 404 if code == "model_not_found" else 400
    if kind in ("authentication_error",):
        return 401
    return 500
