"""proxy.lanes.deadlines: asyncio.timeout's behaviour (a TimeoutError in place of the body, the
caller's own cancellation left alone), coarse by design, with timers shared per slot."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.lanes import deadlines
from proxy.lanes.deadlines import deadline


async def test_a_body_that_finishes_in_time_is_untouched() -> None:
    async with deadline(5):
        await asyncio.sleep(0.01)
    # Nothing left pending that could cancel this task later.
    await asyncio.sleep(0.06)


async def test_an_overrun_becomes_timeout_error_within_the_slack() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with deadline(0.2):
            await asyncio.sleep(10)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.2 + deadlines.RESOLUTION + 0.2


async def test_the_callers_own_cancellation_stays_a_cancellation() -> None:
    async def guarded() -> None:
        async with deadline(10):
            await asyncio.sleep(10)

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_deadlines_ending_together_share_one_timer() -> None:
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    real_call_at = loop.call_at

    def counting_call_at(when, callback, *args):  # type: ignore[no-untyped-def]
        scheduled.append(when)
        return real_call_at(when, callback, *args)

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:

        async def one() -> None:
            async with deadline(30):
                await asyncio.sleep(0)

        await asyncio.gather(*(one() for _ in range(200)))
    finally:
        del loop.call_at
    # 30 s deadlines end on 0.3 s slots: 200 concurrent ones need one or two timers.
    assert 1 <= len(scheduled) <= 2


async def test_nested_deadlines_the_inner_one_fires_first() -> None:
    reached: list[str] = []

    async def nested() -> None:
        async with deadline(10):
            try:
                async with deadline(0.1):
                    await asyncio.sleep(10)
            except TimeoutError:
                reached.append("inner timed out")
                raise

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await nested()
    assert reached == ["inner timed out"]
    assert time.monotonic() - started < 1


async def test_memory_follows_the_open_deadlines_only() -> None:
    async def one() -> None:
        async with deadline(600):
            await asyncio.sleep(0)

    await asyncio.gather(*(one() for _ in range(100)))
    slots = deadlines._by_loop[asyncio.get_running_loop()]
    assert slots.members == {}
    # The slot's one timer stays scheduled (re-arming it would cost what sharing saves).
    assert 1 <= len(slots.timed) <= 2
