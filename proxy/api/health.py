"""``GET /healthz`` (the database answers) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.api.dispatch import services_of
from proxy.auth import require_admin
from proxy.errors import ProxyError, render
from proxy.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE


async def healthz(request: Request) -> Response:
    services = services_of(request)
    await services.db.fetchone("SELECT 1")
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    """Prometheus text format; behind an admin key when ``[metrics] require_key``."""
    services = services_of(request)
    if services.settings.metrics.require_key:
        try:
            caller = services.extras["auth"].authenticate(request.headers.get("authorization"))
            require_admin(caller)
        except ProxyError as exc:
            return render(exc)
    body = await services.extras["metrics"].render(services.db, int(services.clock.now() * 1000))
    return Response(body, media_type=METRICS_CONTENT_TYPE)
