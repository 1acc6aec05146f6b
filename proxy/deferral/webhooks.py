"""Webhook delivery: when a ticket with an ``X-Callback-URL`` reaches a final state,
its ticket object is POSTed there, signed, and retried with backoff.

Signature header (Stripe's shape, so receivers know it)::

    X-Costroute-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

Rules: the host must be on ``[webhooks] allowed_hosts`` (checked at enqueue and again at
delivery); redirects are never followed (a 3xx is a failure); each attempt is bounded in
time (``webhooks.timeout``) and in the response bytes read; a delivery that keeps failing
stops after ``webhooks.max_attempts``. Delivery state lives in the ``webhooks`` table and
never changes the ticket.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from proxy.context import Services
from proxy.errors import InvalidHeader
from proxy.settings import WebhookSettings
from proxy.store import tickets as store
from proxy.store.jobs import ticket_object

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Costroute-Signature"
CALLBACK_HEADER = "X-Callback-URL"
_MAX_URL = 2048
_MAX_RESPONSE_BYTES = 64 * 1024


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance: float = 300) -> bool:
    """What a receiver does: recompute, compare in constant time, reject stale stamps."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failures: 10 s, 40 s, 160 s, ...,
    capped at an hour."""
    return float(min(10 * 4 ** max(attempts - 1, 0), 3600))


def allowed(url: httpx.URL, hosts: Sequence[str]) -> bool:
    host = (url.host or "").lower()
    with_port = f"{host}:{url.port}" if url.port is not None else host
    wanted = {h.lower() for h in hosts}
    return host in wanted or with_port in wanted


def callback_url(
    headers: Mapping[str, str], settings: WebhookSettings, *, enabled: bool
) -> str | None:
    """The validated ``X-Callback-URL`` header, or ``None`` when absent."""
    raw = headers.get(CALLBACK_HEADER.lower())
    if raw is None:
        return None
    if not enabled:
        raise InvalidHeader(CALLBACK_HEADER, "webhooks are not configured on this proxy")
    if len(raw) > _MAX_URL:
        raise InvalidHeader(CALLBACK_HEADER, f"longer than {_MAX_URL} characters")
    try:
        url = httpx.URL(raw.strip())
    except httpx.InvalidURL:
        raise InvalidHeader(CALLBACK_HEADER, "not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidHeader(CALLBACK_HEADER, "must be an absolute http:// or https:// URL")
    if url.userinfo:
        raise InvalidHeader(CALLBACK_HEADER, "must not carry credentials")
    if not allowed(url, settings.allowed_hosts):
        raise InvalidHeader(CALLBACK_HEADER, f"host {url.host!r} is not on webhooks.allowed_hosts")
    return str(url)


def payload(ticket_object: dict[str, Any], max_bytes: int) -> bytes:
    """The ticket as JSON; a result too large to send is left for the receiver to GET."""
    body = orjson.dumps(ticket_object)
    if len(body) <= max_bytes:
        return body
    trimmed = {k: v for k, v in ticket_object.items() if k != "result"}
    trimmed["result_omitted"] = True
    return orjson.dumps(trimmed)


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    *,
    secret: str,
    now: float,
    limit_s: float,
    ticket_id: str,
) -> str | None:
    """One attempt; ``None`` on a 2xx answer, else why it failed."""
    headers = {
        "content-type": "application/json",
        "user-agent": "costroute-webhooks",
        SIGNATURE_HEADER: sign(secret, int(now), body),
        "X-Costroute-Ticket": ticket_id,
    }
    try:
        async with asyncio.timeout(limit_s):
            request = client.build_request("POST", url, content=body, headers=headers)
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                read = 0
                async for chunk in response.aiter_bytes():
                    read += len(chunk)
                    if read > _MAX_RESPONSE_BYTES:
                        break
            finally:
                await response.aclose()
    except TimeoutError:
        return f"no answer within {limit_s:g}s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def client(settings: WebhookSettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(float(settings.timeout)),
        limits=httpx.Limits(max_connections=32),
    )


async def deliver_due(
    services: Services, http: httpx.AsyncClient, secret: str, *, limit: int = 100
) -> int:
    """Attempt every delivery due now, concurrently; returns how many succeeded."""
    # Claimed for twice the delivery timeout: long enough for one attempt to end.
    lease_ms = (2 * services.settings.webhooks.timeout + 30) * 1000
    due = await store.due_webhooks(
        services.db, int(services.clock.now() * 1000), limit, lease_ms=lease_ms
    )
    results = await asyncio.gather(*(_attempt(services, http, secret, *row) for row in due))
    return sum(results)


async def _attempt(
    services: Services, http: httpx.AsyncClient, secret: str, ticket_id: str, url: str, tries: int
) -> bool:
    cfg = services.settings.webhooks
    ticket = await store.get_ticket(services.db, ticket_id)
    now = services.clock.now()
    error: str | None
    if ticket is None or not allowed(httpx.URL(url), cfg.allowed_hosts):
        error, tries = "ticket gone or host no longer allowed", cfg.max_attempts
    else:
        body = payload(ticket_object(ticket), cfg.max_payload_bytes)
        error = await deliver(
            http, url, body, secret=secret, now=now, limit_s=float(cfg.timeout), ticket_id=ticket_id
        )
        tries += 1
    status = "delivered" if error is None else "failed" if tries >= cfg.max_attempts else "pending"
    if status == "failed":
        log.warning("webhook for %s to %s gave up after %d tries: %s", ticket_id, url, tries, error)
    await store.webhook_result(
        services.db,
        ticket_id,
        now_ms=int(now * 1000),
        status=status,
        next_attempt_ms=int((now + backoff(tries)) * 1000),
        error=error,
    )
    return error is None
