"""Fixtures for the emulator tests: apps on a ManualClock, raw httpx clients and
official-SDK clients over ``httpx.ASGITransport`` (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette

from adapters.clock import ManualClock
from adapters.emulators.openai.config import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app

KEY = "sk-test-emulator-key-0001"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_app(clock: ManualClock) -> Callable[..., Starlette]:
    def make(**config: Any) -> Starlette:
        return create_app(OpenAIEmulatorConfig(**config), clock=clock)

    return make


@pytest.fixture
def app(make_app: Callable[..., Starlette]) -> Starlette:
    return make_app()


@pytest.fixture
def deepseek_app(make_app: Callable[..., Starlette]) -> Starlette:
    return make_app(flavour="deepseek")


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://openai.test") as c:
        yield c


@pytest.fixture
async def ds_client(deepseek_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(deepseek_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://deepseek.test") as c:
        yield c


def sdk_for(app: Starlette, *, max_retries: int = 0, base: str = "/v1") -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app))
    return openai.AsyncOpenAI(
        base_url=f"http://emulator.test{base}",
        api_key=KEY,
        http_client=http,
        max_retries=max_retries,
    )


@pytest.fixture
async def sdk(app: Starlette) -> AsyncIterator[openai.AsyncOpenAI]:
    client = sdk_for(app)
    yield client
    await client.close()


@pytest.fixture
async def ds_sdk(deepseek_app: Starlette) -> AsyncIterator[openai.AsyncOpenAI]:
    client = sdk_for(deepseek_app, base="")
    yield client
    await client.close()
