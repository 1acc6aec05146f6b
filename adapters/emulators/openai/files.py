"""OpenAI Files API emulator (providers.md §2.1).

File bodies live in a private temporary directory, one file per id, never in memory:
uploads are spooled to disk by Starlette's multipart parser (python-multipart; parts
over 1 MB roll over to a temporary file) and copied once into the store in a worker
thread; ``/content`` streams the file back in chunks. Deleting a file unlinks it, but
a batch that already opened it keeps reading (POSIX semantics), as OpenAI keeps running
a batch whose input file was deleted.

Files expire lazily: a file whose ``expires_at`` has passed on the clock is dropped the
next time anything looks at the store (``purpose=batch`` files expire after 30 days by
default, other uploads never unless ``expires_after`` says so).
"""

from __future__ import annotations

import secrets
import shutil
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio.to_thread
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from adapters.clock import Clock
from adapters.emulators.openai.batch.http import Handler, json_response, page, parse_limit
from adapters.emulators.openai.errors import EmulatorError

MB = 1024 * 1024
DAY = 86_400
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    path: Path

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
        }
        # The spec types expires_at as a plain integer: absent, not null, when unset.
        if self.expires_at is not None:
            data["expires_at"] = self.expires_at
        data.update(
            filename=self.filename, purpose=self.purpose, status="processed", status_details=None
        )
        return data


def new_file_id() -> str:
    return "file-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


class FileStore:
    def __init__(self, *, clock: Clock, directory: Path) -> None:
        self.clock = clock
        self.directory = directory
        self._files: dict[str, StoredFile] = {}
        # Creation rank of every id ever issued, so a deleted file still works as an
        # ``after`` cursor.
        self._rank: dict[str, int] = {}

    def path_for(self, name: str) -> Path:
        return self.directory / name

    def add(
        self,
        *,
        file_id: str,
        path: Path,
        filename: str,
        purpose: str,
        created_at: int,
        expires_at: int | None,
    ) -> StoredFile:
        stored = StoredFile(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=path.stat().st_size,
            created_at=created_at,
            expires_at=expires_at,
            path=path,
        )
        self._files[file_id] = stored
        self._rank.setdefault(file_id, len(self._rank))
        return stored

    def refresh(self, file_id: str) -> None:
        """Re-read the size of a file whose bytes were changed on disk (corruption)."""
        stored = self._files[file_id]
        self._files[file_id] = StoredFile(
            id=stored.id,
            filename=stored.filename,
            purpose=stored.purpose,
            bytes=stored.path.stat().st_size,
            created_at=stored.created_at,
            expires_at=stored.expires_at,
            path=stored.path,
        )

    def get(self, file_id: str) -> StoredFile | None:
        self.sweep()
        return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        stored = self._files.pop(file_id, None)
        if stored is None:
            return False
        stored.path.unlink(missing_ok=True)
        return True

    def all(self) -> list[StoredFile]:
        """Live files, oldest first."""
        self.sweep()
        return list(self._files.values())

    def rank(self, file_id: str) -> int | None:
        return self._rank.get(file_id)

    def sweep(self) -> None:
        now = self.clock.now()
        for stored in [f for f in self._files.values() if f.expires_at is not None]:
            if stored.expires_at is not None and now >= stored.expires_at:
                self.delete(stored.id)

    def require(self, file_id: str) -> StoredFile:
        stored = self.get(file_id)
        if stored is None:
            raise EmulatorError(404, f"No such File object: {file_id}", param="id")
        return stored


class FilesApi:
    """``/v1/files`` handlers over a ``FileStore``."""

    def __init__(self, store: FileStore, *, max_bytes: int = 512 * MB) -> None:
        self.store = store
        self.max_bytes = max_bytes

    def routes(self, wrap: Callable[[Handler], Handler]) -> list[Route]:
        return [
            Route("/v1/files", wrap(self.upload), methods=["POST"]),
            Route("/v1/files", wrap(self.list_files), methods=["GET"]),
            Route("/v1/files/{file_id}", wrap(self.retrieve), methods=["GET"]),
            Route("/v1/files/{file_id}", wrap(self.delete), methods=["DELETE"]),
            Route("/v1/files/{file_id}/content", wrap(self.content), methods=["GET"]),
        ]

    async def upload(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise EmulatorError(
                400,
                f"Invalid Content-Type header ({content_type}), expected multipart/form-data.",
            )
        try:
            async with request.form(max_files=1, max_fields=16) as form:
                stored = await self._store_upload(form)
        except HTTPException as exc:  # malformed multipart body
            raise EmulatorError(400, str(exc.detail)) from exc
        return json_response(stored.to_json())

    async def _store_upload(self, form: FormData) -> StoredFile:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise EmulatorError(
                400,
                "Missing required parameter: 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        purpose = form.get("purpose")
        if not isinstance(purpose, str) or not purpose:
            raise EmulatorError(
                400,
                "Missing required parameter: 'purpose'.",
                param="purpose",
                code="missing_required_parameter",
            )
        if purpose not in PURPOSES:
            raise EmulatorError(
                400,
                f"Invalid value for 'purpose': {purpose!r}. Supported values are: "
                + ", ".join(repr(p) for p in PURPOSES)
                + ".",
                param="purpose",
                code="invalid_value",
            )
        filename = upload.filename or "file"
        if purpose == "batch" and not filename.lower().endswith(".jsonl"):
            raise EmulatorError(
                400, "Invalid file format for Batch API. Must be .jsonl", param="file"
            )
        if (upload.size or 0) > self.max_bytes:
            raise EmulatorError(
                400,
                f"File is too large: {upload.size} bytes. The maximum file size is "
                f"{self.max_bytes // MB} MB.",
                param="file",
                code="file_too_large",
            )
        ttl = _expires_after(form, default=30 * DAY if purpose == "batch" else None)
        file_id = new_file_id()
        path = self.store.path_for(file_id)
        await anyio.to_thread.run_sync(_copy_to, upload.file, path)
        created_at = int(self.store.clock.now())
        return self.store.add(
            file_id=file_id,
            path=path,
            filename=filename,
            purpose=purpose,
            created_at=created_at,
            expires_at=None if ttl is None else created_at + ttl,
        )

    async def list_files(self, request: Request) -> Response:
        query = request.query_params
        limit = parse_limit(query.get("limit"), default=10_000, maximum=10_000)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise EmulatorError(
                400,
                f"Invalid value for 'order': {order!r}. Supported values are: 'asc', 'desc'.",
                param="order",
                code="invalid_value",
            )
        files = self.store.all()
        purpose = query.get("purpose")
        if purpose:
            files = [f for f in files if f.purpose == purpose]
        if order == "desc":
            files.reverse()
        after = query.get("after")
        if after:
            cursor = self.store.rank(after)
            # An id we never issued: nothing lies after it (never restart from the top,
            # which would loop a paginating client forever).
            files = [] if cursor is None else [f for f in files if self._past(f, cursor, order)]
        return json_response(page(files, limit=limit, render=StoredFile.to_json))

    def _past(self, stored: StoredFile, cursor: int, order: str) -> bool:
        rank = self.store.rank(stored.id)
        assert rank is not None  # every stored file has a rank
        return rank > cursor if order == "asc" else rank < cursor

    async def retrieve(self, request: Request) -> Response:
        return json_response(self.store.require(request.path_params["file_id"]).to_json())

    async def delete(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        self.store.require(file_id)
        self.store.delete(file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})

    async def content(self, request: Request) -> Response:
        stored = self.store.require(request.path_params["file_id"])
        # FileResponse streams the file from disk in chunks (never whole in memory).
        return FileResponse(stored.path, media_type="application/octet-stream")


def _expires_after(form: FormData, *, default: int | None) -> int | None:
    anchor = form.get("expires_after[anchor]")
    seconds = form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return default
    if anchor != "created_at":
        raise EmulatorError(
            400,
            "Invalid value for 'expires_after.anchor': supported anchors are: 'created_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    try:
        ttl = int(str(seconds))
    except ValueError:
        ttl = 0
    if not 3600 <= ttl <= 30 * DAY:
        raise EmulatorError(
            400,
            "Invalid 'expires_after.seconds': must be between 3600 and 2592000.",
            param="expires_after.seconds",
            code="invalid_value",
        )
    return ttl


def _copy_to(source: IO[bytes], path: Path) -> None:
    source.seek(0)
    with path.open("wb") as target:
        shutil.copyfileobj(source, target, MB)
