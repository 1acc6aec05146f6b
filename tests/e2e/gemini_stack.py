"""The Gemini end-to-end stack: the Gemini emulator and the proxy under uvicorn on loopback
ports, each on its own ManualClock, plus checks that what the proxy sent is valid Gemini.

The two clocks start at the same instant and move independently: advancing only the
emulator's clock makes a cache expire on the provider while the proxy still believes in
it, which is the case the proxy must recover from.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from google.genai import types as genai
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from adapters.clock import ManualClock
from adapters.emulators.gemini.server import GeminiEmulatorConfig
from adapters.emulators.gemini.server import create_app as gemini_emulator
from proxy.app import create_app
from proxy.settings import Settings, parse_settings
from tests.e2e.conftest import CLIENT_KEY, ENV
from tests.sdk_checks import strict
from tests.support import ServerThread

GEMINI_KEY = "gemini-provider-key-aaaa"
GEMINI_KEY_B = "gemini-provider-key-bbbb"
GEMINI_ENV = {**ENV, "GEMINI_API_KEY": GEMINI_KEY, "GEMINI_B_KEY": GEMINI_KEY_B}
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
EMBEDDING = "text-embedding-004"
TTL = 3600

# What a generateContent body may hold at the top level (REST v1beta, camelCase).
_REQUEST_FIELDS = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
}
_CACHE_SHAPE = ("systemInstruction", "tools", "toolConfig")
_GENERATE = (":generateContent", ":streamGenerateContent")


def long_system(tag: str, tokens: int = 1500) -> str:
    """A system prompt of about ``tokens`` tokens (4 characters each), unique per ``tag``
    so tests sharing a stack never share a cache fingerprint."""
    head = f"You are the {tag} assistant of a logistics company. "
    clauses: list[str] = []
    n = 0
    while len(head) + sum(len(c) + 1 for c in clauses) < tokens * 4:
        n += 1
        clauses.append(f"Clause {n} ({tag}): parcels of class {n % 7} ship in {n % 5 + 1} days.")
    return head + " ".join(clauses)


def gemini_settings(
    tmp: Path, gemini_url: str, *, second_provider: bool = True, **overrides: Any
) -> Settings:
    """One Gemini provider (``gemini``, key A) serving flash, pro and an embedding model;
    unless ``second_provider`` is false, a second one (``gemini-b``, key B, the same
    project: the same emulator) serving ``flash-b``."""
    data: dict[str, Any] = {
        "store": {"path": str(tmp / "costroute.db")},
        "server": {"upstream_timeout": "5s"},
        "auth": {"keys": [{"name": "team-a", "key_env": "TEAM_A_KEY"}]},
        "providers": {
            "gemini": {
                "type": "gemini",
                "base_url": gemini_url + "/v1beta",
                "api_key_env": "GEMINI_API_KEY",
            },
            "gemini-b": {
                "type": "gemini",
                "base_url": gemini_url + "/v1beta",
                "api_key_env": "GEMINI_B_KEY",
            },
        },
        "models": {
            FLASH: {"provider": "gemini", "cache_min_tokens": 1024},
            PRO: {"provider": "gemini", "cache_min_tokens": 2048},
            "flash-b": {"provider": "gemini-b", "upstream_model": FLASH, "cache_min_tokens": 1024},
            # The proxy believes in a smaller minimum than the provider enforces (1024).
            "flash-lite-optimist": {
                "provider": "gemini",
                "upstream_model": "gemini-2.5-flash-lite",
                "cache_min_tokens": 256,
            },
            EMBEDDING: {"provider": "gemini", "kind": "embedding"},
        },
        # Two sightings in ten minutes are 12 reads an hour: worth the storage at the
        # flash prices, so the second sighting creates the cache.
        "cache": {"mode": "auto", "min_repeats": 2, "window": "10m", "ttl": f"{TTL}s"},
        "retry": {
            "max_retries": 2,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "max_retry_after": 2,
        },
    }
    if not second_provider:
        del data["providers"]["gemini-b"]
        del data["models"]["flash-b"]
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_settings(data)


@dataclass
class GeminiStack:
    emulator: ServerThread
    proxy: ServerThread
    settings: Settings
    proxy_clock: ManualClock
    emulator_clock: ManualClock
    mark: int = 0
    _request_mark: int = field(default=0)

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def state(self) -> Any:
        return self.emulator.app.state

    def client(self, key: str = CLIENT_KEY, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, **kwargs)

    def http(self, key: str = CLIENT_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=30
        )

    # -- what the emulator received

    def sent(self, contains: str = "", method: str | None = None) -> list[dict[str, Any]]:
        """Recorded emulator requests since ``reset`` whose path contains ``contains``."""
        return [
            r
            for r in list(self.state.requests)[self._request_mark :]
            if contains in r["path"] and (method is None or r["method"] == method)
        ]

    def generations(self) -> list[dict[str, Any]]:
        """The generateContent / streamGenerateContent calls since ``reset``."""
        return [r for r in self.sent() if r["path"].endswith(_GENERATE)]

    def cache_creates(self) -> list[dict[str, Any]]:
        return self.sent("/cachedContents", method="POST")

    def live_caches(self) -> list[Any]:
        """The emulator's unexpired ``cachedContents`` (its CacheEntry values)."""
        entries, _ = self.state.caches.page(1000, "")
        return list(entries)

    def created_name(self, index: int = -1) -> str:
        """The name the emulator gave to a recorded create (found by its display name)."""
        body = self.cache_creates()[index]["json"]
        for entry in self.live_caches():
            if entry.display_name == body["displayName"] and entry.model == body["model"]:
                name: str = entry.name
                return name
        raise AssertionError("no live cache has that display name")

    # -- the routing log

    def routes(self) -> list[dict[str, Any]]:
        services = self.proxy.app.state.services

        async def fetch() -> list[dict[str, Any]]:
            await services.routelog.flush()
            rows = await services.db.fetchall("SELECT * FROM routes ORDER BY id")
            return [dict(row) for row in rows]

        result: list[dict[str, Any]] = self.proxy.call(fetch())
        return result

    def new_routes(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Rows written since ``reset``, once there are ``count`` (rows are written just
        after each response is sent, so a test may be ahead of them)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.routes()[self.mark :]
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.01)

    def reset(self) -> None:
        self.state.faults.clear()
        self._request_mark = len(self.state.requests)
        self.mark = len(self.routes())

    def restart_proxy(self) -> None:
        """Stop the proxy and start a new app on the same settings (same SQLite file, so
        the routing-log mark still holds)."""
        self.proxy.stop()
        app = create_app(self.settings, clock=self.proxy_clock, environ=GEMINI_ENV)
        self.proxy = ServerThread(app).start()


@contextlib.contextmanager
def running(tmp: Path, *, second_provider: bool = True, **overrides: Any) -> Iterator[GeminiStack]:
    emulator_clock = ManualClock(START)
    proxy_clock = ManualClock(START)
    config = GeminiEmulatorConfig(api_keys=frozenset({GEMINI_KEY, GEMINI_KEY_B}))
    emulator = ServerThread(gemini_emulator(config, clock=emulator_clock)).start()
    try:
        settings = gemini_settings(tmp, emulator.url, second_provider=second_provider, **overrides)
        app = create_app(settings, clock=proxy_clock, environ=GEMINI_ENV)
        proxy = ServerThread(app).start()
        stack = GeminiStack(emulator, proxy, settings, proxy_clock, emulator_clock)
        try:
            yield stack
        finally:
            # Both wind down together (the proxy's shutdown never calls the emulator);
            # each uvicorn notices only on its next 0.1 s tick.
            stack.proxy.server.should_exit = True
            emulator.server.should_exit = True
            stack.proxy.stop()
    finally:
        emulator.stop()


# --- asking through the SDK ------------------------------------------------------------


@dataclass
class Answer:
    lane: str  # the x-costroute-lane header
    usage: Any  # openai CompletionUsage
    choice: Any  # the first Choice (whole replies) or the list of chunks (streams)


def ask(
    stack: GeminiStack,
    system: str,
    question: str,
    *,
    mode: str | None = None,
    model: str = FLASH,
    stream: bool = False,
    tools: list[dict[str, Any]] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> Answer:
    """One chat request with the openai SDK (raw SSE when streaming), strictly checked."""
    messages: list[Any] = [
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        *(history or []),
    ]
    headers = {"X-Context-Cache": mode} if mode else {}
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    if not stream:
        raw = stack.client().chat.completions.with_raw_response.create(
            model=model, messages=messages, extra_headers=headers, **extra
        )
        completion = strict(ChatCompletion, raw.http_response.json())
        return Answer(raw.headers["x-costroute-lane"], completion.usage, completion.choices[0])
    body = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    with stack.http() as http:
        response = http.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    events = [event[6:] for event in response.text.split("\n\n") if event]
    assert events[-1] == "[DONE]"
    chunks = [strict(ChatCompletionChunk, json.loads(event)) for event in events[:-1]]
    assert chunks[-1].usage is not None
    return Answer(response.headers["x-costroute-lane"], chunks[-1].usage, chunks)


def cached(answer: Answer) -> int:
    details = answer.usage.prompt_tokens_details
    return int(details.cached_tokens or 0) if details is not None else 0


def used_cache(request: dict[str, Any]) -> str | None:
    """The ``cachedContent`` a recorded generateContent call named, if any."""
    name: str | None = request["json"].get("cachedContent")
    return name


# --- what valid Gemini looks like ------------------------------------------------------


def _validate(model: type[BaseModel], value: Any) -> Any:
    # Through JSON, so base64 ``inlineData.data`` is decoded (and must be valid base64).
    return model.model_validate_json(json.dumps(value))


def assert_valid_generate(body: dict[str, Any]) -> genai.GenerateContentConfig:
    """A generateContent body validates against google-genai's own types (which forbid
    unknown fields) and obeys the cache rule of providers.md §3.6."""
    assert set(body) <= _REQUEST_FIELDS, sorted(set(body) - _REQUEST_FIELDS)
    contents = body["contents"]
    assert contents, "contents is required"
    for turn in contents:
        content = _validate(genai.Content, turn)
        assert content.role in ("user", "model")
        assert content.parts
        for part in content.parts:
            assert part.text != "", "Gemini rejects empty text parts"
    roles = [turn["role"] for turn in contents]
    assert all(a != b for a, b in itertools.pairwise(roles)), roles
    if "cachedContent" in body:
        assert body["cachedContent"].startswith("cachedContents/")
        assert not set(_CACHE_SHAPE) & set(body), "no system/tools next to cachedContent"
    config = {**body.get("generationConfig", {})}
    for key in (*_CACHE_SHAPE, "safetySettings", "cachedContent"):
        if key in body:
            config[key] = body[key]
    parsed: genai.GenerateContentConfig = _validate(genai.GenerateContentConfig, config)
    return parsed


def assert_valid_cache_create(body: dict[str, Any], model: str) -> genai.CreateCachedContentConfig:
    assert body["model"] == f"models/{model}"
    rest = {k: v for k, v in body.items() if k != "model"}
    parsed: genai.CreateCachedContentConfig = _validate(genai.CreateCachedContentConfig, rest)
    for turn in rest.get("contents", []):
        _validate(genai.Content, turn)
    return parsed


def assert_wire(stack: GeminiStack, key: str = GEMINI_KEY) -> None:
    """Every request since ``reset`` is valid Gemini, carries the provider key in
    ``x-goog-api-key`` and nothing of the caller's key."""
    for request in stack.sent():
        headers = request["headers"]
        assert headers.get("x-goog-api-key") in (GEMINI_KEY, GEMINI_KEY_B)
        if key:
            assert headers["x-goog-api-key"] == key
        assert "authorization" not in headers
        assert "key" not in request["query"]  # never in the URL, where logs keep it
        assert CLIENT_KEY not in json.dumps(request)
        path = request["path"]
        if path.endswith(_GENERATE):
            assert_valid_generate(request["json"])
        if path.endswith(":streamGenerateContent"):
            assert request["query"].get("alt") == "sse"
        if path.endswith("/cachedContents") and request["method"] == "POST":
            assert_valid_cache_create(request["json"], request["json"]["model"][7:])


__all__ = [
    "EMBEDDING",
    "FLASH",
    "GEMINI_KEY",
    "GEMINI_KEY_B",
    "PRO",
    "START",
    "TTL",
    "Answer",
    "GeminiStack",
    "ask",
    "assert_valid_cache_create",
    "assert_valid_generate",
    "assert_wire",
    "cached",
    "long_system",
    "running",
    "used_cache",
]
