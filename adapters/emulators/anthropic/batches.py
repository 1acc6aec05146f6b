"""Anthropic Message Batches (providers.md 5, providers-2.md 3), timed on the clock.

    POST   /v1/messages/batches                create: {"requests": [{"custom_id", "params"}]}
    GET    /v1/messages/batches                list, newest first (limit, after_id, before_id)
    GET    /v1/messages/batches/{id}           retrieve
    POST   /v1/messages/batches/{id}/cancel    cancel
    DELETE /v1/messages/batches/{id}           delete (ended batches only)
    GET    /v1/messages/batches/{id}/results   JSONL, in shuffled order (the results_url)

A batch is ``in_progress`` from creation until ``complete_after`` (or a per-batch
``turnaround``), then ``ended``; one not done by ``expire_after`` (24 h) ends there with
its unfinished requests ``expired``. A cancel makes it ``canceling`` for
``cancel_after`` seconds, then ``ended``: the requests done before the cancel keep their
results, the rest are ``canceled``. Requests finish in input order, evenly over the
processing time. ``request_counts`` other than ``processing`` stay zero until the batch
has ended; ``results_url`` is null until then. Results stay readable 29 days, then the
batch is ``archived_at`` and its results answer 404.

The create call checks the envelope synchronously (unknown fields, an empty or oversized
list, a ``custom_id`` outside ``^[a-zA-Z0-9_-]{1,64}$`` or repeated: 400 for the whole
call; more than 256 MB: 413); each ``params`` is validated only when the request runs,
as the real API does, and fails as an ``errored`` result (``stream`` refused there too).
Succeeded messages report ``usage.service_tier: "batch"`` and go through the same prompt
cache as real-time calls, so the discounts stack; errored, canceled and expired requests
are unbilled. ``line_failure_rate`` makes that share of requests fail with a retryable
``api_error`` (drawn from the batch's sequence number and the request itself).

Unverified, chosen here and configurable where it matters: the answer to ``results``
before the batch ends (400 ``invalid_request_error``; the SDK never asks then), a cancel
of an ended batch (answered with the batch unchanged), and how long ``canceling`` lasts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.clock import Clock

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ARCHIVE_AFTER = 29 * 86400.0


@dataclass(frozen=True, slots=True)
class BatchSettings:
    complete_after: float | None = 60.0  # None: never done, so a test reaches expiry
    expire_after: float = 24 * 3600.0
    cancel_after: float = 1.0
    archive_after: float = _ARCHIVE_AFTER
    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES
    # ``costroute simulate``: a batch's own processing time from its creation sequence
    # number (1, 2, ...), overriding ``complete_after``.
    turnaround: Callable[[int], float] | None = None
    line_failure_rate: float = 0.0


@dataclass(slots=True)
class Batch:
    id: str
    seq: int
    key: str
    requests: list[dict[str, Any]]
    created: float
    done_after: float | None  # seconds from creation until every request is processed
    cancel_at: float | None = None
    results: list[dict[str, Any]] | None = None
    deleted: bool = False


class BatchError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def rfc3339(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class Batches:
    """The batches of one emulator. ``run`` answers one request's ``params`` as the
    Messages endpoint would (raising for invalid params), ``key`` being the creator's
    API key for its prompt cache."""

    def __init__(
        self,
        settings: BatchSettings,
        clock: Clock,
        run: Callable[[str, dict[str, Any]], dict[str, Any]],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._run = run
        self._batches: dict[str, Batch] = {}
        self._seq = 0

    # --- create --------------------------------------------------------------------------

    def create(self, body: Any, *, key: str, size: int) -> Batch:
        if size > self.settings.max_bytes:
            raise BatchError(413, f"Request exceeds the maximum size of {MAX_BYTES} bytes.")
        if not isinstance(body, dict):
            raise BatchError(400, "The request body must be a JSON object.")
        extra = sorted(set(body) - {"requests"})
        if extra:
            raise BatchError(400, f"{extra[0]}: Extra inputs are not permitted")
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise BatchError(400, "requests: List should have at least 1 item after validation")
        if len(requests) > self.settings.max_requests:
            raise BatchError(
                400, f"requests: at most {self.settings.max_requests} requests per batch"
            )
        seen: set[str] = set()
        for index, item in enumerate(requests):
            if not isinstance(item, dict) or set(item) != {"custom_id", "params"}:
                raise BatchError(
                    400, f"requests.{index}: custom_id and params are required, nothing else"
                )
            custom_id = item["custom_id"]
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
                raise BatchError(
                    400,
                    f"requests.{index}.custom_id: String should match pattern "
                    "'^[a-zA-Z0-9_-]{1,64}$'",
                )
            if custom_id in seen:
                raise BatchError(400, f"Duplicate custom_id {custom_id!r} in the batch.")
            seen.add(custom_id)
            if not isinstance(item["params"], dict):
                raise BatchError(400, f"requests.{index}.params: Input should be an object")
        self._seq += 1
        settings = self.settings
        done_after = (
            settings.turnaround(self._seq)
            if settings.turnaround is not None
            else settings.complete_after
        )
        batch = Batch(
            id="msgbatch_01" + secrets.token_hex(12),
            seq=self._seq,
            key=key,
            requests=requests,
            created=self.clock.now(),
            done_after=done_after,
        )
        self._batches[batch.id] = batch
        return batch

    # --- reading -------------------------------------------------------------------------

    def get(self, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None or batch.deleted:
            raise BatchError(404, f"message_batch {batch_id} not found")
        return batch

    def _end(self, batch: Batch) -> tuple[float, bool]:
        """When ``batch`` ends, and whether it ends because every request was processed
        (rather than by its expiry or a cancel)."""
        settings = self.settings
        cut = batch.created + settings.expire_after
        if batch.cancel_at is not None:
            cut = min(cut, batch.cancel_at + settings.cancel_after)
        if batch.done_after is not None and batch.created + batch.done_after <= cut:
            return batch.created + batch.done_after, True
        return cut, False

    def ended_at(self, batch: Batch) -> float | None:
        end, _ = self._end(batch)
        return end if self.clock.now() >= end else None

    def status(self, batch: Batch) -> str:
        if self.ended_at(batch) is not None:
            return "ended"
        return "canceling" if batch.cancel_at is not None else "in_progress"

    def view(self, batch: Batch, base_url: str) -> dict[str, Any]:
        ended = self.ended_at(batch)
        counts = {"processing": len(batch.requests), "succeeded": 0, "errored": 0,
                  "canceled": 0, "expired": 0}  # fmt: skip
        results_url = None
        if ended is not None:
            counts["processing"] = 0
            for line in self.results(batch):
                counts[line["result"]["type"]] += 1
            results_url = f"{base_url.rstrip('/')}/v1/messages/batches/{batch.id}/results"
        archived = batch.created + self.settings.archive_after
        now = self.clock.now()
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": self.status(batch),
            "request_counts": counts,
            "created_at": rfc3339(batch.created),
            "expires_at": rfc3339(batch.created + self.settings.expire_after),
            "ended_at": None if ended is None else rfc3339(ended),
            "cancel_initiated_at": None if batch.cancel_at is None else rfc3339(batch.cancel_at),
            "archived_at": rfc3339(archived) if now >= archived else None,
            "results_url": results_url,
        }

    def page(
        self, *, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[Batch], bool]:
        """Newest first; ``after_id`` pages towards older batches, ``before_id`` newer."""
        if not 1 <= limit <= 1000:
            raise BatchError(400, "limit: Input should be between 1 and 1000")
        ordered = sorted((b for b in self._batches.values() if not b.deleted), key=lambda b: -b.seq)
        if after_id is not None:
            at = self._position(ordered, after_id)
            chosen = ordered[at + 1 :]
            return chosen[:limit], len(chosen) > limit
        if before_id is not None:
            at = self._position(ordered, before_id)
            chosen = ordered[:at]
            return chosen[-limit:], len(chosen) > limit
        return ordered[:limit], len(ordered) > limit

    @staticmethod
    def _position(ordered: list[Batch], batch_id: str) -> int:
        for index, batch in enumerate(ordered):
            if batch.id == batch_id:
                return index
        raise BatchError(400, f"Invalid cursor: {batch_id}")

    # --- changes -------------------------------------------------------------------------

    def cancel(self, batch: Batch) -> Batch:
        if batch.cancel_at is None and self.ended_at(batch) is None:
            batch.cancel_at = self.clock.now()
        return batch

    def delete(self, batch: Batch) -> None:
        if self.ended_at(batch) is None:
            raise BatchError(
                400, f"Batch {batch.id} cannot be deleted while it is still processing; "
                "cancel it first."
            )  # fmt: skip
        batch.deleted = True

    # --- results -------------------------------------------------------------------------

    def results(self, batch: Batch) -> list[dict[str, Any]]:
        """Every request's result line, in a shuffled order fixed per batch. Computed once,
        when first asked after the batch ended, in input order (so prompt-cache writes
        and reads follow the order requests ran)."""
        if batch.results is not None:
            return batch.results
        ended = self.ended_at(batch)
        if ended is None:
            raise BatchError(400, f"Batch {batch.id} has not ended; its results are not ready.")
        total = len(batch.requests)
        _, done = self._end(batch)
        if done:
            ran = total
        elif batch.done_after:  # cut short: requests run evenly over the processing time
            ran = min(total, int(total * (ended - batch.created) / batch.done_after))
        else:
            ran = 0  # never processed: everything expires
        lost = "canceled" if batch.cancel_at is not None else "expired"
        rate = self.settings.line_failure_rate
        lines = []
        for index, item in enumerate(batch.requests):
            if index >= ran:
                result: dict[str, Any] = {"type": lost}
            elif rate > 0 and _draw(batch.seq, item["params"]) < rate:
                result = _errored("api_error", "Internal server error")
            else:
                result = self._answer(batch, item["params"])
            lines.append({"custom_id": item["custom_id"], "result": result})
        random.Random(f"anthropic-batch/{batch.seq}").shuffle(lines)  # "in any order"
        batch.results = lines
        batch.requests = [{"custom_id": item["custom_id"]} for item in batch.requests]
        return lines

    def _answer(self, batch: Batch, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("stream"):
            return _errored("invalid_request_error", "stream: not supported in batches")
        try:
            message = self._run(batch.key, params)
        except BatchError as exc:
            kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
            return _errored(kind, exc.message)
        message["usage"]["service_tier"] = "batch"
        return {"type": "succeeded", "message": message}

    def jsonl(self, batch: Batch) -> bytes:
        if self.clock.now() >= batch.created + self.settings.archive_after:
            raise BatchError(404, f"Results of {batch.id} are no longer available (archived).")
        return b"".join(orjson.dumps(line) + b"\n" for line in self.results(batch))


def _draw(seq: int, params: Any) -> float:
    """A request's random failure draw, keyed by its batch's sequence number and the
    request itself, not its place in the batch (costroute writes a batch's items in
    ticket-id order, which differs between runs of one simulation seed)."""
    digest = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return random.Random(f"anthropic-batch/{seq}/{digest}").random()


def _errored(kind: str, message: str) -> dict[str, Any]:
    # An ``ErrorResponse``: the result carries the error type, not an HTTP status.
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_011C" + secrets.token_hex(10),
        },
    }
