"""The ops page over HTTP: the login form, the session cookie and its attributes, CSRF
tokens, logout, expiry on the proxy's clock, filters and paging of the log, escaping,
and the page's security headers. (What a browser shows is in tests/browser.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.ops.signin import SESSION_TTL_S
from proxy.store.routes import COLUMNS, insert_routes
from tests.browser.ops_stack import ADMIN_KEY, CLIENT_KEY, SECRETS, OpsStack, ops_stack

HTML = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    with ops_stack(tmp_path_factory.mktemp("page")) as stack:

        async def hostile_row() -> None:
            row = {"ts_ms": stack.now_ms - 60_000, "request_id": "req_hostile",
                   "key_name": "team-a", "endpoint": "/v1/chat/completions",
                   "model": 'gpt"><b>bold', "provider": "openai", "lane": "realtime",
                   "reason": HOSTILE, "status": 400, "attempts": 1, "stream": 0}  # fmt: skip
            async with stack.services.db.transaction() as conn:
                await insert_routes(conn, [tuple(row.get(c) for c in COLUMNS)])

        stack.call(hostile_row())
        yield stack


def cookies(response: httpx.Response) -> dict[str, tuple[str, str]]:
    """name -> (value, the attributes as sent, lower-cased)."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        pair, _, attributes = header.partition(";")
        name, _, value = pair.partition("=")
        found[name.strip()] = (value.strip().strip('"'), attributes.lower())
    return found


def login_form(client: httpx.Client) -> tuple[str, str]:
    """(hidden csrf field, login cookie) of a fresh form."""
    form = client.get("/admin/login", headers=HTML)
    assert form.status_code == 200
    field = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert field is not None
    nonce, attributes = cookies(form)["costroute_login"]
    for flag in ("httponly", "secure", "samesite=strict", "path=/admin/login"):
        assert flag in attributes
    return field.group(1), nonce


def login(client: httpx.Client, key: str = ADMIN_KEY) -> httpx.Response:
    csrf, nonce = login_form(client)
    return client.post(
        "/admin/login",
        data={"key": key, "csrf": csrf},
        headers={**HTML, "cookie": f"costroute_login={nonce}"},
    )


def session_of(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/admin"
    token, attributes = cookies(response)["costroute_ops"]
    for flag in ("httponly", "secure", "samesite=strict", "path=/admin"):
        assert flag in attributes
    return token


def page(client: httpx.Client, token: str, path: str = "/admin") -> httpx.Response:
    return client.get(path, headers={**HTML, "cookie": f"costroute_ops={token}"})


def log_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', html)]


# --- login, session, logout --------------------------------------------------------------


def test_a_browser_logs_in_with_the_form_and_gets_a_session_cookie(ops: OpsStack) -> None:
    with ops.http(None) as browser:
        first = browser.get("/admin", headers=HTML)
        assert first.status_code == 303
        assert first.headers["location"] == "/admin/login"
        response = login(browser)
        token = session_of(response)
        assert len(token) >= 40
        for secret in SECRETS:
            assert secret not in str(response.headers)
        shown = page(browser, token)
        assert shown.status_code == 200
        assert 'Signed in as <b id="who">ops</b>' in shown.text
        for section in ("alerts", "savings", "queue", "batches", "log"):
            assert f'<section id="{section}"' in shown.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', shown.text)
        assert csrf is not None
        assert csrf.group(1) != token
        # The JSON API stays bearer-only: a cookie is no API credential.
        api = browser.get("/admin/routes", headers={"cookie": f"costroute_ops={token}"})
        assert api.status_code == 401
        # Logging out needs the session's form token.
        jar = {"cookie": f"costroute_ops={token}"}
        forged = browser.post("/admin/logout", data={"csrf": "guess"}, headers={**HTML, **jar})
        assert forged.status_code == 403
        assert page(browser, token).status_code == 200
        out = browser.post("/admin/logout", data={"csrf": csrf.group(1)}, headers={**HTML, **jar})
        assert out.status_code == 303
        assert out.headers["location"] == "/admin/login"
        value, attributes = cookies(out)["costroute_ops"]
        assert value == "" or "max-age=0" in attributes
        assert page(browser, token).headers["location"] == "/admin/login"
        assert (
            browser.get("/admin", headers={"cookie": f"costroute_ops={token}"}).status_code == 401
        )


def test_every_login_gets_its_own_session(ops: OpsStack) -> None:
    with ops.http(None) as browser:
        one, two = session_of(login(browser)), session_of(login(browser))
        assert one != two
        assert page(browser, one).status_code == page(browser, two).status_code == 200
        assert page(browser, "forged-token").status_code == 303


@pytest.mark.parametrize(
    ("key", "status", "words"),
    [
        ("", 401, "Enter an admin key."),
        ("sk-wrong", 401, "Incorrect key."),
        (CLIENT_KEY, 403, "That key is not an admin key."),
    ],
)
def test_a_refused_login_shows_the_form_again(
    ops: OpsStack, key: str, status: int, words: str
) -> None:
    with ops.http(None) as browser:
        response = login(browser, key)
        assert response.status_code == status
        assert words in response.text
        assert "costroute_ops" not in cookies(response)
        assert 'name="csrf"' in response.text  # a fresh form to try again


def test_login_needs_the_form_token_of_its_own_cookie(ops: OpsStack) -> None:
    with ops.http(None) as browser:
        csrf, nonce = login_form(browser)
        other_csrf, _ = login_form(browser)
        for field, cookie in ((csrf, None), (other_csrf, nonce), ("", nonce)):
            headers = {**HTML, "cookie": f"costroute_login={cookie}"} if cookie else HTML
            response = browser.post(
                "/admin/login", data={"key": ADMIN_KEY, "csrf": field}, headers=headers
            )
            assert response.status_code == 403
            assert "The form expired" in response.text
            assert "costroute_ops" not in cookies(response)
        # An API client gets the envelope.
        response = browser.post("/admin/login", data={"key": ADMIN_KEY, "csrf": csrf})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "csrf_failed"


def test_login_forms_are_small(ops: OpsStack) -> None:
    with ops.http(None) as browser:
        response = browser.post("/admin/login", data={"key": "k" * 10_000}, headers=HTML)
        assert response.status_code == 413


def test_sessions_expire_on_the_proxy_clock(tmp_path: Path) -> None:
    with ops_stack(tmp_path, seed=False) as ops, ops.http(None) as browser:
        token = session_of(login(browser))
        ops.clock.advance(SESSION_TTL_S - 1)
        assert page(browser, token).status_code == 200
        ops.clock.advance(1)
        assert page(browser, token).headers["location"] == "/admin/login"


def test_an_open_proxy_needs_no_login(tmp_path: Path) -> None:
    with ops_stack(tmp_path, seed=False, auth={"keys": []}) as ops, ops.http(None) as browser:
        assert browser.get("/admin/login", headers=HTML).headers["location"] == "/admin"
        shown = browser.get("/admin", headers=HTML)
        assert shown.status_code == 200
        assert 'Signed in as <b id="who">anonymous</b>' in shown.text
        assert 'id="logout"' not in shown.text


# --- the page ------------------------------------------------------------------------------


def test_the_page_filters_and_pages_the_log(ops: OpsStack) -> None:
    with ops.http(ADMIN_KEY) as admin:
        everything = admin.get("/admin", headers=HTML).text
        stored = [r["id"] for r in ops.fetch("SELECT id FROM routes ORDER BY id DESC")]
        assert log_ids(everything) == stored[:50]
        assert "50 requests shown (more below)" in everything
        batch = admin.get("/admin", params={"lane": "batch", "key": "team-a"}, headers=HTML).text
        expected = ops.fetch(
            "SELECT id FROM routes WHERE lane = 'batch' AND key_name = 'team-a' ORDER BY id DESC"
        )
        assert log_ids(batch) == [r["id"] for r in expected]
        assert 'value="batch"' in batch  # the form keeps the filter
        failed = admin.get("/admin", params={"status": "failed", "since": "24h"}, headers=HTML)
        rows = ops.fetch(
            "SELECT id FROM routes WHERE status >= 400 AND status != 499 AND ts_ms >= ? "
            "ORDER BY id DESC",
            (ops.now_ms - 86_400_000,),
        )
        assert log_ids(failed.text) == [r["id"] for r in rows]
        assert '<option value="24h" selected>' in failed.text
        older = re.search(r'<a id="older" href="([^"]+)"', everything)
        assert older is not None
        second = admin.get(older.group(1).replace("&amp;", "&"), headers=HTML).text
        assert log_ids(second) == stored[50:100]
        assert 'id="newer"' in second
        assert 'id="newest"' in second
        bad = admin.get("/admin", params={"status": "nope"}, headers=HTML)
        assert bad.status_code == 400
        assert "status" in bad.text


def test_the_page_shows_alerts_chart_queue_and_batches(ops: OpsStack) -> None:
    with ops.http(ADMIN_KEY) as admin:
        html = admin.get("/admin", headers=HTML).text
    kinds = re.findall(r'<li class="(\w+)" data-kind="(\w+)"', html)
    assert sorted(kind for _, kind in kinds) == [
        "batch_failure_rate", "batch_stuck", "queue_age", "webhook_failures",
    ]  # fmt: skip
    assert html.count('<rect class="bar"') == 14
    best = re.search(r'<p id="savings-best">Last 24 hours\. Savings realised: ([^<]*)', html)
    assert best is not None, html
    assert "of the best possible saving" in best.group(1)
    assert 'data-day="2026-01-10"' in html
    assert '<b id="oldest-queued">2h</b>' in html
    assert re.search(r'<tr data-status="submitted"><td>cb_stuck</td>', html)
    assert "batch_prov_stuck" in html


def test_the_page_escapes_what_it_shows_and_forbids_scripts(ops: OpsStack) -> None:
    with ops.http(ADMIN_KEY) as admin:
        response = admin.get("/admin", headers=HTML)
    assert HOSTILE not in response.text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in response.text
    assert "<b>bold" not in response.text
    assert "<script" not in response.text
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp  # so scripts fall back to 'none'
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
