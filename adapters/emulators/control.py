"""The ``/_emulator/*`` control surface shared by every emulator, for tests that run an
emulator as a subprocess and cannot reach ``app.state``. No auth: it is a test tool
bound to loopback.

    POST   /_emulator/faults     a Fault as JSON; queued          -> the fault
    GET    /_emulator/faults     the queued faults                 -> {"data": [...]}
    DELETE /_emulator/faults     drop them all
    GET    /_emulator/clock      -> {"now": seconds}
    POST   /_emulator/clock      {"advance": s} or {"set": t}; ManualClock only (else 409)
    GET    /_emulator/requests   recorded requests, oldest first   -> {"data": [...]}
    DELETE /_emulator/requests   forget them

The app must set ``app.state.faults`` (``FaultPlan``), ``app.state.clock`` and
``app.state.requests`` (``RequestLog``).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.clock import ManualClock
from adapters.emulators.faults import Fault, FaultPlan
from adapters.emulators.openai.errors import error_body


class RequestLog(list[dict[str, Any]]):
    """The last ``limit`` requests an emulator received: ``{"method", "path", "headers"
    (lower-cased), "json" (parsed body or None)}``. A plain list, trimmed on ``record``."""

    def __init__(self, limit: int = 1000) -> None:
        super().__init__()
        self.limit = limit

    def record(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        self.append({"method": method, "path": path, "headers": headers, "json": body})
        if len(self) > self.limit:
            del self[: len(self) - self.limit]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    # The control surface answers in OpenAI's envelope on every emulator, Gemini's too.
    return _json(error_body(message, "invalid_request_error"), status)


async def _read(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None


async def add_fault(request: Request) -> Response:
    plan: FaultPlan = request.app.state.faults
    try:
        fault = Fault.model_validate(await _read(request))
    except ValidationError as exc:
        return _error(422, f"Invalid fault: {exc}")
    plan.add(fault)
    return _json(fault.model_dump())


async def list_faults(request: Request) -> Response:
    plan: FaultPlan = request.app.state.faults
    return _json({"data": [f.model_dump() for f in plan.faults]})


async def clear_faults(request: Request) -> Response:
    request.app.state.faults.clear()
    return _json({"deleted": True})


async def get_clock(request: Request) -> Response:
    return _json({"now": request.app.state.clock.now()})


async def move_clock(request: Request) -> Response:
    clock = request.app.state.clock
    if not isinstance(clock, ManualClock):
        return _error(409, "This emulator runs on the system clock; start it with a manual one.")
    body = await _read(request)
    if not isinstance(body, dict) or not ({"advance", "set"} & body.keys()):
        return _error(400, 'Expected {"advance": seconds} or {"set": unix_time}.')
    try:
        if "set" in body:
            clock.set(float(body["set"]))
        if "advance" in body:
            clock.advance(float(body["advance"]))
    except (TypeError, ValueError):
        return _error(400, "Clock values must be numbers.")
    return _json({"now": clock.now()})


async def list_requests(request: Request) -> Response:
    return _json({"data": list(request.app.state.requests)})


async def clear_requests(request: Request) -> Response:
    request.app.state.requests.clear()
    return _json({"deleted": True})


def control_routes() -> list[Route]:
    return [
        Route("/_emulator/faults", add_fault, methods=["POST"]),
        Route("/_emulator/faults", list_faults, methods=["GET"]),
        Route("/_emulator/faults", clear_faults, methods=["DELETE"]),
        Route("/_emulator/clock", get_clock, methods=["GET"]),
        Route("/_emulator/clock", move_clock, methods=["POST"]),
        Route("/_emulator/requests", list_requests, methods=["GET"]),
        Route("/_emulator/requests", clear_requests, methods=["DELETE"]),
    ]
