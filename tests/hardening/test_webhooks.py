"""Webhooks over real sockets: only allow-listed hosts, signatures a receiver can verify
with nothing but the shared secret, redirects never followed, and every attempt bounded
in time and in the bytes read from the receiver."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from proxy.store import tickets as tstore
from tests.hardening.stack import CLIENT_A, WEBHOOK_SECRET, HardStack


def eventually(check: Callable[[], Any], timeout: float = 10) -> Any:
    """Wait for the scheduler's background loops (0.2 s ticks) to get somewhere."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for the scheduler"
        time.sleep(0.02)


def receiver_verify(header: str, body: bytes, *, now: float) -> bool:
    """What a receiver writes from the README alone (not proxy.deferral.webhooks.verify)."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(fields["t"])
    expected = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return abs(now - timestamp) < 300 and hmac.compare_digest(expected.hexdigest(), fields["v1"])


def _count_tickets(s: HardStack) -> int:
    return int(s.sql("SELECT COUNT(*) FROM tickets")[0][0])


def _finish_with_hook(s: HardStack, path: str) -> str:
    with s.http(CLIENT_A) as a:
        ticket: str = s.defer(a, f"hook {path}", headers={"x-callback-url": s.hook_url(path)})["id"]
        s.flush()
        s.run_batches()
        s.wait_final(a, ticket)
    return ticket


def _state(s: HardStack, ticket: str) -> tuple[str, int, str | None] | None:
    found: tuple[str, int, str | None] | None = s.call(tstore.webhook_state(s.services.db, ticket))
    return found


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{other}/hook",  # the allowed host on another port
        "http://localhost:{port}/hook",  # the same machine under another name
        "http://127.0.0.1:{port}@evil.test/hook",  # credentials trick
        "http://evil.test/?next=127.0.0.1:{port}",
        "http://127.0.0.1.evil.test:{port}/hook",
        "https://evil.test:{port}/hook",
        "file:///etc/passwd",
        "ftp://127.0.0.1:{port}/hook",
        "/relative/hook",
    ],
)
def test_callback_hosts_must_be_allow_listed(fresh: HardStack, url: str) -> None:
    before = _count_tickets(fresh)
    target = url.format(port=fresh.hooks.port, other=fresh.hooks.port + 1)
    with fresh.http(CLIENT_A) as a:
        response = a.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
            headers={"x-latency-tolerance": "4h", "x-callback-url": target},
        )
    assert response.status_code == 400, target
    assert response.json()["error"]["param"] == "X-Callback-URL"
    assert _count_tickets(fresh) == before  # nothing was queued


def test_deliveries_are_signed_and_verifiable_with_the_secret_alone(fresh: HardStack) -> None:
    ticket = _finish_with_hook(fresh, "/signed")
    path, headers, body = eventually(lambda: fresh.receiver.received)[0]
    assert path == "/signed"
    assert receiver_verify(headers["x-costroute-signature"], body, now=time.time())
    assert headers["x-costroute-ticket"] == ticket
    sent = orjson.loads(body)
    assert (sent["id"], sent["status"]) == (ticket, "completed")
    # A tampered body or a stale stamp does not verify.
    assert not receiver_verify(headers["x-costroute-signature"], body + b" ", now=time.time())
    assert not receiver_verify(headers["x-costroute-signature"], body, now=time.time() + 3600)
    # The receiver has the body before the proxy has read the answer and recorded it.
    assert eventually(lambda: _state(fresh, ticket) == ("delivered", 1, None))


def test_redirects_are_never_followed(fresh: HardStack) -> None:
    # The redirect points at the allowed host itself: even there it is not followed.
    fresh.receiver.behaviours.append(("redirect", fresh.hook_url("/trap")))
    ticket = _finish_with_hook(fresh, "/moved")
    state = eventually(lambda: (s := _state(fresh, ticket)) and s[1] >= 1 and s)
    assert state[0] == "pending"
    assert "307" in str(state[2])
    assert [p for p, _, _ in fresh.receiver.received] == ["/moved"]
    # The ticket itself is untouched by a failing webhook.
    with fresh.http(CLIENT_A) as a:
        assert a.get(f"/v1/tickets/{ticket}").json()["status"] == "completed"


def test_a_stalled_receiver_is_cut_off_at_the_timeout(fresh: HardStack) -> None:
    fresh.receiver.behaviours.append(("stall", 3))
    ticket = _finish_with_hook(fresh, "/slow")
    eventually(lambda: fresh.receiver.received)
    started = time.monotonic()
    state = eventually(lambda: (s := _state(fresh, ticket)) and s[1] >= 1 and s, timeout=8)
    assert time.monotonic() - started < 3  # webhooks.timeout is 1s
    assert state[0] == "pending"
    assert "1s" in str(state[2])
    with fresh.http(CLIENT_A) as a:  # the proxy kept serving meanwhile
        assert a.get("/v1/models").status_code == 200


def test_an_endless_answer_is_not_read_to_the_end(fresh: HardStack) -> None:
    fresh.receiver.behaviours.append(("endless",))
    ticket = _finish_with_hook(fresh, "/endless")
    state = eventually(lambda: (s := _state(fresh, ticket)) and s[1] >= 1 and s, timeout=8)
    assert state[0] in ("delivered", "pending")
    # The receiver offered 1 GiB; the proxy stopped reading after a few kilobytes (what
    # the receiver managed to push is bounded by socket buffers, not by the answer).
    assert fresh.receiver.streamed < 32 * 1024 * 1024
