"""The ticket HTTP surface over ASGI: ownership, listing, cancel, long-poll, admin flush,
and the deferral headers (Idempotency-Key, X-Callback-URL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from proxy.api.tickets import Endpoint, admin_flush_route, ticket_routes
from proxy.context import Caller
from proxy.errors import InvalidHeader, ProxyError, render
from tests.deferral.harness import RUN, Stack, stack

KEYS = {"alice-key": Caller("alice", admin=False), "bob-key": Caller("bob", admin=False),
        "ops-key": Caller("ops", admin=True)}  # fmt: skip


def wrap(name: str, handler: Endpoint) -> Endpoint:
    """A stand-in for the app's authenticating wrapper."""

    async def endpoint(request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        request.state.caller = KEYS[token]
        try:
            return await handler(request)
        except ProxyError as exc:
            return render(exc)

    return endpoint


@pytest.fixture
async def api(tmp_path: Path, db_target: str) -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    async with stack(tmp_path, target=db_target) as s:
        app = Starlette(routes=[*ticket_routes(wrap), admin_flush_route(wrap)])
        app.state.services = s.services
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test") as client:
            yield s, client


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_ticket_is_visible_only_to_its_key(api: tuple[Stack, httpx.AsyncClient]) -> None:
    s, client = api
    _, accepted, _ = await s.enqueue("mine")
    ticket_id = accepted["id"]
    own = await client.get(f"/v1/tickets/{ticket_id}", headers=auth("alice-key"))
    assert own.status_code == 200
    assert own.json() == accepted  # the 202 body is the stored ticket
    for path in (f"/v1/tickets/{ticket_id}", "/v1/tickets/tkt_doesnotexist"):
        other = await client.get(path, headers=auth("bob-key"))
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "not_found"
    stolen = await client.post(f"/v1/tickets/{ticket_id}/cancel", headers=auth("bob-key"))
    assert stolen.status_code == 404
    listed = await client.get("/v1/tickets", headers=auth("bob-key"))
    assert listed.json()["data"] == []


async def test_completed_ticket_carries_the_provider_body(
    api: tuple[Stack, httpx.AsyncClient],
) -> None:
    s, client = api
    ticket_id = (await s.enqueue("answer me"))[1]["id"]
    await s.run_batches()
    body = (await client.get(f"/v1/tickets/{ticket_id}", headers=auth("alice-key"))).json()
    assert body["status"] == "completed"
    assert body["attempts"] == 1
    stored = await s.ticket(ticket_id)
    assert stored.result is not None
    assert body["result"] == httpx.Response(200, content=stored.result).json()
    assert body["result"]["object"] == "chat.completion"


async def test_cancel_rules(api: tuple[Stack, httpx.AsyncClient]) -> None:
    s, client = api
    queued = (await s.enqueue("cancel me"))[1]["id"]
    done = await client.post(f"/v1/tickets/{queued}/cancel", headers=auth("alice-key"))
    assert done.status_code == 200
    assert done.json()["status"] == "cancelled"
    again = await client.post(f"/v1/tickets/{queued}/cancel", headers=auth("alice-key"))
    assert again.status_code == 200  # cancelling twice is harmless
    submitted = (await s.enqueue("too late"))[1]["id"]
    await s.scheduler.flush_once(force=True)
    refused = await client.post(f"/v1/tickets/{submitted}/cancel", headers=auth("alice-key"))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    assert "submitted" in refused.json()["error"]["message"]
    # The cancelled ticket was never sent upstream.
    rows = await s.db.fetchall("SELECT line_count FROM batches")
    assert [row[0] for row in rows] == [1]
    assert (await s.ticket(queued)).batch_id is None
    logged = [r for r in await s.routes() if r["ticket_id"] == queued]
    assert [r["status"] for r in logged] == [202, 499]


async def test_list_filters_and_pages(api: tuple[Stack, httpx.AsyncClient]) -> None:
    s, client = api
    ids = []
    for i in range(5):
        ids.append((await s.enqueue(f"l{i}"))[1]["id"])
        s.clock.advance(1)
    await client.post(f"/v1/tickets/{ids[0]}/cancel", headers=auth("alice-key"))
    first = (await client.get("/v1/tickets?limit=2", headers=auth("alice-key"))).json()
    assert [t["id"] for t in first["data"]] == [ids[4], ids[3]]
    assert first["has_more"] is True
    assert first["last_id"] == ids[3]
    rest = (
        await client.get(f"/v1/tickets?limit=10&after={ids[3]}", headers=auth("alice-key"))
    ).json()
    assert [t["id"] for t in rest["data"]] == [ids[2], ids[1], ids[0]]
    assert rest["has_more"] is False
    cancelled = (await client.get("/v1/tickets?status=cancelled", headers=auth("alice-key"))).json()
    assert [t["id"] for t in cancelled["data"]] == [ids[0]]
    for query, param in [("status=done", "status"), ("limit=0", "limit"), ("limit=x", "limit"),
                         ("limit=101", "limit"), ("after=tkt_nope", "after")]:  # fmt: skip
        bad = await client.get(f"/v1/tickets?{query}", headers=auth("alice-key"))
        assert bad.status_code == 400, query
        assert bad.json()["error"]["param"] == param


async def test_long_poll_wakes_when_the_ticket_ends(api: tuple[Stack, httpx.AsyncClient]) -> None:
    s, client = api
    ticket_id = (await s.enqueue("wait for me"))[1]["id"]
    started = time.monotonic()
    poll = asyncio.create_task(
        client.get(f"/v1/tickets/{ticket_id}?wait=30", headers=auth("alice-key"))
    )
    await asyncio.sleep(0.05)
    assert not poll.done()
    await s.run_batches()
    response = await asyncio.wait_for(poll, 10)
    assert response.json()["status"] == "completed"
    assert time.monotonic() - started < 5  # woken, not timed out


async def test_long_poll_returns_the_current_state_after_wait(
    api: tuple[Stack, httpx.AsyncClient],
) -> None:
    s, client = api
    ticket_id = (await s.enqueue("slow"))[1]["id"]
    started = time.monotonic()
    response = await client.get(f"/v1/tickets/{ticket_id}?wait=1", headers=auth("alice-key"))
    assert response.json()["status"] == "queued"
    assert 0.9 < time.monotonic() - started < 5
    too_long = await client.get(f"/v1/tickets/{ticket_id}?wait=61", headers=auth("alice-key"))
    assert too_long.status_code == 400
    assert too_long.json()["error"]["param"] == "wait"


async def test_admin_flush(api: tuple[Stack, httpx.AsyncClient]) -> None:
    s, client = api
    ticket_id = (await s.enqueue("flush me"))[1]["id"]
    denied = await client.post("/admin/flush", headers=auth("alice-key"))
    assert denied.status_code == 403
    assert (await s.ticket(ticket_id)).status == "queued"
    flushed = await client.post("/admin/flush", headers=auth("ops-key"))
    assert flushed.status_code == 200
    summary = flushed.json()
    assert summary["object"] == "flush"
    assert summary["tickets"] == 1
    assert len(summary["batches"]) == 1
    assert (await s.ticket(ticket_id)).status == "submitted"
    s.clock.advance(RUN)
    await s.scheduler.poll_once()
    assert (await s.ticket(ticket_id)).status == "completed"


async def test_idempotency_key_returns_the_same_ticket(
    api: tuple[Stack, httpx.AsyncClient],
) -> None:
    s, _ = api
    key = {"Idempotency-Key": "order-42"}
    status, first, _ = await s.enqueue("once", headers=key)
    assert status == 202
    results = await asyncio.gather(*(s.enqueue("once", headers=key) for _ in range(5)))
    assert {body["id"] for _, body, _ in results} == {first["id"]}
    assert all(headers.get("idempotent-replayed") == "true" for _, _, headers in results)
    other = (await s.enqueue("once", headers=key, key="bob"))[1]["id"]
    assert other != first["id"]
    rows = await s.db.fetchall("SELECT COUNT(*) FROM tickets")
    assert rows[0][0] == 2
    await s.run_batches()
    # Replays after completion still return the one ticket, now completed.
    _, replay, _ = await s.enqueue("once", headers=key)
    assert (replay["id"], replay["status"]) == (first["id"], "completed")


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ({"Idempotency-Key": "x" * 256}, "Idempotency-Key"),
        ({"Idempotency-Key": "has space"}, "Idempotency-Key"),
        ({"X-Callback-URL": "https://evil.test/steal"}, "X-Callback-URL"),
        ({"X-Callback-URL": "file:///etc/passwd"}, "X-Callback-URL"),
    ],
)
async def test_bad_deferral_headers_queue_nothing(
    api: tuple[Stack, httpx.AsyncClient], headers: dict[str, str], param: str
) -> None:
    s, _ = api
    with pytest.raises(InvalidHeader) as caught:
        await s.enqueue("rejected", headers=headers)
    assert caught.value.param == param
    rows = await s.db.fetchall("SELECT COUNT(*) FROM tickets")
    assert rows[0][0] == 0
