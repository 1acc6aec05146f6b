"""The end-to-end stack: emulators and the proxy under uvicorn on loopback ports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from adapters.emulators.openai.server import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as openai_emulator
from proxy.app import create_app
from proxy.settings import Settings, parse_settings
from tests.support import ServerThread, free_port

CLIENT_KEY = "sk-client-team-a-0123456789"
OTHER_KEY = "sk-client-team-b-9876543210"
ADMIN_KEY = "sk-admin-ops-5555555555"
PATIENT_KEY = "sk-client-team-c-patient-4242"
OPENAI_KEY = "sk-provider-openai-abcdef"
DEEPSEEK_KEY = "sk-provider-deepseek-abcdef"
ENV = {
    "TEAM_A_KEY": CLIENT_KEY,
    "TEAM_B_KEY": OTHER_KEY,
    "OPS_KEY": ADMIN_KEY,
    "TEAM_C_KEY": PATIENT_KEY,
    "OPENAI_API_KEY": OPENAI_KEY,
    "DEEPSEEK_API_KEY": DEEPSEEK_KEY,
}


def stack_settings(tmp: Path, openai_url: str, deepseek_url: str, **overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "store": {"path": str(tmp / "costroute.db")},
        "server": {"max_body_bytes": 64 * 1024, "upstream_timeout": "5s"},
        "auth": {
            "keys": [
                {"name": "team-a", "key_env": "TEAM_A_KEY"},
                {"name": "team-b", "key_env": "TEAM_B_KEY"},
                {"name": "ops", "key_env": "OPS_KEY", "admin": True},
                {"name": "team-c", "key_env": "TEAM_C_KEY", "default_tolerance": "5m"},
            ]
        },
        "providers": {
            "openai": {
                "type": "openai",
                "base_url": openai_url + "/v1",
                "api_key_env": "OPENAI_API_KEY",
            },
            "deepseek": {
                "type": "deepseek",
                "base_url": deepseek_url,
                "api_key_env": "DEEPSEEK_API_KEY",
            },
        },
        "models": {
            "gpt-4o-mini": {"provider": "openai"},
            "mini-alias": {"provider": "openai", "upstream_model": "gpt-4o-mini"},
            "flex-mini": {"provider": "openai", "upstream_model": "gpt-4o-mini", "flex": True},
            "text-embedding-3-small": {"provider": "openai", "kind": "embedding"},
            "deepseek-flash": {"provider": "deepseek"},
        },
        "retry": {
            "max_retries": 2,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "max_retry_after": 2,
        },
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_settings(data)


@dataclass
class Stack:
    proxy: ServerThread
    openai_emulator: ServerThread
    deepseek_emulator: ServerThread
    settings: Settings
    mark: int = 0

    @property
    def url(self) -> str:
        return self.proxy.url

    def client(self, key: str = CLIENT_KEY, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, **kwargs)

    def http(self, key: str | None = CLIENT_KEY) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    @property
    def openai_state(self) -> Any:
        return self.openai_emulator.app.state

    @property
    def deepseek_state(self) -> Any:
        return self.deepseek_emulator.app.state

    def routes(self) -> list[dict[str, Any]]:
        services = self.proxy.app.state.services

        async def fetch() -> list[dict[str, Any]]:
            await services.routelog.flush()
            rows = await services.db.fetchall("SELECT * FROM routes ORDER BY id")
            return [dict(row) for row in rows]

        result: list[dict[str, Any]] = self.proxy.call(fetch())
        return result

    def new_routes(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The routing-log rows written since ``reset``, once there are ``count`` of them
        (rows are written just after each response is sent, so a test may be ahead)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.routes()[self.mark :]
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.01)

    def reset(self) -> None:
        for state in (self.openai_state, self.deepseek_state):
            state.faults.clear()
            state.requests.clear()
        self.mark = len(self.routes())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    oa = ServerThread(openai_emulator(OpenAIEmulatorConfig(flavour="openai"))).start()
    ds = ServerThread(openai_emulator(OpenAIEmulatorConfig(flavour="deepseek"))).start()
    settings = stack_settings(tmp, oa.url, ds.url)
    proxy = ServerThread(create_app(settings, environ=ENV)).start()
    built = Stack(proxy, oa, ds, settings)
    try:
        yield built
    finally:
        proxy.stop()
        oa.stop()
        ds.stop()


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    stack.reset()
    return stack


__all__ = [
    "ADMIN_KEY",
    "CLIENT_KEY",
    "DEEPSEEK_KEY",
    "OPENAI_KEY",
    "OTHER_KEY",
    "Stack",
    "free_port",
]
