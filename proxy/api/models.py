"""``GET /v1/models`` and ``GET /v1/models/{model}``: the models configured here."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.api.dispatch import services_of
from proxy.errors import NotFound
from proxy.ops.log_context import LogContext


async def list_models(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": model.provider}
        for name, model in services.settings.models.items()
    ]
    return JSONResponse({"object": "list", "data": data}, headers={"x-request-id": ctx.request_id})


async def retrieve_model(request: Request, ctx: LogContext) -> Response:
    services = services_of(request)
    name = request.path_params["model"]
    model = services.settings.models.get(name)
    if model is None:
        raise NotFound(f"The model `{name}` does not exist.", param="model", code="model_not_found")
    return JSONResponse(
        {"id": name, "object": "model", "created": 0, "owned_by": model.provider},
        headers={"x-request-id": ctx.request_id},
    )
