"""Isolation: a key sees only its own tickets (get, wait, cancel, list, idempotency,
webhooks); every admin route refuses non-admin keys; ticket ids cannot be guessed."""

from __future__ import annotations

import collections
import itertools
import math
import re
import time
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from proxy.store.jobs import new_ticket_id
from tests.hardening.stack import ADMIN, CLIENT_A, CLIENT_B, HardStack, hard_stack

TICKET_ID = re.compile(r"tkt_[A-Za-z0-9_-]{32}")


def _error(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_another_key_cannot_see_wait_on_cancel_or_list_a_ticket(fresh: HardStack) -> None:
    with fresh.http(CLIENT_A) as a, fresh.http(CLIENT_B) as b, fresh.http(ADMIN) as ops:
        mine = fresh.defer(a, "isolation: team-a's secret prompt")["id"]
        theirs = fresh.defer(b, "isolation: team-b's prompt")["id"]
        for intruder in (b, ops):  # an admin key is no exception: tickets are per key
            for call in (
                lambda c: c.get(f"/v1/tickets/{mine}"),
                lambda c: c.post(f"/v1/tickets/{mine}/cancel"),
            ):
                response = call(intruder)
                assert response.status_code == 404
                assert _error(response)["code"] == "not_found"
            started = time.monotonic()
            waited = intruder.get(f"/v1/tickets/{mine}", params={"wait": 30})
            assert waited.status_code == 404
            assert time.monotonic() - started < 5  # no waiting on someone else's ticket
            # Every answer about another key's ticket reads exactly like the answer about
            # an id that never existed, so ids cannot be probed.
            ghost = new_ticket_id()
            for method, template, params in (
                ("GET", "/v1/tickets/{}", {}),
                ("POST", "/v1/tickets/{}/cancel", {}),
                ("GET", "/v1/tickets", {"after": "{}"}),
            ):
                answers = []
                for ticket in (mine, ghost):
                    query = {k: v.format(ticket) for k, v in params.items()}
                    response = intruder.request(method, template.format(ticket), params=query)
                    answers.append((response.status_code, response.text.replace(ticket, "X")))
                assert answers[0] == answers[1], answers
            listed = intruder.get("/v1/tickets", params={"limit": 100})
            assert mine not in {t["id"] for t in listed.json()["data"]}
        own = b.get("/v1/tickets", params={"limit": 100}).json()["data"]
        assert {t["id"] for t in own} == {theirs}
        # The ticket survived the attempts on it.
        assert a.get(f"/v1/tickets/{mine}").json()["status"] == "queued"
        assert a.post(f"/v1/tickets/{mine}/cancel").json()["status"] == "cancelled"


def test_the_same_idempotency_key_from_two_keys_makes_two_tickets(fresh: HardStack) -> None:
    headers = {"idempotency-key": "shared-job-7"}
    with fresh.http(CLIENT_A) as a, fresh.http(CLIENT_B) as b:
        first = fresh.defer(a, "idempotency: a", headers=headers)
        other = fresh.defer(b, "idempotency: b", headers=headers)
        again = fresh.defer(a, "idempotency: a again", headers=headers)
        assert other["id"] != first["id"]
        assert again["id"] == first["id"]
        assert b.get(f"/v1/tickets/{first['id']}").status_code == 404
        for ticket in (first["id"], other["id"]):
            owner = a if ticket == first["id"] else b
            assert owner.post(f"/v1/tickets/{ticket}/cancel").status_code == 200


def test_webhooks_carry_only_the_owners_ticket(fresh: HardStack) -> None:
    with fresh.http(CLIENT_A) as a, fresh.http(CLIENT_B) as b:
        mine = fresh.defer(
            a, "webhook isolation a", headers={"x-callback-url": fresh.hook_url("/a")}
        )["id"]
        theirs = fresh.defer(
            b, "webhook isolation b", headers={"x-callback-url": fresh.hook_url("/b")}
        )["id"]
        fresh.flush()
        fresh.run_batches()
        fresh.wait_final(a, mine)
        fresh.wait_final(b, theirs)
        deadline = time.monotonic() + 10
        while len(fresh.receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    bodies = {path: body for path, _, body in fresh.receiver.received}
    assert set(bodies) == {"/a", "/b"}
    assert mine.encode() in bodies["/a"]
    assert theirs.encode() not in bodies["/a"]
    assert theirs.encode() in bodies["/b"]
    assert mine.encode() not in bodies["/b"]
    assert b"webhook isolation b" not in bodies["/a"]


def _admin_routes(stack: HardStack) -> list[tuple[str, str]]:
    """Every (method, path) under /admin in the running app: new admin routes are
    covered without editing this test."""
    found: list[tuple[str, str]] = []
    for route in stack.proxy.app.routes:
        if isinstance(route, Route) and route.path.startswith("/admin"):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            found += [(m, path) for m in sorted((route.methods or set()) - {"HEAD"})]
    return found


def test_every_admin_route_refuses_non_admin_keys(fresh: HardStack) -> None:
    routes = _admin_routes(fresh)
    assert ("POST", "/admin/flush") in routes
    with fresh.http(CLIENT_A) as user, fresh.http(None) as anonymous:
        bad_key = fresh.http("sk-not-a-key")
        for method, path in routes:
            refused = user.request(method, path)
            assert refused.status_code == 403, (method, path, refused.status_code)
            assert _error(refused)["code"] == "permission_denied"
            for client in (anonymous, bad_key):
                unauthenticated = client.request(method, path)
                assert unauthenticated.status_code == 401, (method, path)
                _error(unauthenticated)
        bad_key.close()
    with fresh.http(ADMIN) as ops:
        for method, path in routes:
            assert ops.request(method, path).status_code not in (401, 403), (method, path)


def test_metrics_behind_require_key_refuses_non_admin_keys(tmp_path: Path) -> None:
    with hard_stack(tmp_path, metrics={"require_key": True}) as s:
        user, anonymous, ops = s.http(CLIENT_A), s.http(None), s.http(ADMIN)
        assert user.get("/metrics").status_code == 403
        assert anonymous.get("/metrics").status_code == 401
        assert ops.get("/metrics").status_code == 200


def _ids(count: int) -> list[str]:
    return [new_ticket_id() for _ in range(count)]


def test_ticket_ids_are_long_random_and_unrelated(fresh: HardStack) -> None:
    with fresh.http(CLIENT_A) as a:
        issued = [fresh.defer(a, f"id probe {i}")["id"] for i in range(20)]
        for ticket in issued:
            a.post(f"/v1/tickets/{ticket}/cancel")
    sample = issued + _ids(4000)
    assert all(TICKET_ID.fullmatch(t) for t in sample), sample[:3]
    assert len(set(sample)) == len(sample)
    # Issued in sequence, yet no shared prefix beyond chance (no counter, no timestamp).
    ordered = sorted(t[4:] for t in issued)
    common = max(len(_common_prefix(x, y)) for x, y in itertools.pairwise(ordered))
    assert common <= 3
    # 32 characters of a 64-symbol alphabet, used evenly: ~192 bits. A per-position
    # chi-square test over 4000 ids catches a biased or partly constant generator.
    bodies = [t[4:] for t in sample]
    alphabet = sorted({c for t in bodies for c in t})
    assert len(alphabet) == 64
    entropy_bits = 32 * math.log2(len(alphabet))
    assert entropy_bits >= 128
    expected = len(bodies) / 64
    for position in range(32):
        counts = collections.Counter(t[position] for t in bodies)
        chi2 = sum((counts.get(c, 0) - expected) ** 2 / expected for c in alphabet)
        assert chi2 < 140, (position, chi2)  # 63 degrees of freedom: p < 1e-7


def _common_prefix(x: str, y: str) -> str:
    size = 0
    while size < min(len(x), len(y)) and x[size] == y[size]:
        size += 1
    return x[:size]


@pytest.mark.parametrize("path", ["/v1/tickets", "/v1/tickets/x", "/v1/tickets/x/cancel"])
def test_ticket_routes_need_a_key(fresh: HardStack, path: str) -> None:
    with fresh.http(None) as anonymous:
        method = "POST" if path.endswith("cancel") else "GET"
        response = anonymous.request(method, path)
    assert response.status_code == 401
    assert _error(response)["code"] == "invalid_api_key"


def test_the_ops_login_form_gives_no_session_to_a_non_admin_key(fresh: HardStack) -> None:
    html = {"accept": "text/html"}
    with httpx.Client(base_url=fresh.url, headers=html, timeout=30) as browser:
        for key in (CLIENT_A, "sk-not-a-key"):
            form = browser.get("/admin/login")
            nonce = _set_cookie(form, "costroute_login")
            assert nonce is not None
            answer = browser.post(
                "/admin/login",
                data={"key": key, "csrf": nonce},
                headers={"cookie": f"costroute_login={nonce}"},
            )
            assert answer.status_code in (401, 403), answer.status_code
            assert _set_cookie(answer, "costroute_ops") is None
            assert key not in answer.text  # the typed key is not echoed into the page
        page = browser.get("/admin", follow_redirects=False)
        assert page.status_code in (302, 303, 307, 401)
        assert "costroute ops" not in page.text or "log in" in page.text


def _set_cookie(response: httpx.Response, name: str) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0].split("=", 1)[1]
    return None
