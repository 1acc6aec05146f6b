"""The seams between the proxy and a provider.

A ``ChatAdapter`` takes and returns the OpenAI wire format, whatever the provider
speaks: request bodies are OpenAI ``chat.completions`` / ``embeddings`` dicts with the
upstream model already filled in; replies are OpenAI JSON bytes and OpenAI SSE events.
Adapters translate (Gemini) or pass through (OpenAI, DeepSeek); they never retry,
never log to the database and know nothing about tickets.

A ``BatchAdapter`` is the file-and-job side of a provider's asynchronous lane.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful upstream answer in OpenAI wire format."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    # Set by adapters that already parsed the body (translation adapters), so the
    # proxy need not parse it again; ``None`` means "parse ``body`` if you need it".
    parsed: dict[str, Any] | None = None
    # Free-form facts for the routing log (e.g. the Gemini cache used).
    notes: Mapping[str, Any] = field(default_factory=dict)


class StreamReply(Protocol):
    """An open upstream stream. Errors before the first event are raised by
    ``ChatAdapter.open_stream``; errors after it are raised from iteration."""

    headers: Mapping[str, str]
    notes: Mapping[str, Any]

    def events(self) -> AsyncIterator[bytes]:
        """Complete OpenAI SSE events (``b"data: {...}\\n\\n"``), always including a final
        usage chunk (``choices: []``) when the provider reports usage, and ending with
        ``b"data: [DONE]\\n\\n"``."""
        ...

    async def aclose(self) -> None: ...


class ChatAdapter(Protocol):
    provider_type: str

    async def complete(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply: ...

    async def open_stream(
        self, body: dict[str, Any], *, headers: Mapping[str, str]
    ) -> StreamReply: ...

    async def embed(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply: ...

    async def aclose(self) -> None: ...


class ResponsesStreamReply(Protocol):
    """An open Responses API stream: each event parsed and as framed for the caller."""

    headers: Mapping[str, str]
    notes: Mapping[str, Any]

    def events(self) -> AsyncIterator[tuple[dict[str, Any], bytes]]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ResponsesAdapter(Protocol):
    """A provider that speaks OpenAI's Responses API natively (costroute passes the
    request through untouched). Others are reached through the chat bridge."""

    async def respond(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> Reply: ...

    async def open_response_stream(
        self, body: dict[str, Any], *, headers: Mapping[str, str]
    ) -> ResponsesStreamReply: ...

    async def resource(
        self, method: str, path: str, *, stream: bool = False
    ) -> Reply | ResponsesStreamReply: ...


class BatchStatus(StrEnum):
    """OpenAI's batch states, which every batch adapter reports in."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    id: str
    status: BatchStatus
    endpoint: str
    input_file_id: str
    created_at: int
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    # Validation errors of a failed batch: [{"code", "message", "param", "line"}].
    errors: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


class BatchAdapter(Protocol):
    provider_type: str

    async def upload_jsonl(self, lines: AsyncIterable[bytes], *, filename: str) -> str:
        """Stream ``lines`` (each ending in ``\\n``) into a batch input file; return its id."""
        ...

    async def create_batch(
        self, *, input_file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> BatchInfo: ...

    async def retrieve_batch(self, batch_id: str) -> BatchInfo: ...

    async def cancel_batch(self, batch_id: str) -> BatchInfo: ...

    def list_batches(self) -> AsyncIterator[BatchInfo]:
        """Every batch the provider knows for this credential, newest first."""
        ...

    def file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        """The lines of a result file, streamed, without loading it whole."""
        ...

    async def aclose(self) -> None: ...
