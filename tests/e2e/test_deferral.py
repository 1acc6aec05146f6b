"""Deferral end to end: the official openai SDK and httpx -> the proxy under uvicorn ->
the OpenAI emulator (chat + Files/Batches), both on one ManualClock. The proxy's own
loops run (every second of real time); tests move the clock instead of sleeping and
wait on the ticket long-poll."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.clock import ManualClock
from adapters.emulators.openai.batch.emulator import BatchEmulator, BatchEmulatorConfig
from adapters.emulators.openai.batch.lines import LineFault
from adapters.emulators.openai.server import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as openai_emulator
from proxy.app import create_app
from proxy.deferral.webhooks import SIGNATURE_HEADER, verify
from proxy.settings import parse_settings
from tests.sdk_checks import strict
from tests.support import ServerThread

TEAM_A = "sk-deferral-team-a-000000"
TEAM_B = "sk-deferral-team-b-000000"
OPS = "sk-deferral-ops-000000000"
SECRET = "whsec-e2e-deferral"
ENV = {"A": TEAM_A, "B": TEAM_B, "OPS": OPS, "OPENAI": "sk-up", "DS": "sk-ds", "HOOK": SECRET}
RUN = 103.0  # emulator: validate 1 s + run 100 s + finalize 1 s
MESSAGES = [{"role": "user", "content": "Summarise the plot of Hamlet in one line."}]


@dataclass
class Receiver:
    """A webhook endpoint on loopback that records what it is sent."""

    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.seen.append((dict(request.headers), await request.body()))
            self.arrived.set()
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@dataclass
class Deferral:
    proxy: ServerThread
    emulator_server: ServerThread
    clock: ManualClock
    receiver: Receiver
    hook_url: str

    @property
    def emulator(self) -> BatchEmulator:
        batches: BatchEmulator = self.emulator_server.app.state.batches
        return batches

    def sdk(self, key: str = TEAM_A) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.proxy.url + "/v1", api_key=key, max_retries=0)

    def http(self, key: str = TEAM_A) -> httpx.Client:
        return httpx.Client(
            base_url=self.proxy.url, headers={"authorization": f"Bearer {key}"}, timeout=70
        )

    def defer(self, content: str = "hello", key: str = TEAM_A, **headers: str) -> str:
        raw = self.sdk(key).chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": content}],
            extra_headers={"X-Latency-Tolerance": "4h", **headers},
        )
        assert raw.status_code == 202, raw.http_response.text
        return str(raw.http_response.json()["id"])

    def flush(self) -> dict[str, Any]:
        with self.http(OPS) as client:
            response = client.post("/admin/flush")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait(self, ticket_id: str, key: str = TEAM_A, seconds: int = 20) -> dict[str, Any]:
        with self.http(key) as client:
            response = client.get(f"/v1/tickets/{ticket_id}", params={"wait": seconds})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def run(self, ids: list[str]) -> list[dict[str, Any]]:
        """Flush now, let the emulator finish, and wait for every ticket to end."""
        self.flush()
        self.clock.advance(RUN)
        return [self.wait(ticket_id) for ticket_id in ids]

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        services = self.proxy.app.state.services

        async def fetch() -> list[tuple[Any, ...]]:
            return [tuple(row) for row in await services.db.fetchall(sql, params)]

        rows: list[tuple[Any, ...]] = self.proxy.call(fetch())
        return rows

    def routes(self) -> list[dict[str, Any]]:
        services = self.proxy.app.state.services

        async def fetch() -> list[dict[str, Any]]:
            await services.routelog.flush()
            rows = await services.db.fetchall("SELECT * FROM routes ORDER BY id")
            return [dict(row) for row in rows]

        rows: list[dict[str, Any]] = self.proxy.call(fetch())
        return rows


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deferral]:
    tmp: Path = tmp_path_factory.mktemp("deferral")
    clock = ManualClock()
    batch_config = BatchEmulatorConfig(validation_delay=1, processing_time=100, finalize_delay=1)
    emulator = ServerThread(
        openai_emulator(OpenAIEmulatorConfig(), clock=clock, batch_config=batch_config)
    ).start()
    receiver = Receiver()
    hooks = ServerThread(receiver.app()).start()
    settings = parse_settings(
        {
            "store": {"path": str(tmp / "costroute.db")},
            "auth": {"keys": [{"name": "team-a", "key_env": "A"},
                              {"name": "team-b", "key_env": "B"},
                              {"name": "ops", "key_env": "OPS", "admin": True}]},
            "providers": {
                "openai": {"type": "openai", "base_url": emulator.url + "/v1",
                           "api_key_env": "OPENAI", "max_active_batches": 4},
            },
            "models": {
                "gpt-4o-mini": {"provider": "openai"},
                "gpt-4o": {"provider": "openai"},
                "text-embedding-3-small": {"provider": "openai", "kind": "embedding"},
            },
            "batch": {"poll_interval": "1s", "flush_interval": "1s", "max_lines": 5},
            "webhooks": {"allowed_hosts": ["127.0.0.1"], "secret_env": "HOOK"},
            "retry": {"max_retries": 1, "backoff_base": 0.01, "backoff_max": 0.05},
        }
    )  # fmt: skip
    proxy = ServerThread(create_app(settings, clock=clock, environ=ENV)).start()
    try:
        yield Deferral(proxy, emulator, clock, receiver, hooks.url + "/hook")
    finally:
        proxy.stop()
        hooks.stop()
        emulator.stop()


def test_chat_ticket_through_the_sdk(d: Deferral) -> None:
    raw = d.sdk().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Latency-Tolerance": "4h"}
    )
    assert raw.status_code == 202
    accepted = raw.http_response.json()
    ticket_id = accepted["id"]
    assert ticket_id.startswith("tkt_")
    assert raw.headers["location"] == f"/v1/tickets/{ticket_id}"
    assert raw.headers["x-costroute-ticket"] == ticket_id
    assert accepted["object"] == "ticket"
    assert (accepted["status"], accepted["lane"], accepted["model"]) == (
        "queued",
        "batch",
        "gpt-4o-mini",
    )
    assert accepted["deadline"] == accepted["created_at"] + 4 * 3600

    [done] = d.run([ticket_id])
    assert done["status"] == "completed"
    completion = strict(ChatCompletion, done["result"])
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    rows = [r for r in d.routes() if r["ticket_id"] == ticket_id]
    assert [(r["lane"], r["status"]) for r in rows] == [("batch", 202), ("batch", 200)]
    assert rows[1]["prompt_tokens"] == completion.usage.prompt_tokens
    assert rows[1]["cost_usd"] is not None
    assert rows[1]["saved_usd"] > 0  # batch price is half the real-time price
    assert rows[1]["cost_usd"] == pytest.approx(rows[1]["baseline_usd"] / 2)
    stored = d.query(
        "SELECT cost_usd, baseline_usd, saved_usd FROM tickets WHERE id = ?", ticket_id
    )
    assert stored == [(rows[1]["cost_usd"], rows[1]["baseline_usd"], rows[1]["saved_usd"])]


def test_embeddings_ticket(d: Deferral) -> None:
    raw = d.sdk().embeddings.with_raw_response.create(
        model="text-embedding-3-small",
        input=["first", "second"],
        encoding_format="float",  # the SDK's default (base64) would come back as sent
        extra_headers={"X-Latency-Tolerance": "1d"},
    )
    assert raw.status_code == 202
    [done] = d.run([raw.http_response.json()["id"]])
    embeddings = strict(CreateEmbeddingResponse, done["result"])
    assert len(embeddings.data) == 2


def test_per_line_failures_of_both_kinds(d: Deferral) -> None:
    ok, bad, retry = (d.defer(f"line {i}") for i in range(3))
    error = {"message": "blocked", "type": "invalid_request_error", "param": None,
             "code": "content_policy_violation"}  # fmt: skip
    d.emulator.line_faults.add(LineFault(custom_id=bad, status_code=400, error=error))
    d.emulator.line_faults.add(LineFault(custom_id=retry, code="batch_expired"))
    try:
        first = d.run([ok, bad])
        assert [t["status"] for t in first] == ["completed", "failed"]
        assert first[1]["error"] == error
        assert first[1]["attempts"] == 1
        assert d.wait(retry, seconds=0)["status"] == "queued"  # back in the queue
    finally:
        d.emulator.line_faults.clear()
    [again] = d.run([retry])
    assert (again["status"], again["attempts"]) == ("completed", 2)


def test_mixed_models_split_and_max_lines(d: Deferral) -> None:
    mini = [d.defer(f"m{i}") for i in range(7)]
    big = [
        d.sdk()
        .chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"X-Latency-Tolerance": "4h"}
        )
        .http_response.json()["id"]
        for _ in range(2)
    ]
    before = len(d.emulator.batches_state())
    summary = d.flush()
    assert summary["tickets"] == 9
    created = d.emulator.batches_state()[before:]
    # One model per file, at most batch.max_lines (5) lines per file: 5 + 2 + 2.
    assert len(created) == 3
    d.clock.advance(RUN)
    assert {d.wait(t)["status"] for t in mini + big} == {"completed"}
    sizes = sorted(b["request_counts"]["total"] for b in d.emulator.batches_state()[before:])
    assert sizes == [2, 2, 5]


def test_cancel_isolation_and_listing(d: Deferral) -> None:
    mine = d.defer("to cancel")
    with d.http(TEAM_B) as other:
        assert other.get(f"/v1/tickets/{mine}").status_code == 404
        assert other.post(f"/v1/tickets/{mine}/cancel").status_code == 404
        assert mine not in [t["id"] for t in other.get("/v1/tickets").json()["data"]]
    with d.http() as client:
        cancelled = client.post(f"/v1/tickets/{mine}/cancel")
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
        listed = client.get("/v1/tickets", params={"status": "cancelled"}).json()
        assert mine in [t["id"] for t in listed["data"]]
        late = d.defer("submitted already")
        d.flush()
        refused = client.post(f"/v1/tickets/{late}/cancel")
        assert refused.status_code == 409
        with pytest.raises(openai.ConflictError):
            # The SDK maps the envelope to its own error classes.
            d.sdk().post(f"/tickets/{late}/cancel", cast_to=object)
    d.clock.advance(RUN)
    assert d.wait(late)["status"] == "completed"


def test_idempotency_key(d: Deferral) -> None:
    first = d.defer("once only", **{"Idempotency-Key": "invoice-7"})
    again = d.defer("once only", **{"Idempotency-Key": "invoice-7"})
    other_caller = d.defer("once only", key=TEAM_B, **{"Idempotency-Key": "invoice-7"})
    assert again == first
    assert other_caller != first
    d.run([first])
    assert d.wait(other_caller, key=TEAM_B)["status"] == "completed"


def test_deadline_guard(d: Deferral) -> None:
    ticket_id = d.defer("running late")
    d.flush()
    [upstream] = [b for b in d.emulator.batches_state() if b["status"] == "validating"]
    d.emulator.stall(upstream["id"])
    d.clock.advance(4 * 3600 - 14 * 60)  # 14 minutes before the deadline
    done = d.wait(ticket_id)
    assert (done["status"], done["lane"]) == ("completed", "realtime")
    strict(ChatCompletion, done["result"])
    final = [r for r in d.routes() if r["ticket_id"] == ticket_id][-1]
    assert (final["lane"], final["status"]) == ("realtime", 200)
    d.emulator.engine.cancel(d.emulator.engine.batches[upstream["id"]], d.clock.now())


def test_webhook_is_signed(d: Deferral) -> None:
    d.receiver.arrived.clear()
    ticket_id = d.defer("ping me", **{"X-Callback-URL": d.hook_url})
    d.run([ticket_id])
    assert d.receiver.arrived.wait(20)
    headers, body = d.receiver.seen[-1]
    assert verify(SECRET, headers[SIGNATURE_HEADER.lower()], body, now=d.clock.now())
    assert not verify("wrong-secret", headers[SIGNATURE_HEADER.lower()], body, now=d.clock.now())
    sent = httpx.Response(200, content=body).json()
    assert (sent["id"], sent["status"]) == (ticket_id, "completed")


def test_bad_headers_queue_nothing(d: Deferral) -> None:
    with d.http() as client:
        before = len(client.get("/v1/tickets", params={"limit": 100}).json()["data"])
    for headers, param in [
        ({"X-Latency-Tolerance": "soon"}, "X-Latency-Tolerance"),
        (
            {"X-Latency-Tolerance": "4h", "X-Callback-URL": "https://evil.example/x"},
            "X-Callback-URL",
        ),
        ({"X-Latency-Tolerance": "4h", "Idempotency-Key": "x" * 300}, "Idempotency-Key"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            d.sdk().chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, extra_headers=headers
            )
        assert caught.value.body["param"] == param  # type: ignore[index]
    with d.http() as client:
        assert len(client.get("/v1/tickets", params={"limit": 100}).json()["data"]) == before
        assert client.post("/admin/flush").status_code == 403
