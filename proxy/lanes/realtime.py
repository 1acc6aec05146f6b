"""Sending a request to a provider now, with the retry policy applied."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from adapters.errors import AdapterError, UpstreamTimeout
from proxy.lanes.deadlines import deadline
from proxy.lanes.retry import retry_delay
from proxy.settings import RetrySettings

T = TypeVar("T")


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetrySettings,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> tuple[T, int]:
    """Run ``call`` until it succeeds or the policy gives up; returns (result, attempts).

    The last ``AdapterError`` is raised with ``attempts`` set on it.
    """
    retries = 0
    while True:
        try:
            return await call(), retries + 1
        except AdapterError as error:
            delay = retry_delay(error, retries_done=retries, policy=policy, jitter=rand())
            if delay is None:
                error.attempts = retries + 1
                raise
            retries += 1
            await sleep(delay)


async def within(seconds: float, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, or ``UpstreamTimeout`` once ``seconds`` have passed."""
    try:
        async with deadline(seconds):
            return await call()
    except TimeoutError:
        raise UpstreamTimeout() from None
