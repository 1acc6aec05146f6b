"""The Gemini Files API as Batch Mode uses it (providers-2.md 4.3 and 4.5).

Upload is Google's resumable protocol: ``POST /upload/v1beta/files`` with
``X-Goog-Upload-Protocol: resumable`` and ``X-Goog-Upload-Command: start`` (the final
size in ``X-Goog-Upload-Header-Content-Length``) answers with the session URL in the
``x-goog-upload-url`` header; chunks are then POSTed there with ``upload`` (answer
``x-goog-upload-status: active``) and the last with ``upload, finalize`` (``final``, body
``{"file": File}``). Each chunk's ``X-Goog-Upload-Offset`` must equal the bytes received
so far. Downloads are served on both paths clients use: ``/download/v1beta/{file}:download``
(the REST guide) and ``/v1beta/{file}:download`` (the python SDK), ``alt=media``.
Files expire 48 h after creation (not enforced on reads here: batches read them at once).
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from typing import Any

from adapters.clock import Clock
from adapters.emulators.gemini.cache import format_time
from adapters.emulators.gemini.errors import invalid_argument, not_found

FILE_TTL = 48 * 3600.0


@dataclass(slots=True)
class StoredFile:
    name: str
    display_name: str | None
    mime_type: str
    content: bytes
    create_time: float
    source: str  # UPLOADED | GENERATED

    def resource(self, base_url: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.display_name:
            out["displayName"] = self.display_name
        out.update(
            {
                "mimeType": self.mime_type,
                "sizeBytes": str(len(self.content)),
                "createTime": format_time(self.create_time),
                "updateTime": format_time(self.create_time),
                "expirationTime": format_time(self.create_time + FILE_TTL),
                "sha256Hash": hashlib.sha256(self.content).hexdigest(),
                "uri": f"{base_url}/v1beta/{self.name}",
                "downloadUri": f"{base_url}/download/v1beta/{self.name}:download?alt=media",
                "state": "ACTIVE",
                "source": self.source,
            }
        )
        return out


@dataclass(slots=True)
class _Session:
    size: int
    mime_type: str
    display_name: str | None
    received: bytearray


class FileStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._files: dict[str, StoredFile] = {}
        self._sessions: dict[str, _Session] = {}

    def start(self, headers: dict[str, str], body: Any) -> str:
        """A new upload session; returns its id."""
        if headers.get("x-goog-upload-protocol") != "resumable":
            raise invalid_argument("Only the resumable upload protocol is supported here.")
        if headers.get("x-goog-upload-command") != "start":
            raise invalid_argument("The first request of an upload must be command start.")
        try:
            size = int(headers.get("x-goog-upload-header-content-length", ""))
        except ValueError:
            raise invalid_argument("X-Goog-Upload-Header-Content-Length is required.") from None
        file = body.get("file") if isinstance(body, dict) else None
        file = file if isinstance(file, dict) else {}
        display = file.get("displayName") or file.get("display_name")
        mime = headers.get("x-goog-upload-header-content-type") or "application/octet-stream"
        upload_id = _new_id(24)
        self._sessions[upload_id] = _Session(size, mime, display, bytearray())
        return upload_id

    def chunk(self, upload_id: str, headers: dict[str, str], data: bytes) -> StoredFile | None:
        """Append one chunk; the stored file once ``finalize`` completes it, else None."""
        session = self._sessions.get(upload_id)
        if session is None:
            raise not_found("Upload session not found.")
        commands = {c.strip() for c in headers.get("x-goog-upload-command", "").split(",")}
        if "upload" not in commands:
            raise invalid_argument("Unsupported X-Goog-Upload-Command.")
        offset = headers.get("x-goog-upload-offset")
        if offset is None or not offset.isdigit() or int(offset) != len(session.received):
            raise invalid_argument(
                f"X-Goog-Upload-Offset must be {len(session.received)}, got {offset!r}."
            )
        session.received += data
        if len(session.received) > session.size:
            raise invalid_argument("More bytes than X-Goog-Upload-Header-Content-Length.")
        if "finalize" not in commands:
            return None
        if len(session.received) != session.size:
            raise invalid_argument("Finalized before every declared byte arrived.")
        del self._sessions[upload_id]
        return self.add(
            bytes(session.received), mime_type=session.mime_type,
            display_name=session.display_name, source="UPLOADED",
        )  # fmt: skip

    def add(
        self,
        content: bytes,
        *,
        mime_type: str,
        display_name: str | None = None,
        source: str = "GENERATED",
        name: str | None = None,
    ) -> StoredFile:
        stored = StoredFile(
            name=name or f"files/{_new_id(12)}",
            display_name=display_name,
            mime_type=mime_type,
            content=content,
            create_time=self._clock.now(),
            source=source,
        )
        self._files[stored.name] = stored
        return stored

    def get(self, name: str) -> StoredFile:
        stored = self._files.get(name)
        if stored is None:
            raise not_found(f"File {name} not found.")
        return stored

    def delete(self, name: str) -> None:
        self.get(name)
        del self._files[name]


def _new_id(length: int) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))
