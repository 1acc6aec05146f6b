"""Runs OpenAI batches through their states (see ``openai_batch_state`` for the table
and the timing rules): validation, progressive execution of lines through the injected
``execute`` function, expiry, cancellation, result files and injected corruption."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from adapters.emulators.openai.batch.lines import (
    CANCELLED,
    EXPIRED,
    LineFault,
    LineFaultPlan,
    default_error,
    error_line,
    fault_line,
    response_line,
)
from adapters.emulators.openai.batch.state import Appender, BatchRecord, BatchStatus
from adapters.emulators.openai.batch.validate import Limits, error, validate_file
from adapters.emulators.openai.errors import EmulatorError
from adapters.emulators.openai.files import FileStore, new_file_id

S = BatchStatus
Execute = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]
log = logging.getLogger(__name__)

_RANDOM_FAILURE = LineFault(every=1, status_code=500)
_GARBAGE = b"<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>\n"


class CorruptMode(StrEnum):
    TRUNCATE = "truncate"  # the last line is cut mid-JSON
    GARBAGE = "garbage"  # a non-JSON line is appended
    MISSING = "missing"  # output_file_id is set but the file 404s


@dataclass(frozen=True, slots=True)
class Timings:
    validation_delay: float = 2.0
    processing_time: float = 60.0
    finalize_delay: float = 2.0
    cancel_delay: float = 5.0
    window: float = 86_400.0
    # A batch's own processing time from its creation rank (a turnaround distribution,
    # ``costroute simulate``); ``None``: every batch takes ``processing_time``. A value
    # past the window means the batch expires.
    turnaround: Callable[[int], float] | None = None
    # Each line fails with a retryable 500 with this probability (the batch's seeded
    # generator decides, so the same seed fails the same lines).
    line_failure_rate: float = 0.0


@dataclass
class BatchEngine:
    files: FileStore
    execute: Execute
    timings: Timings
    limits: Limits
    seed: int
    token_limits: dict[str, int] = field(default_factory=dict)
    line_faults: LineFaultPlan = field(default_factory=LineFaultPlan)
    batches: dict[str, BatchRecord] = field(default_factory=dict)
    _live: list[BatchRecord] = field(default_factory=list)

    # -- creation and the clock ------------------------------------------------------

    def create(
        self,
        *,
        batch_id: str,
        endpoint: str,
        input_file_id: str,
        metadata: Mapping[str, str] | None,
        output_ttl: int,
        now: float,
    ) -> BatchRecord:
        stored = self.files.get(input_file_id)
        assert stored is not None  # checked by the handler
        rank = len(self.batches)
        turnaround = self.timings.turnaround
        created = float(int(now))  # timestamps are whole seconds on the wire
        batch = BatchRecord(
            id=batch_id,
            rank=rank,
            endpoint=endpoint,
            input_file_id=input_file_id,
            metadata=dict(metadata) if metadata is not None else None,
            created_at=created,
            expires_at=created + self.timings.window,
            output_ttl=output_ttl,
            rng=random.Random(f"{self.seed}/{rank}"),
            input=stored.path.open("rb"),
            input_size=stored.bytes,
            output=Appender(self.files.path_for(f"{batch_id}.output.partial")),
            failures=Appender(self.files.path_for(f"{batch_id}.error.partial")),
            processing_time=None if turnaround is None else turnaround(rank),
        )
        self.batches[batch_id] = batch
        self._live.append(batch)
        return batch

    def advance_all(self, now: float) -> None:
        for batch in list(self._live):
            self.advance(batch, now)
        self._live = [b for b in self._live if not b.status.final]

    def advance(self, batch: BatchRecord, now: float) -> None:
        while not batch.status.final:
            due = self._next_event(batch)
            if due is None or due[0] > now:
                break
            when, action = due
            action(batch, when)
        if batch.status is S.IN_PROGRESS:
            self._run_lines(batch, now)

    def _next_event(
        self, batch: BatchRecord
    ) -> tuple[float, Callable[[BatchRecord, float], None]] | None:
        t = self.timings
        if batch.status is S.VALIDATING:
            return batch.created_at + t.validation_delay, self._validate
        if batch.status is S.IN_PROGRESS:
            if batch.stalled_at is not None:
                return None  # stuck: no progress, no finalizing, no expiry
            done_at = batch.at[S.IN_PROGRESS] + self._processing(batch)
            if done_at < batch.expires_at:
                return done_at, self._finalize
            return batch.expires_at, self._expire
        if batch.status is S.FINALIZING:
            return batch.at[S.FINALIZING] + t.finalize_delay, self._complete
        if batch.status is S.CANCELLING:
            return batch.at[S.CANCELLING] + t.cancel_delay, self._cancelled
        return None

    # -- events -------------------------------------------------------------------------

    def _validate(self, batch: BatchRecord, when: float) -> None:
        assert batch.input is not None
        batch.input.seek(0)
        result = validate_file(
            batch.input, size=batch.input_size, endpoint=batch.endpoint, limits=self.limits
        )
        batch.model = result.model
        errors = result.errors
        if not errors and result.model is not None:
            errors = self._check_token_limit(batch, result.model, result.tokens, when)
        if errors:
            batch.errors = errors
            batch.move(S.FAILED, when)
            batch.close_input()
            return
        batch.plan = result.plan
        batch.tokens = result.tokens
        batch.order = list(range(result.plan.total))
        batch.rng.shuffle(batch.order)
        batch.move(S.IN_PROGRESS, when)

    def _check_token_limit(
        self, batch: BatchRecord, model: str, tokens: int, when: float
    ) -> tuple[dict[str, Any], ...]:
        limit = self.token_limits.get(model)
        if limit is None:
            return ()
        others = sum(
            b.tokens
            for b in self.batches.values()
            if b is not batch and b.model == model and b.live_at(when)
        )
        if others + tokens <= limit:
            return ()
        message = (
            f"Enqueued token limit reached for {model} in organization org-emulator. "
            f"Limit: {limit:,} enqueued tokens. Please try again once some in_progress "
            "batches have been completed."
        )
        return (error("token_limit_exceeded", message),)

    def _finalize(self, batch: BatchRecord, when: float) -> None:
        # Every line, not ``_target``'s share: (start + t) - start may fall a hair short
        # of t in floating point, which left the last line without a result.
        self._run_lines(batch, when, everything=True)
        batch.move(S.FINALIZING, when)

    def _complete(self, batch: BatchRecord, when: float) -> None:
        self._finish(batch, S.COMPLETED, when)

    def _expire(self, batch: BatchRecord, when: float) -> None:
        self._run_lines(batch, when)
        self._fail_rest(batch, *EXPIRED)
        self._finish(batch, S.EXPIRED, when)

    def _cancelled(self, batch: BatchRecord, when: float) -> None:
        self._fail_rest(batch, *CANCELLED)
        self._finish(batch, S.CANCELLED, when)

    def _finish(self, batch: BatchRecord, status: BatchStatus, when: float) -> None:
        batch.move(status, when)
        batch.close_input()
        created = int(when)
        for appender, purpose_id in ((batch.output, "output"), (batch.failures, "error")):
            appender.flush()
            if appender.lines == 0:
                continue
            stored = self.files.add(
                file_id=new_file_id(),
                path=appender.path,
                filename=f"{batch.id}_{purpose_id}.jsonl",
                purpose="batch_output",
                created_at=created,
                expires_at=created + batch.output_ttl,
            )
            if purpose_id == "output":
                batch.output_file_id = stored.id
            else:
                batch.error_file_id = stored.id
        if batch.corrupt is not None:
            self.corrupt(batch, CorruptMode(batch.corrupt))

    # -- lines --------------------------------------------------------------------------

    def _target(self, batch: BatchRecord, when: float) -> int:
        assert batch.plan is not None
        total = batch.plan.total
        if batch.stalled_at is not None:
            when = min(when, batch.stalled_at)
        elapsed = when - batch.at[S.IN_PROGRESS]
        processing = self._processing(batch)
        if processing <= 0:
            target = total if elapsed >= 0 else 0
        else:
            target = int(total * max(0.0, elapsed) / processing)
        return max(batch.done, min(total, target))

    def _processing(self, batch: BatchRecord) -> float:
        if batch.processing_time is not None:
            return batch.processing_time
        return self.timings.processing_time

    def _run_lines(self, batch: BatchRecord, when: float, *, everything: bool = False) -> None:
        plan = batch.plan
        assert plan is not None
        target = plan.total if everything else self._target(batch, when)
        for position in range(batch.done, target):
            index = batch.order[position]
            custom_id = plan.custom_ids[index]
            fault = self.line_faults.match(custom_id, plan.numbers[index])
            rate = self.timings.line_failure_rate
            body = batch.read_body(index)
            if fault is None and rate > 0 and self._draw(batch, body) < rate:
                fault = _RANDOM_FAILURE
            if fault is not None:
                batch.failed += 1
                batch.failures.add(fault_line(fault, custom_id, batch.rng))
                continue
            status, reply = self._call(batch.endpoint, body)
            line = response_line(custom_id, status, reply, batch.rng)
            if 200 <= status < 300:
                batch.completed += 1
                batch.usage.add(reply.get("usage"))
                batch.output.add(line)
            else:
                batch.failed += 1
                batch.failures.add(line)
        batch.done = target
        batch.output.flush()
        batch.failures.flush()

    def _draw(self, batch: BatchRecord, body: Any) -> float:
        """A line's random failure draw, keyed by the batch's rank and the line's body,
        not by its place in the file: the same request fails the same way whatever
        order its batch's lines were written in (a client's ids may be random)."""
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return random.Random(f"{self.seed}/{batch.rank}/{digest}").random()

    def _call(self, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            return self.execute(endpoint, body)
        except Exception:
            # A broken execute function must not wedge the batch: the line fails as the
            # real service fails a request it could not serve.
            log.exception("batch line execution raised; the line fails with HTTP 500")
            return 500, {"error": default_error(500)}

    def _fail_rest(self, batch: BatchRecord, code: str, message: str) -> None:
        if batch.plan is None:
            return
        for position in range(batch.done, batch.plan.total):
            custom_id = batch.plan.custom_ids[batch.order[position]]
            batch.failures.add(error_line(custom_id, code, message, batch.rng))
        batch.failed += batch.plan.total - batch.done
        batch.done = batch.plan.total

    # -- commands -----------------------------------------------------------------------

    def cancel(self, batch: BatchRecord, now: float) -> None:
        if batch.status in (S.CANCELLING, S.CANCELLED):
            return  # cancelling twice is harmless
        if batch.status not in (S.VALIDATING, S.IN_PROGRESS):
            raise EmulatorError(
                400,
                f"Cannot cancel a batch with status '{batch.status.value}'.",
                param="batch_id",
            )
        batch.move(S.CANCELLING, float(int(now)))

    def stall(self, batch: BatchRecord, now: float) -> None:
        if batch.stalled_at is None:
            batch.stalled_at = now

    def corrupt(self, batch: BatchRecord, mode: CorruptMode) -> None:
        """Damage a final batch's results now, or remember to when it finishes."""
        if not batch.status.final:
            batch.corrupt = mode.value
            return
        batch.corrupt = None
        if mode is CorruptMode.MISSING:
            if batch.output_file_id is None:
                batch.output_file_id = new_file_id()
            else:
                self.files.delete(batch.output_file_id)
            return
        file_id = batch.output_file_id or batch.error_file_id
        stored = self.files.get(file_id) if file_id else None
        if stored is None:
            return
        with stored.path.open("r+b") as handle:
            if mode is CorruptMode.GARBAGE:
                handle.seek(0, 2)
                handle.write(_GARBAGE)
            else:
                start = _last_line_start(handle)
                end = handle.seek(0, 2)
                handle.truncate(start + max(1, (end - start - 1) // 2))
        self.files.refresh(stored.id)

    def close(self) -> None:
        for batch in self.batches.values():
            batch.close_input()


def _last_line_start(handle: Any) -> int:
    """Offset of the first byte of the file's last line (which ends in a newline)."""
    end = handle.seek(0, 2)
    position = end - 1  # skip the final newline
    block = 65_536
    while position > 0:
        start = max(0, position - block)
        handle.seek(start)
        chunk = handle.read(position - start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return int(start + newline + 1)
        position = start
    return 0
