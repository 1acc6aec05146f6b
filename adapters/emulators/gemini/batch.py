"""Gemini Batch Mode with inline requests (providers.md §3.12).

A batch is a long-running operation named ``batches/{id}``; its fields live under the
operation's ``metadata``. States (wire names), timed on the injected clock from creation:

    BATCH_STATE_PENDING --start_after--> BATCH_STATE_RUNNING --complete_after--> SUCCEEDED
    PENDING | RUNNING   --cancel-------> BATCH_STATE_CANCELLED
    PENDING | RUNNING   --expire_after (still not complete)--> BATCH_STATE_EXPIRED

Results are computed when a completed batch is first looked at: one entry per inline
request, in input order, each a ``GenerateContentResponse`` or a ``google.rpc.Status``
error, carrying the request's ``metadata`` back so callers join on their own key.
A batch made from an input file (``inputConfig.fileName``: JSONL ``{"key", "request"}``
lines uploaded through ``files.FileStore``) writes its results to a generated file
(``{"key", "response" | "error"}`` lines, input order) named in ``responsesFile``.
With ``max_live_batches`` set, a create beyond that many pending or running batches is
refused 429 ``RESOURCE_EXHAUSTED`` (the real quota's values are unpublished).
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import string
from dataclasses import dataclass, replace
from typing import Any

from adapters.clock import Clock
from adapters.emulators.gemini.api import GeminiApi
from adapters.emulators.gemini.cache import decode_token, encode_token, format_time
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.errors import (
    GeminiError,
    failed_precondition,
    for_status,
    invalid_argument,
    not_found,
)
from adapters.emulators.gemini.files import FileStore
from adapters.emulators.gemini.validate import parse
from adapters.emulators.gemini.wire import BatchCreateRequest, InlinedRequest

PENDING = "BATCH_STATE_PENDING"
RUNNING = "BATCH_STATE_RUNNING"
SUCCEEDED = "BATCH_STATE_SUCCEEDED"
CANCELLED = "BATCH_STATE_CANCELLED"
EXPIRED = "BATCH_STATE_EXPIRED"
TERMINAL = frozenset({SUCCEEDED, CANCELLED, EXPIRED, "BATCH_STATE_FAILED"})
_TYPES = "type.googleapis.com/google.ai.generativelanguage.v1main."
DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class Batch:
    name: str
    model: str
    display_name: str | None
    requests: tuple[InlinedRequest, ...]
    create_time: float
    update_time: float
    state: str = PENDING
    end_time: float | None = None
    results: tuple[dict[str, Any], ...] | None = None
    seq: int = 0
    input_file: str | None = None
    responses_file: str | None = None


class BatchStore:
    def __init__(
        self, api: GeminiApi, config: GeminiEmulatorConfig, clock: Clock, files: FileStore
    ) -> None:
        self._api = api
        self._files = files
        self._config = config
        self._clock = clock
        self._batches: dict[str, Batch] = {}
        self._seq = 0

    def create(self, model: str, raw: Any, size: int) -> Batch:
        self._api.require_model(model, "batchGenerateContent")
        if size > self._config.max_inline_batch_bytes:
            raise invalid_argument(
                "Request payload size exceeds the limit: "
                f"{self._config.max_inline_batch_bytes} bytes."
            )
        body = parse(BatchCreateRequest, raw).batch
        source = body.input_config
        limit = self._config.max_live_batches
        if limit is not None:
            live = sum(1 for b in self._batches.values() if self._advance(b).state not in TERMINAL)
            if live >= limit:
                raise for_status(429, model=model)
        if source.file_name is not None:
            requests = self._read_input(source.file_name)
        elif source.requests is None or not source.requests.requests:
            raise invalid_argument(
                "* GenerateContentBatch.input_config: requests must not be empty.",
                field="batch.input_config.requests",
            )
        else:
            requests = list(source.requests.requests)
        for index, item in enumerate(requests):
            named = item.request.get("model")
            if named is not None and named != f"models/{model}":
                raise invalid_argument(
                    f"* batch.input_config.requests.requests[{index}].request.model: {named} "
                    f"does not match the batch model models/{model}.",
                    field=f"batch.input_config.requests.requests[{index}].request.model",
                )
        now = self._clock.now()
        self._seq += 1
        batch = Batch(
            name=f"batches/{_new_id()}",
            model=f"models/{model}",
            display_name=body.display_name,
            requests=tuple(requests),
            create_time=now,
            update_time=now,
            seq=self._seq,
            input_file=source.file_name,
        )
        self._batches[batch.name] = batch
        return batch

    def get(self, name: str) -> Batch:
        batch = self._batches.get(name)
        if batch is None:
            raise not_found(f"Batch {name} not found.")
        advanced = self._advance(batch)
        self._batches[name] = advanced
        return advanced

    def page(self, page_size: int, page_token: str) -> tuple[list[Batch], str | None]:
        if page_size < 0:
            raise invalid_argument("* page_size: must not be negative.", field="page_size")
        size = min(page_size or DEFAULT_PAGE_SIZE, 1000)
        before = decode_token(page_token, prefix="before") if page_token else None
        newest_first = sorted(self._batches.values(), key=lambda b: -b.seq)
        rest = [b for b in newest_first if before is None or b.seq < before]
        chunk = [self.get(b.name) for b in rest[:size]]
        token = encode_token(chunk[-1].seq, prefix="before") if len(rest) > size else None
        return chunk, token

    def cancel(self, name: str) -> None:
        batch = self.get(name)
        if batch.state in TERMINAL:
            raise failed_precondition(f"Batch {name} is already in state {batch.state}.")
        now = self._clock.now()
        self._batches[name] = replace(batch, state=CANCELLED, update_time=now, end_time=now)

    def delete(self, name: str) -> None:
        self.get(name)
        del self._batches[name]

    def _advance(self, batch: Batch) -> Batch:
        if batch.state in TERMINAL:
            return batch
        now = self._clock.now()
        config = self._config
        done_at = config.batch_complete_after
        if config.batch_turnaround is not None:
            done_at = config.batch_turnaround(batch.seq)
        if done_at is not None and done_at < config.batch_expire_after:
            when = batch.create_time + done_at
            if now >= when:
                results = tuple(self._run(batch, item) for item in batch.requests)
                responses_file = None
                if batch.input_file is not None:
                    responses_file = self._write_output(batch, results)
                return replace(
                    batch, state=SUCCEEDED, update_time=when, end_time=when, results=results,
                    responses_file=responses_file,
                )  # fmt: skip
        expires = batch.create_time + config.batch_expire_after
        if now >= expires:
            return replace(batch, state=EXPIRED, update_time=expires, end_time=expires)
        started = batch.create_time + config.batch_start_after
        if now >= started and batch.state == PENDING:
            return replace(batch, state=RUNNING, update_time=started)
        return batch

    def _read_input(self, file_name: str) -> list[InlinedRequest]:
        stored = self._files.get(file_name)
        requests: list[InlinedRequest] = []
        for number, line in enumerate(stored.content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                parsed = json.loads(line)
            except ValueError:
                raise invalid_argument(f"Input file line {number} is not JSON.") from None
            if not isinstance(parsed, dict) or not isinstance(parsed.get("request"), dict):
                raise invalid_argument(f"Input file line {number} has no request object.")
            key = parsed.get("key")
            metadata = {"key": key} if isinstance(key, str) else None
            requests.append(InlinedRequest(request=parsed["request"], metadata=metadata))
        if not requests:
            raise invalid_argument(f"Input file {file_name} holds no requests.")
        return requests

    def _write_output(self, batch: Batch, results: tuple[dict[str, Any], ...]) -> str:
        lines = []
        for entry in results:
            line = {k: v for k, v in entry.items() if k != "metadata"}
            key = (entry.get("metadata") or {}).get("key")
            if key is not None:
                line = {"key": key, **line}
            lines.append(json.dumps(line, separators=(",", ":")))
        content = ("\n".join(lines) + "\n").encode()
        name = "files/batch-" + batch.name.removeprefix("batches/")
        return self._files.add(content, mime_type="application/jsonl", name=name).name

    def _run(self, batch: Batch, item: InlinedRequest) -> dict[str, Any]:
        entry: dict[str, Any]
        rate = self._config.batch_line_failure_rate
        try:
            if rate > 0 and _draw(batch.seq, item.request) < rate:
                raise for_status(500)
            entry = {
                "response": self._api.generate(batch.model.removeprefix("models/"), item.request)
            }
        except GeminiError as error:
            entry = {"error": error.rpc_status()}
        if item.metadata is not None:
            entry["metadata"] = item.metadata
        return entry


def operation(batch: Batch) -> dict[str, Any]:
    """The batch as Google returns it: an Operation whose metadata is the batch."""
    meta: dict[str, Any] = {"@type": _TYPES + "GenerateContentBatch", "model": batch.model}
    if batch.display_name:
        meta["displayName"] = batch.display_name
    meta["createTime"] = format_time(batch.create_time)
    meta["updateTime"] = format_time(batch.update_time)
    if batch.end_time is not None:
        meta["endTime"] = format_time(batch.end_time)
    meta["batchStats"] = _stats(batch)
    meta["state"] = batch.state
    meta["name"] = batch.name
    body: dict[str, Any] = {"name": batch.name, "metadata": meta}
    if batch.state in TERMINAL:
        body["done"] = True
    if batch.input_file is not None:
        meta["inputConfig"] = {"fileName": batch.input_file}
    if batch.responses_file is not None:
        output: dict[str, Any] = {"responsesFile": batch.responses_file}
        meta["output"] = output
        body["response"] = {"@type": _TYPES + "GenerateContentBatchOutput", **output}
    elif batch.results is not None:
        output = {"inlinedResponses": {"inlinedResponses": list(batch.results)}}
        meta["output"] = output
        body["response"] = {"@type": _TYPES + "GenerateContentBatchOutput", **output}
    return body


def _stats(batch: Batch) -> dict[str, str]:
    # int64 fields are strings in proto3 JSON, and zero values are left out.
    total = len(batch.requests)
    failed = sum(1 for r in batch.results or () if "error" in r)
    counts = {
        "requestCount": total,
        "successfulRequestCount": len(batch.results or ()) - failed,
        "failedRequestCount": failed,
        "pendingRequestCount": 0 if batch.state in TERMINAL else total,
    }
    return {key: str(value) for key, value in counts.items() if value}


def _new_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


def _draw(seq: int, request: Any) -> float:
    """An item's random failure draw, keyed by the batch's sequence number and the
    request itself, not by its place in the batch: the same request fails the same way
    whatever order the client listed the batch's items in."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return random.Random(f"gemini-batch/{seq}/{digest}").random()
