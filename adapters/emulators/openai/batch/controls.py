"""HTTP twins of the batch emulator's Python controls, for tests that only hold a URL.
No auth; bodies are JSON:

    POST /_emulator/batches/line-faults        {"clear": bool, "faults": [LineFault, ...]}
    POST /_emulator/batches/{batch_id}/stall
    POST /_emulator/batches/corrupt            {"batch_id": "batch_…" | "next", "mode": …}
    POST /_emulator/batches/fail-next-create   {"status", "error"?, "times"?, "retry_after"?}
    POST /_emulator/batches/token-limits       {"model", "limit": int | null}
    GET  /_emulator/batches/state              {"batches": [Batch…], "files": [File…]}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.emulators.openai.batch.http import Handler, json_response, read_json_object
from adapters.emulators.openai.batch.lines import LineFault
from adapters.emulators.openai.errors import EmulatorError

if TYPE_CHECKING:
    from adapters.emulators.openai.batch.emulator import BatchEmulator

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineFaultsBody(_Strict):
    clear: bool = False
    faults: list[LineFault] = Field(default_factory=list)


class CorruptBody(_Strict):
    batch_id: str
    mode: Literal["truncate", "garbage", "missing"]


class FailCreateBody(_Strict):
    status: int = Field(ge=400, le=599)
    error: dict[str, Any] | None = None
    times: int = Field(1, ge=1)
    retry_after: float | None = None


class TokenLimitBody(_Strict):
    model: str
    limit: int | None = Field(None, ge=0)


def control_routes(emu: BatchEmulator, wrap: Callable[[Handler], Handler]) -> list[Route]:
    async def line_faults(request: Request) -> Response:
        body = await _parse(request, LineFaultsBody)
        if body.clear:
            emu.line_faults.clear()
        for fault in body.faults:
            emu.line_faults.add(fault)
        return json_response({"faults": [f.model_dump() for f in emu.line_faults.faults]})

    async def stall(request: Request) -> Response:
        emu.stall(request.path_params["batch_id"])
        return json_response({"stalled": request.path_params["batch_id"]})

    async def corrupt(request: Request) -> Response:
        body = await _parse(request, CorruptBody)
        emu.corrupt_output(body.batch_id, body.mode)
        return json_response(body.model_dump())

    async def fail_next_create(request: Request) -> Response:
        body = await _parse(request, FailCreateBody)
        emu.fail_next_create(
            body.status, body.error, times=body.times, retry_after=body.retry_after
        )
        return json_response(body.model_dump())

    async def token_limits(request: Request) -> Response:
        body = await _parse(request, TokenLimitBody)
        emu.set_token_limit(body.model, body.limit)
        return json_response(dict(emu.engine.token_limits))

    async def state(request: Request) -> Response:
        return json_response({"batches": emu.batches_state(), "files": emu.files_state()})

    return [
        Route("/_emulator/batches/line-faults", wrap(line_faults), methods=["POST"]),
        Route("/_emulator/batches/corrupt", wrap(corrupt), methods=["POST"]),
        Route("/_emulator/batches/fail-next-create", wrap(fail_next_create), methods=["POST"]),
        Route("/_emulator/batches/token-limits", wrap(token_limits), methods=["POST"]),
        Route("/_emulator/batches/state", wrap(state), methods=["GET"]),
        Route("/_emulator/batches/{batch_id}/stall", wrap(stall), methods=["POST"]),
    ]


async def _parse(request: Request, model: type[M]) -> M:
    raw = await read_json_object(request, allow_empty=True)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise EmulatorError(400, str(exc)) from exc
