"""Secrets: provider keys, client keys and the webhook secret never appear in logs (at
DEBUG, over a workload with errors), the SQLite files (database, WAL, shared memory),
any response (bodies and headers, errors included), /metrics, the admin pages,
``costroute logs`` / ``costroute report`` output, or anything sent to a webhook; and a
client key is never forwarded upstream."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from proxy.cli.main import main as cli_main
from tests.hardening.stack import (
    ADMIN,
    CLIENT_A,
    CLIENT_B,
    DEEPSEEK_KEY,
    GEMINI_KEY,
    MESSAGES,
    OPENAI_KEY,
    SECRETS,
    HardStack,
    hard_stack,
)


class _Everything(logging.Handler):
    """Every record of every logger, formatted with its traceback and arguments."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(repr(record.args))


@pytest.fixture
def everything_logged() -> Iterator[_Everything]:
    handler = _Everything()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Libraries that the CLI quietens are opened up too: nothing may leak at any level.
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "aiohttp")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


def _find(haystack: bytes, where: str) -> list[str]:
    leaks = []
    for name, secret in SECRETS.items():
        for form in (secret, secret.split("-")[-1]):  # the key, and its random part alone
            if form.encode() in haystack:
                leaks.append(f"{name} found in {where}")
    return leaks


def _transcript(response: httpx.Response) -> bytes:
    head = "".join(f"{k}: {v}\n" for k, v in response.headers.items())
    return f"{response.status_code}\n{head}".encode() + response.content


def _workload(s: HardStack) -> list[httpx.Response]:
    """Successes and failures on every path that handles a key."""
    out: list[httpx.Response] = []
    chat = {"model": "gpt-4o-mini", "messages": MESSAGES}
    with s.http(CLIENT_A) as a, s.http(CLIENT_B) as b, s.http(ADMIN) as ops:
        out.append(a.post("/v1/chat/completions", json=chat))
        out.append(a.post("/v1/chat/completions", json={**chat, "stream": True}))
        out.append(a.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}))
        out.append(b.post("/v1/chat/completions", json={**chat, "model": "deepseek-flash"}))
        out.append(b.post("/v1/chat/completions", json={**chat, "model": "gemini-2.5-flash"}))
        # Wrong, malformed and near-miss keys.
        for header in (
            f"Bearer {CLIENT_A}x",
            f"Bearer {CLIENT_A[:-1]}",
            f"Basic {CLIENT_A}",
            CLIENT_A,
            f"Bearer {OPENAI_KEY}",
        ):
            out.append(s.http(None).post("/v1/chat/completions", json=chat,
                                         headers={"authorization": header}))  # fmt: skip
        out.append(a.post("/v1/chat/completions", json={**chat, "model": "no-such-model"}))
        out.append(a.get("/v1/tickets/tkt_no_such_ticket"))
        # Upstream failures: a provider that refuses our key, 500s, a dropped connection,
        # a broken stream, a timeout.
        for server, model in ((s.openai, "gpt-4o-mini"), (s.deepseek, "deepseek-flash")):
            server.app.state.faults.add(status=401, times=2)
            out.append(a.post("/v1/chat/completions", json={**chat, "model": model}))
            server.app.state.faults.add(status=500, times=2)
            out.append(a.post("/v1/chat/completions", json={**chat, "model": model}))
            server.app.state.faults.add(drop=True, times=2)
            out.append(a.post("/v1/chat/completions", json={**chat, "model": model}))
        s.gemini.app.state.faults.add(status=403, times=2)
        out.append(a.post("/v1/chat/completions", json={**chat, "model": "gemini-2.5-flash"}))
        s.openai.app.state.faults.add(drop_after_events=2)
        out.append(a.post("/v1/chat/completions", json={**chat, "stream": True}))
        for server in (s.openai, s.deepseek, s.gemini):
            server.app.state.faults.clear()  # unused retries' faults
        # Deferred work with a webhook, through a batch with a failing line.
        ticket = s.defer(a, "secret workload", headers={"x-callback-url": s.hook_url("/s")})
        failing = s.defer(a, "secret workload: fails")
        s.batches.line_faults.add(custom_id=failing["id"], status_code=400)
        out.append(ops.post("/admin/flush"))
        s.run_batches()
        s.wait_final(a, ticket["id"])
        out.append(a.get(f"/v1/tickets/{ticket['id']}"))
        out.append(a.get(f"/v1/tickets/{failing['id']}", params={"wait": 5}))
        out.append(a.get("/v1/tickets"))
        deadline = time.monotonic() + 5
        while not s.receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        out.append(ops.get("/metrics"))
        out.append(a.get("/metrics"))
        out += _ops_login(s)
        for route in s.proxy.app.routes:  # the ops pages, whatever they are by now
            methods = (route.methods or set()) if isinstance(route, Route) else set()
            if "GET" in methods and route.path.startswith("/admin") and "{" not in route.path:
                out.append(ops.get(route.path))
    return out


def _cookie(response: httpx.Response, name: str) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0].split("=", 1)[1]
    return None


def _ops_login(s: HardStack) -> list[httpx.Response]:
    """The ops page's browser login, typed keys included: a non-admin key, a wrong one,
    then the admin key; then the page itself through the session cookie. (Cookies are
    sent by hand: they are Secure, and this is plain HTTP on loopback.)"""
    out: list[httpx.Response] = []
    html = {"accept": "text/html"}
    with httpx.Client(base_url=s.url, headers=html, timeout=30) as browser:
        for key in (CLIENT_A, "sk-typo-" + ADMIN[-12:], ADMIN):
            form = browser.get("/admin/login")
            nonce = _cookie(form, "costroute_login")
            out.append(form)
            assert nonce is not None, form.headers
            answer = browser.post(
                "/admin/login",
                data={"key": key, "csrf": nonce},
                headers={"cookie": f"costroute_login={nonce}"},
            )
            out.append(answer)
        session = _cookie(answer, "costroute_ops")
        assert answer.status_code == 303, answer.text
        assert session is not None
        page = browser.get("/admin", headers={"cookie": f"costroute_ops={session}"})
        assert page.status_code == 200, page.status_code
        out.append(page)
    return out


def test_no_secret_anywhere_after_a_workload_with_errors(
    tmp_path: Path, everything_logged: _Everything, capsys: pytest.CaptureFixture[str]
) -> None:
    leaks: list[str] = []
    with hard_stack(tmp_path) as s:
        responses = _workload(s)
        statuses = {r.status_code for r in responses}
        assert {200, 400, 401, 403, 404}.issubset(statuses), statuses
        assert statuses & {500, 502, 503}, statuses  # the error paths really ran
        for response in responses:
            leaks += _find(_transcript(response), f"a response to {response.request.url.path}")
        upstream = [s.openai, s.deepseek, s.gemini]
        for server in upstream:
            for request in server.app.state.requests:
                for name in ("client key a", "client key b", "admin key", "webhook secret"):
                    if SECRETS[name] in repr(request):
                        leaks.append(f"{name} forwarded upstream to {request['path']}")
        for path, headers, body in s.receiver.received:
            leaks += _find(repr(headers).encode() + body, f"the webhook to {path}")
        assert s.receiver.received, "the webhook was never delivered"
        # Read the files while the proxy still holds them open (WAL not yet checkpointed).
        files = sorted(tmp_path.glob("costroute.db*"))
        assert any(f.name.endswith("-wal") for f in files), files
        for file in files:
            leaks += _find(file.read_bytes(), file.name)
    for file in sorted(tmp_path.glob("costroute.db*")):
        leaks += _find(file.read_bytes(), f"{file.name} after shutdown")
    config = tmp_path / "logs.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "costroute.db"}"\n')
    capsys.readouterr()
    for args in (["logs", "--json"], ["logs"], ["report", "--json"], ["report"]):
        stdout = io.StringIO()
        with redirect_stdout(stdout):
            assert cli_main([*args, "--config", str(config), "--since", "1d"]) == 0
        leaks += _find(stdout.getvalue().encode(), f"costroute {' '.join(args)}")
    leaks += _find(capsys.readouterr().err.encode(), "stderr")
    logged = "\n".join(everything_logged.lines)
    assert len(everything_logged.lines) > 20  # logging really was captured
    leaks += _find(logged.encode(), "the logs")
    assert not leaks, "\n".join(leaks)


def test_upstream_requests_carry_the_provider_key_not_the_callers(fresh: HardStack) -> None:
    with fresh.http(CLIENT_A) as a:
        for model in ("gpt-4o-mini", "deepseek-flash", "gemini-2.5-flash"):
            response = a.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES})
            assert response.status_code == 200, response.text
    sent = {
        "openai": fresh.openai.app.state.requests[-1]["headers"].get("authorization"),
        "deepseek": fresh.deepseek.app.state.requests[-1]["headers"].get("authorization"),
        "gemini": fresh.gemini.app.state.requests[-1]["headers"].get("x-goog-api-key"),
    }
    assert sent == {
        "openai": f"Bearer {OPENAI_KEY}",
        "deepseek": f"Bearer {DEEPSEEK_KEY}",
        "gemini": GEMINI_KEY,
    }
