"""Webhooks: signatures, the allow-list, bounded delivery without redirects, retries
with backoff, and a failing webhook never touching its ticket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest

from proxy.deferral.webhooks import (
    SIGNATURE_HEADER,
    backoff,
    callback_url,
    deliver,
    payload,
    sign,
    verify,
)
from proxy.errors import InvalidHeader
from proxy.settings import WebhookSettings
from proxy.store import tickets as tstore
from tests.deferral.harness import RUN, SECRET, Stack, stack

HOOK = "https://hooks.test/costroute"
CFG = WebhookSettings(allowed_hosts=["hooks.test", "127.0.0.1:9000"], secret_env="X")


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"id":"tkt_1","status":"completed"}'
    header = sign("s3cret", 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=")
    assert len(header.split("v1=")[1]) == 64
    assert verify("s3cret", header, body, now=1_700_000_010)
    assert not verify("s3cret", header, body + b" ", now=1_700_000_010)
    assert not verify("other", header, body, now=1_700_000_010)
    assert not verify("s3cret", header, body, now=1_700_001_000)  # stale
    assert not verify("s3cret", "garbage", body, now=1_700_000_010)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.test/x", "http"),
        ("/relative", "http"),
        ("https://evil.test/x", "allowed_hosts"),
        ("https://hooks.test.evil.test/x", "allowed_hosts"),
        ("http://127.0.0.1:9001/x", "allowed_hosts"),
        ("https://user:pw@hooks.test/x", "credentials"),
        ("https://hooks.test/" + "a" * 3000, "longer"),
    ],
)
def test_callback_url_rejections_name_the_header(url: str, why: str) -> None:
    with pytest.raises(InvalidHeader) as caught:
        callback_url({"x-callback-url": url}, CFG, enabled=True)
    assert caught.value.param == "X-Callback-URL"
    assert why in caught.value.message


def test_callback_url_accepted_forms() -> None:
    assert callback_url({}, CFG, enabled=True) is None
    assert callback_url({"x-callback-url": HOOK}, CFG, enabled=True) == HOOK
    assert callback_url({"x-callback-url": "http://HOOKS.test/a?b=1"}, CFG, enabled=True)
    assert callback_url({"x-callback-url": "http://127.0.0.1:9000/cb"}, CFG, enabled=True)
    with pytest.raises(InvalidHeader, match="not configured"):
        callback_url({"x-callback-url": HOOK}, CFG, enabled=False)


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff(n) for n in range(1, 8)]
    assert delays[:3] == [10, 40, 160]
    assert delays == sorted(delays)
    assert delays[-1] == 3600


def test_payload_leaves_out_a_result_too_large_to_send() -> None:
    ticket = {"id": "tkt_1", "status": "completed", "result": {"text": "x" * 500}}
    assert orjson.loads(payload(ticket, 10_000)) == ticket
    small = orjson.loads(payload(ticket, 100))
    assert small == {"id": "tkt_1", "status": "completed", "result_omitted": True}


async def test_deliver_never_follows_redirects_and_bounds_time() -> None:
    seen: list[str] = []
    never = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/redirect":
            return httpx.Response(307, headers={"location": "https://hooks.test/target"})
        if request.url.path == "/slow":
            await never.wait()
        if request.url.path == "/boom":
            return httpx.Response(500)
        return httpx.Response(204)

    # The client even asks to follow redirects: deliver overrides it.
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle), follow_redirects=True) as c:
        args = {"secret": "k", "now": 1_700_000_000.0, "limit_s": 0.05, "ticket_id": "tkt_1"}
        assert await deliver(c, "https://hooks.test/ok", b"{}", **args) is None  # type: ignore[arg-type]
        assert await deliver(c, "https://hooks.test/redirect", b"{}", **args) == "HTTP 307"  # type: ignore[arg-type]
        assert await deliver(c, "https://hooks.test/boom", b"{}", **args) == "HTTP 500"  # type: ignore[arg-type]
        assert "no answer within" in str(await deliver(c, "https://hooks.test/slow", b"{}", **args))  # type: ignore[arg-type]
    assert "https://hooks.test/target" not in seen


async def hooked(s: Stack, content: str = "call me back") -> str:
    status, body, _ = await s.enqueue(content, headers={"X-Callback-URL": HOOK})
    assert status == 202
    return str(body["id"])


async def test_webhook_is_signed_and_carries_the_final_ticket(
    tmp_path: Path, db_target: str
) -> None:
    async with stack(tmp_path, target=db_target) as s:
        ticket_id = await hooked(s)
        assert await s.scheduler.webhooks_once() == 0  # nothing final yet
        await s.run_batches()
        assert await s.scheduler.webhooks_once() == 1
        [request] = s.hooks
        assert str(request.url) == HOOK
        assert request.headers["x-costroute-ticket"] == ticket_id
        body = request.content
        assert verify(SECRET, request.headers[SIGNATURE_HEADER], body, now=s.clock.now())
        sent = orjson.loads(body)
        assert sent["id"] == ticket_id
        assert sent["status"] == "completed"
        assert sent["result"]["object"] == "chat.completion"
        assert await tstore.webhook_state(s.db, ticket_id) == ("delivered", 1, None)
        assert await s.scheduler.webhooks_once() == 0  # delivered once


async def test_failing_webhook_retries_with_backoff_then_gives_up(
    tmp_path: Path, db_target: str
) -> None:
    async with stack(
        tmp_path, target=db_target, hook_answers=[500, 302, 500], webhooks={"max_attempts": 3}
    ) as s:
        ticket_id = await hooked(s)
        await s.run_batches()
        before = await s.ticket(ticket_id)
        assert await s.scheduler.webhooks_once() == 0
        assert await tstore.webhook_state(s.db, ticket_id) == ("pending", 1, "HTTP 500")
        assert await s.scheduler.webhooks_once() == 0  # not due yet: backoff
        assert len(s.hooks) == 1
        s.clock.advance(backoff(1))
        assert await s.scheduler.webhooks_once() == 0
        assert await tstore.webhook_state(s.db, ticket_id) == ("pending", 2, "HTTP 302")
        s.clock.advance(backoff(2))
        await s.scheduler.webhooks_once()
        assert await tstore.webhook_state(s.db, ticket_id) == ("failed", 3, "HTTP 500")
        s.clock.advance(RUN * 100)
        assert await s.scheduler.webhooks_once() == 0
        assert len(s.hooks) == 3
        assert all(str(r.url) == HOOK for r in s.hooks)  # the redirect was not followed
        after = await s.ticket(ticket_id)
        assert after == before  # the ticket never changed


async def test_cancelled_and_failed_tickets_are_delivered_too(
    tmp_path: Path, db_target: str
) -> None:
    async with stack(tmp_path, target=db_target) as s:
        ticket_id = await hooked(s)
        cancelled = await tstore.cancel(s.db, ticket_id, "alice", int(s.clock.now() * 1000))
        assert cancelled is not None
        await s.scheduler.webhooks_once()
        assert orjson.loads(s.hooks[0].content)["status"] == "cancelled"
