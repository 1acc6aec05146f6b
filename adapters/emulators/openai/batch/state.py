"""The OpenAI batch state machine (providers.md §2.4, §2.10), driven by the clock.

    validating ─┬─▶ failed                       (errors.data says why)
                ├─▶ in_progress ─┬─▶ finalizing ─▶ completed
                │                ├─▶ expired      (window passed: partial results)
                │                └─▶ cancelling ─▶ cancelled
                └─▶ cancelling ─▶ cancelled

Nothing runs in the background. Before answering anything, the emulator calls
``advance_all(now)``, which replays every event that fell due since the last call *at
the time it was due* (validation at ``created_at + validation_delay``, finalizing at
``in_progress_at + processing_time``, ...), so the result depends only on the clock and
the seed, never on how often a test polls. Batches are advanced in creation order so
the enqueued-token check of a later batch sees earlier batches exactly as they stood.

While ``in_progress`` a batch runs ``total * elapsed / processing_time`` of its lines, in
a seeded random permutation, appending each result to its output or error file as it
goes; files are therefore in random order, and are registered as ``batch_output`` files
when the batch reaches a final state. Lines a cancel or the expiry window stopped are
written to the error file as non-HTTP lines (``batch_cancelled`` / ``batch_expired``)
and counted as failed, so ``completed + failed == total`` in every final state.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any

import orjson

from adapters.emulators.openai.batch.lines import UsageTotals
from adapters.emulators.openai.batch.validate import LinePlan


class BatchStatus(StrEnum):
    """OpenAI's batch states. The emulator keeps its own copy: it must not agree with the
    adapter it stands in for by sharing that adapter's code."""

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
S = BatchStatus
log = logging.getLogger(__name__)

TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    S.VALIDATING: frozenset({S.FAILED, S.IN_PROGRESS, S.CANCELLING}),
    S.IN_PROGRESS: frozenset({S.FINALIZING, S.EXPIRED, S.CANCELLING}),
    S.FINALIZING: frozenset({S.COMPLETED}),
    S.CANCELLING: frozenset({S.CANCELLED}),
    S.FAILED: frozenset(),
    S.COMPLETED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
}

_STAMPS = {
    S.IN_PROGRESS: "in_progress_at",
    S.FINALIZING: "finalizing_at",
    S.COMPLETED: "completed_at",
    S.FAILED: "failed_at",
    S.EXPIRED: "expired_at",
    S.CANCELLING: "cancelling_at",
    S.CANCELLED: "cancelled_at",
}

_FLUSH_BYTES = 1024 * 1024


class IllegalTransition(RuntimeError):
    """A bug in the emulator: a move the state table does not allow."""


class Appender:
    """Buffered appends to a result file that is only opened while flushing, so a
    running batch holds no write handle between requests."""

    def __init__(self, path: Any) -> None:
        self.path = path
        self.lines = 0
        self._buffer = bytearray()

    def add(self, line: bytes) -> None:
        self._buffer += line
        self.lines += 1
        if len(self._buffer) >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            with open(self.path, "ab") as target:
                target.write(self._buffer)
            self._buffer.clear()


@dataclass(eq=False, slots=True)
class BatchRecord:
    id: str
    rank: int
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    created_at: float
    expires_at: float
    output_ttl: int
    rng: random.Random
    input: IO[bytes] | None
    input_size: int
    output: Appender
    failures: Appender
    status: BatchStatus = S.VALIDATING
    at: dict[BatchStatus, float] = field(default_factory=dict)
    model: str | None = None
    errors: tuple[dict[str, Any], ...] = ()
    plan: LinePlan | None = None
    order: list[int] = field(default_factory=list)
    tokens: int = 0
    done: int = 0
    completed: int = 0
    failed: int = 0
    usage: UsageTotals = field(default_factory=UsageTotals)
    output_file_id: str | None = None
    error_file_id: str | None = None
    stalled_at: float | None = None
    corrupt: str | None = None
    # Seconds from in_progress to finalizing; ``None``: the engine's ``processing_time``.
    processing_time: float | None = None

    def move(self, to: BatchStatus, when: float) -> None:
        if to not in TRANSITIONS[self.status]:
            raise IllegalTransition(f"{self.id}: {self.status} -> {to}")
        self.status = to
        self.at[to] = when

    def live_at(self, when: float) -> bool:
        """Holding enqueued tokens at ``when``: validated and not yet final."""
        started = self.at.get(S.IN_PROGRESS)
        if started is None or started > when:
            return False
        ended = next((self.at[s] for s in self.at if s.final), None)
        return ended is None or ended > when

    def to_json(self) -> dict[str, Any]:
        stamps = {name: _int_or_none(self.at.get(status)) for status, name in _STAMPS.items()}
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": list(self.errors)} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status.value,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": stamps["in_progress_at"],
            "expires_at": int(self.expires_at),
            "finalizing_at": stamps["finalizing_at"],
            "completed_at": stamps["completed_at"],
            "failed_at": stamps["failed_at"],
            "expired_at": stamps["expired_at"],
            "cancelling_at": stamps["cancelling_at"],
            "cancelled_at": stamps["cancelled_at"],
            "request_counts": {
                "total": self.plan.total if self.plan is not None else 0,
                "completed": self.completed,
                "failed": self.failed,
            },
            "usage": self.usage.to_json(),
            "metadata": self.metadata,
        }

    def read_body(self, index: int) -> Any:
        """The request body of plan line ``index``, re-read from the input file."""
        assert self.plan is not None
        assert self.input is not None
        self.input.seek(self.plan.offsets[index])
        return orjson.loads(self.input.read(self.plan.lengths[index]))["body"]

    def close_input(self) -> None:
        if self.input is not None:
            self.input.close()
            self.input = None


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)
