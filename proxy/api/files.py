"""costroute's own Files API (OpenAI's wire format, providers.md §2.1), for its Batch API.

    POST   /v1/files                 multipart: ``file``, ``purpose``, ``expires_after``
    GET    /v1/files                 ``purpose``, ``limit``, ``order``, ``after``
    GET    /v1/files/{id}
    GET    /v1/files/{id}/content    the bytes, streamed from disk
    DELETE /v1/files/{id}

Uploads are parsed by Starlette's multipart parser, which spools a file part to a
temporary file past 1 MB, then moved under ``[files] dir``: a file is never whole in
memory. A body over ``[files] max_bytes`` is refused with 413 before it is read when its
length is declared, and as soon as it is counted past the limit otherwise. Files belong to
the key that uploaded them; any other key gets 404.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from proxy.api.dispatch import services_of
from proxy.context import Services
from proxy.deferral.userbatch import BATCH_FILE_TTL_S, new_file_id
from proxy.errors import BadRequest, NotFound, PayloadTooLarge
from proxy.ops.log_context import LogContext
from proxy.store import userfiles as store
from proxy.store.userfiles import FileRecord

PURPOSES = ("batch", "assistants", "fine-tune", "vision", "user_data", "evals")


def folder_of(services: Services) -> Path:
    return services.settings.files.folder(services.settings.store)


def file_object(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": record.created_ms // 1000,
        "expires_at": None if record.expires_ms is None else record.expires_ms // 1000,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "status_details": None,
    }


async def upload(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    limit = services.settings.files.max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise PayloadTooLarge(f"The file is larger than this proxy's limit of {limit} bytes.")
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise BadRequest("Send the file as multipart/form-data with 'file' and 'purpose'.")
    async with request.form(max_files=1, max_fields=16) as form:
        upload_file = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload_file, UploadFile):
            raise BadRequest("Missing required parameter: 'file'.", param="file")
        if not isinstance(purpose, str) or purpose not in PURPOSES:
            raise BadRequest(
                f"Invalid 'purpose': expected one of {', '.join(PURPOSES)}.", param="purpose"
            )
        filename = upload_file.filename or "upload"
        if purpose == "batch" and not filename.endswith(".jsonl"):
            raise BadRequest("Invalid file format for Batch API. Must be .jsonl", param="file")
        size = upload_file.size or 0
        if size > limit:
            raise PayloadTooLarge(f"The file is larger than this proxy's limit of {limit} bytes.")
        ttl = _expiry(form, purpose)
        file_id = new_file_id()
        target = folder_of(services) / file_id
        size = await asyncio.to_thread(_save, upload_file, target)
    now_ms = int(services.clock.now() * 1000)
    record = FileRecord(
        file_id, request.state.caller.name, purpose, filename, size, now_ms,
        None if ttl is None else now_ms + ttl * 1000,
    )  # fmt: skip
    await store.add_file(services.db, record)
    return JSONResponse(file_object(record), headers={"x-request-id": ctx.request_id})


def _expiry(form: Any, purpose: str) -> int | None:
    anchor = form.get("expires_after[anchor]")
    seconds = form.get("expires_after[seconds]")
    if seconds is None:
        return BATCH_FILE_TTL_S if purpose == "batch" else None
    if anchor not in (None, "created_at"):
        raise BadRequest("expires_after.anchor must be 'created_at'.", param="expires_after")
    if (
        not isinstance(seconds, str)
        or not seconds.isdigit()
        or not (3600 <= int(seconds) <= 2_592_000)
    ):
        raise BadRequest(
            "expires_after.seconds must be between 3600 and 2592000.", param="expires_after"
        )
    return int(seconds)


def _save(upload_file: UploadFile, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    upload_file.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload_file.file, out, 1024 * 1024)
    return target.stat().st_size


async def list_files(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    query = request.query_params
    limit = query.get("limit", "10000")
    if not limit.isdigit() or not 1 <= int(limit) <= 10_000:
        raise BadRequest("Invalid 'limit': expected 1 to 10000.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    records = await store.list_files(
        services.db,
        request.state.caller.name,
        int(services.clock.now() * 1000),
        purpose=query.get("purpose"),
        limit=int(limit) + 1,
        ascending=order == "asc",
        after=query.get("after"),
    )
    page = records[: int(limit)]
    data = [file_object(record) for record in page]
    return JSONResponse({
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(records) > len(page),
    })  # fmt: skip


async def owned(request: Request) -> FileRecord:
    services = services_of(request)
    file_id = request.path_params["file_id"]
    record = await store.get_file(
        services.db, file_id, request.state.caller.name, int(services.clock.now() * 1000)
    )
    if record is None:
        raise NotFound(f"No such File object: {file_id}", param="id")
    return record


async def retrieve(request: Request, ctx: LogContext) -> Response:
    return JSONResponse(file_object(await owned(request)))


async def content(request: Request, ctx: LogContext) -> Response:
    record = await owned(request)
    path = folder_of(services_of(request)) / record.id
    return FileResponse(path, media_type="application/octet-stream",
                        headers={"x-request-id": ctx.request_id})  # fmt: skip


async def delete(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    record = await owned(request)
    await store.delete_file(services.db, record.id, record.key_name)
    await asyncio.to_thread((folder_of(services) / record.id).unlink, missing_ok=True)
    return JSONResponse({"id": record.id, "object": "file", "deleted": True})
