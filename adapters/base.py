"""The seams between the proxy and a provider.

A ``ChatAdapter`` takes and returns the OpenAI wire format, whatever the provider
speaks: request bodies are OpenAI ``chat.completions`` / ``embeddings`` dicts with the
upstream model already filled in; replies are OpenAI JSON bytes and OpenAI SSE events.
Adapters translate (Gemini) or pass through (OpenAI, DeepSeek); they never retry,
never log to the database and know nothing about tickets.

A ``BatchLane`` is a provider's asynchronous half-price lane, behind one provider-neutral
interface (modelled on TensorZero's batch inference: start a batch from items, poll it,
read its results). Items go in and results come out in the OpenAI wire format; each
adapter translates to and from its provider inside (OpenAI: Files + Batches; Gemini:
``batchGenerateContent``; Anthropic: Message Batches).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from adapters.errors import AdapterError


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


@runtime_checkable
class PassthroughAdapter(Protocol):
    """A provider whose stateless endpoints (moderations, images, audio, legacy
    completions) costroute forwards as they are, under the provider's key."""

    async def forward(
        self,
        path: str,
        body: bytes | AsyncIterable[bytes],
        *,
        content_type: str,
        accept: str | None = None,
    ) -> Any: ...


# The metadata pair the flusher gives ``BatchLane.submit`` (the local batch id), which
# ``list`` must give back: reconciliation after a crash finds a batch by it.
BATCH_METADATA_KEY = "costroute_batch_id"


class BatchStatus(StrEnum):
    """The shared status vocabulary (OpenAI's batch states); every lane maps its
    provider's states onto it:

    - ``validating``: accepted, not yet running (Gemini ``BATCH_STATE_PENDING``;
      Anthropic has no such phase and reports ``in_progress`` at once);
    - ``in_progress``: running (Anthropic ``in_progress``, Gemini ``BATCH_STATE_RUNNING``);
    - ``finalizing``: items done, results being written (OpenAI only);
    - ``cancelling``: cancel requested, not yet settled (Anthropic ``canceling``);
    - final: ``completed`` (results readable; individual items may still have failed),
      ``failed`` (the whole batch was refused: validation or quota; ``BatchInfo.errors``
      says why), ``expired`` (the provider's window ran out: Gemini 48 h, OpenAI and
      Anthropic 24 h; finished items are still readable), ``cancelled`` (finished items
      readable). Anthropic's ``ended`` maps to ``completed``, or to ``expired`` /
      ``cancelled`` when its counts say every unfinished item expired / was cancelled.
    """

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
    """One provider batch as every lane reports it.

    ``id`` is the provider's id, exactly as ``retrieve``/``cancel`` take it (OpenAI
    ``batch_...``, Gemini ``batches/...``, Anthropic ``msgbatch_...``). ``metadata`` must
    round-trip what ``submit`` was given (Gemini and Anthropic have no free metadata: the
    lane encodes it, e.g. in Gemini's ``displayName``, and decodes it here), because
    reconciliation after a crash finds a batch by it. The file ids are the lane's own
    business (opaque to the caller, which only stores and shows them): OpenAI's input,
    output and error files; Gemini's ``responsesFile``; empty where results are inline or
    streamed (Anthropic ``results_url`` is kept by the lane, e.g. in ``output_file_id``).
    """

    id: str
    status: BatchStatus
    endpoint: str
    input_file_id: str = ""
    created_at: int = 0  # Unix seconds
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0  # items submitted
    completed: int = 0  # items that succeeded so far
    failed: int = 0  # items that failed (errored, expired or cancelled) so far
    # Why a ``failed`` batch was refused: [{"code", "message", "param", "line"}], where
    # ``line`` (1-based, optional) is the position of the offending item in the order
    # ``submit`` received them, and a ``code`` containing "limit" marks a pure capacity
    # refusal (quota / enqueued tokens: the items are requeued without charging a try).
    errors: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    # ``list`` cannot tell this batch's metadata yet (Anthropic: the item ids that carry
    # it are readable only once the batch has ended). Reconciliation treats such a batch
    # as possibly any batch it is settling that ``created_at`` and ``total`` allow.
    metadata_pending: bool = False


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of one item, keyed by the ``custom_id`` it was submitted with.

    - success: ``status_code`` 2xx and ``body`` the OpenAI response body of the endpoint
      (a ``chat.completion`` with ``usage``, an embeddings ``list``, a Responses
      ``response``), translated exactly as the lane's real-time path translates it;
    - an HTTP-level failure: ``status_code`` 4xx/5xx and ``error`` an OpenAI error object
      (``message``, ``type``, ``param``, ``code``) mapped as the real-time path maps
      that provider's errors (so 429 / 5xx read as retryable, 400 as permanent);
    - a non-HTTP failure: ``status_code`` ``None`` and ``error`` with ``code``
      ``batch_expired`` / ``batch_cancelled`` (requeued) or another code.
    The caller classifies retryable vs permanent from these alone.
    """

    custom_id: str
    status_code: int | None
    body: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    # ``{"lane_suffix": "cache"}`` when the item used a provider cache that costroute
    # manages (Gemini ``cachedContent``): its lane is priced as ``batch+cache``, the
    # baseline counting the cached tokens at the full input price.
    notes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """A provider's batch facts, read by the flusher when it sizes and gates batches.

    ``max_items`` / ``max_bytes`` bound one batch (the flusher takes the smaller of these
    and ``batch.max_lines`` / ``batch.max_bytes``); bytes are counted as
    ``len(custom_id) + len(body) + item_overhead`` per item. ``inline_max_bytes`` is the
    size up to which the lane sends items inside the create call (Gemini: 20 MB; None:
    never inline, always a file, as OpenAI; Anthropic: everything inline). ``quota_scope``
    says what the provider's concurrency quota counts (``"model"``: OpenAI enqueued tokens
    per model; ``"provider"``: one pool per key), i.e. the default scope of
    ``max_active_batches``. ``window_s`` is how long a batch may run before it expires.
    """

    max_items: int
    max_bytes: int
    item_overhead: int = 0
    inline_max_bytes: int | None = None
    quota_scope: Literal["model", "provider"] = "model"
    window_s: int = 24 * 3600


class BatchNotCreated(Exception):
    """Raised by ``BatchLane.submit`` when the provider certainly holds no batch for the
    items (an upload failed, or the create call was refused with a non-retryable status):
    the caller requeues them at once. Any other ``AdapterError`` from ``submit`` leaves
    the outcome unknown (a timeout while creating): the caller then reconciles by
    metadata through ``list`` before requeueing anything, so no item is ever in two live
    batches."""

    def __init__(self, cause: AdapterError) -> None:
        super().__init__(cause.message)
        self.cause = cause
        self.message = cause.message


class BatchLane(Protocol):
    """A provider's batch API behind one interface. Adapters never touch the store,
    never retry and know nothing about tickets; the flusher, poller, ingest and
    reconciliation use only these methods.

    Errors: every method raises ``AdapterError`` (``adapters.errors``) for provider or
    transport failures, with ``retryable`` set as for real-time calls.
    """

    provider_type: str
    limits: BatchLimits

    async def submit(
        self,
        items: AsyncIterable[tuple[str, bytes]],
        *,
        endpoint: str,
        model: str,
        metadata: Mapping[str, str],
    ) -> BatchInfo:
        """Create one batch from ``items``: ``(custom_id, body)`` pairs streamed from the
        store, ``body`` the JSON bytes of an OpenAI request for ``endpoint``
        (``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/responses``) with the
        upstream ``model`` already set and no ``stream``. All items share ``model``
        (Gemini's batch URL names it). ``custom_id`` is URL-safe ASCII, at most 64 chars.

        The lane translates each body as its real-time path would, keeps the mapping
        from custom_id to its provider's item key (Anthropic ``custom_id``; Gemini
        request ``metadata`` / JSONL ``key``; inline results come back in order), may
        consume ``items`` only once, and must not hold them all in memory when it sends
        a file. ``metadata`` is small string pairs that ``list`` must give back.
        Raises ``BatchNotCreated`` when certainly nothing was created (an endpoint the
        lane does not carry: ``BatchNotCreated(Unsupported(...))``). An item the lane
        cannot translate is left out with a warning: no result speaks for it, so its
        ticket is requeued and fails after ``batch.max_attempts``; if no item is left,
        ``BatchNotCreated(Unsupported(...))``."""
        ...

    async def retrieve(self, batch_id: str) -> BatchInfo: ...

    def results(self, info: BatchInfo) -> AsyncIterator[BatchResult]:
        """Every result of a final batch (``info`` from ``retrieve``), streamed in any
        order, each item at most once. Items with no result (expired, cancelled before
        running) may be omitted: the caller requeues whatever no result spoke for.
        Errors raised mid-stream leave already yielded results valid; the caller may
        call again later (it ignores repeats)."""
        ...

    async def cancel(self, batch_id: str) -> BatchInfo: ...

    def list(self, *, since: float | None = None) -> AsyncIterator[BatchInfo]:
        """Every batch the provider knows for this credential, newest first, with its
        decoded ``metadata``: reconciliation finds a batch whose creation outcome was
        unknown by the metadata ``submit`` was given. ``since`` (Unix seconds): batches
        created before it cannot be the ones sought, so a lane may skip costly work to
        decode their metadata (Anthropic: reading a result line); it still yields them."""
        ...

    async def aclose(self) -> None: ...
