"""OpenAI Files + Batch API emulator (providers.md §2): ``/v1/files…``, ``/v1/batches…``
and the ``/_emulator/batches/…`` test controls, as routes another emulator mounts::

    emu = BatchEmulator(clock=clock, execute=answer_one_line)
    app = Starlette(routes=emu.routes())

``execute(endpoint, body) -> (status, json_body)`` answers one batch line with the same
logic as the real-time endpoint. Batches move through their states as the injected
clock moves (see ``openai_batch_state``); tests steer failures through
``emu.line_faults``, ``stall``, ``corrupt_output``, ``fail_next_create`` and
``set_token_limit``, or the same controls over HTTP (``openai_batch_controls``).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.clock import Clock
from adapters.emulators.openai.batch.controls import control_routes
from adapters.emulators.openai.batch.engine import BatchEngine, CorruptMode, Timings
from adapters.emulators.openai.batch.http import (
    Handler,
    endpoint,
    json_response,
    page,
    parse_limit,
    read_json_object,
)
from adapters.emulators.openai.batch.lines import LineFaultPlan, default_error
from adapters.emulators.openai.batch.request import ENDPOINTS, create_fields
from adapters.emulators.openai.batch.state import BatchRecord
from adapters.emulators.openai.batch.validate import Limits
from adapters.emulators.openai.errors import EmulatorError
from adapters.emulators.openai.files import MB, FilesApi, FileStore


@dataclass(frozen=True, slots=True)
class BatchEmulatorConfig:
    # None: any non-empty bearer key is accepted.
    api_key: str | None = None
    validation_delay: float = 2.0
    processing_time: float = 60.0
    finalize_delay: float = 2.0
    cancel_delay: float = 5.0
    window: float = 86_400.0
    max_lines: int = 50_000
    max_batch_file_bytes: int = 200 * MB
    max_file_bytes: int = 512 * MB
    max_validation_errors: int = 1_000
    # Per-model enqueued prompt-token limits; models not listed are unlimited.
    token_limits: Mapping[str, int] = field(default_factory=dict)
    max_creates_per_hour: int | None = 2_000
    endpoints: tuple[str, ...] = ENDPOINTS
    # Seeds the output order and the request ids of result lines.
    seed: int = 0
    # Every batch gets stuck in in_progress with no progress (a broken provider).
    stall_all: bool = False
    # Per-batch processing time from its creation rank, and random line failures
    # (``Timings``): the turnaround distribution of a ``costroute simulate`` scenario.
    turnaround: Callable[[int], float] | None = None
    line_failure_rate: float = 0.0
    # Parent of the temporary directory holding file bodies (the system default if None).
    directory: str | None = None


class BatchEmulator:
    def __init__(
        self,
        *,
        clock: Clock,
        execute: Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]],
        config: BatchEmulatorConfig | None = None,
    ) -> None:
        self.clock = clock
        self.config = config = config or BatchEmulatorConfig()
        directory = tempfile.mkdtemp(prefix="costroute-openai-files-", dir=config.directory)
        self._cleanup = weakref.finalize(self, shutil.rmtree, directory, True)
        self.files = FileStore(clock=clock, directory=Path(directory))
        timings = Timings(
            validation_delay=config.validation_delay,
            processing_time=config.processing_time,
            finalize_delay=config.finalize_delay,
            cancel_delay=config.cancel_delay,
            window=config.window,
            turnaround=config.turnaround,
            line_failure_rate=config.line_failure_rate,
        )
        limits = Limits(
            max_lines=config.max_lines,
            max_bytes=config.max_batch_file_bytes,
            max_errors=config.max_validation_errors,
        )
        self.engine = BatchEngine(
            self.files,
            execute,
            timings,
            limits,
            config.seed,
            token_limits=dict(config.token_limits),
        )
        self._files_api = FilesApi(self.files, max_bytes=config.max_file_bytes)
        self._next_corrupt: CorruptMode | None = None
        self._create_failures: deque[EmulatorError] = deque()
        self._created: deque[float] = deque()

    @property
    def line_faults(self) -> LineFaultPlan:
        return self.engine.line_faults

    def routes(self) -> list[Route]:
        return [
            *self._files_api.routes(self._api),
            Route("/v1/batches", self._api(self._create), methods=["POST"]),
            Route("/v1/batches", self._api(self._list), methods=["GET"]),
            Route("/v1/batches/{batch_id}", self._api(self._retrieve), methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self._api(self._cancel), methods=["POST"]),
            *control_routes(self, self._control),
        ]

    # -- controls (Python) --------------------------------------------------------------

    def advance(self) -> None:
        """Bring every batch up to the clock's now (every handler does this first)."""
        self.engine.advance_all(self.clock.now())

    def stall(self, batch_id: str) -> None:
        self.advance()
        self.engine.stall(self._batch(batch_id), self.clock.now())

    def corrupt_output(self, batch_id: str, mode: str) -> None:
        """Damage the results of ``batch_id`` (or of the ``"next"`` batch created)."""
        self.advance()
        parsed = CorruptMode(mode)
        if batch_id == "next":
            self._next_corrupt = parsed
        else:
            self.engine.corrupt(self._batch(batch_id), parsed)

    def fail_next_create(
        self,
        status: int,
        error: Mapping[str, Any] | None = None,
        *,
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        body = {**default_error(status), **(error or {})}
        headers = {"retry-after": str(retry_after)} if retry_after is not None else None
        for _ in range(times):
            self._create_failures.append(
                EmulatorError(
                    status,
                    str(body["message"]),
                    error_type=str(body["type"]),
                    param=body.get("param"),
                    code=body.get("code"),
                    headers=headers,
                )
            )

    def set_token_limit(self, model: str, limit: int | None) -> None:
        if limit is None:
            self.engine.token_limits.pop(model, None)
        else:
            self.engine.token_limits[model] = limit

    def batches_state(self) -> list[dict[str, Any]]:
        """Every batch as its Batch JSON, oldest first, advanced to now."""
        self.advance()
        return [b.to_json() for b in self.engine.batches.values()]

    def files_state(self) -> list[dict[str, Any]]:
        self.advance()
        return [f.to_json() for f in self.files.all()]

    def close(self) -> None:
        """Close input files and delete every stored file body."""
        self.engine.close()
        self._cleanup()

    # -- handlers -----------------------------------------------------------------------

    def _api(self, handler: Handler) -> Handler:
        return endpoint(handler, auth=True, api_key=self.config.api_key, before=self.advance)

    def _control(self, handler: Handler) -> Handler:
        return endpoint(handler, auth=False, api_key=None, before=self.advance)

    def _batch(self, batch_id: str) -> BatchRecord:
        batch = self.engine.batches.get(batch_id)
        if batch is None:
            raise EmulatorError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    async def _create(self, request: Request) -> Response:
        if self._create_failures:
            raise self._create_failures.popleft()
        body = await read_json_object(request)
        fields = create_fields(body, self.config.endpoints)
        stored = self.files.get(fields.input_file_id)
        if stored is None:
            raise EmulatorError(
                400, f"No such File object: {fields.input_file_id}", param="input_file_id"
            )
        if stored.purpose != "batch":
            raise EmulatorError(
                400,
                f"The input file {stored.id} has purpose '{stored.purpose}'; "
                "batch input files must be uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        now = self.clock.now()
        self._check_rate(now)
        batch = self.engine.create(
            batch_id="batch_" + secrets.token_hex(16),
            endpoint=fields.endpoint,
            input_file_id=stored.id,
            metadata=fields.metadata,
            output_ttl=fields.output_ttl,
            now=now,
        )
        if self.config.stall_all:
            self.engine.stall(batch, batch.created_at)
        if self._next_corrupt is not None:
            self.engine.corrupt(batch, self._next_corrupt)
            self._next_corrupt = None
        return json_response(batch.to_json())

    def _check_rate(self, now: float) -> None:
        cap = self.config.max_creates_per_hour
        if cap is None:
            return
        while self._created and self._created[0] <= now - 3600:
            self._created.popleft()
        if len(self._created) >= cap:
            wait = max(1, int(self._created[0] + 3600 - now))
            raise EmulatorError(
                429,
                f"Rate limit reached for batch creation: limit {cap:,} batches per hour. "
                f"Please try again in {wait}s.",
                error_type="requests",
                code="rate_limit_exceeded",
                headers={"retry-after": str(wait)},
            )
        self._created.append(now)

    async def _retrieve(self, request: Request) -> Response:
        return json_response(self._batch(request.path_params["batch_id"]).to_json())

    async def _cancel(self, request: Request) -> Response:
        batch = self._batch(request.path_params["batch_id"])
        self.engine.cancel(batch, self.clock.now())
        return json_response(batch.to_json())

    async def _list(self, request: Request) -> Response:
        limit = parse_limit(request.query_params.get("limit"), default=20, maximum=100)
        batches = sorted(self.engine.batches.values(), key=lambda b: b.rank, reverse=True)
        after = request.query_params.get("after")
        if after:
            cursor = self.engine.batches.get(after)
            batches = [] if cursor is None else [b for b in batches if b.rank < cursor.rank]
        return json_response(page(batches, limit=limit, render=BatchRecord.to_json))
