"""Virtual time: a ``ManualClock`` whose ``sleep`` waits for the clock, not the wall.

The engine moves the clock; a coroutine that sleeps (the retry policy's backoff, through
``Services.sleep``) is woken when the clock passes its wake-up time. ``sleeping`` counts
the coroutines parked here, so the engine knows when every task is either done or
waiting for virtual time, and time may move on.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from adapters.clock import ManualClock


class VirtualClock(ManualClock):
    def __init__(self, start: float) -> None:
        super().__init__(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        # Set whenever a coroutine parks here, so a waiting engine re-checks quiescence.
        self.parked = asyncio.Event()

    @property
    def sleeping(self) -> int:
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now() + max(seconds, 0.0), next(self._order), future))
        self.parked.set()
        await future

    def next_wake(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled while asleep
        return self._sleepers[0][0] if self._sleepers else None

    def wake_due(self) -> int:
        """Wake every sleeper whose time has come; returns how many."""
        woken = 0
        while self._sleepers and self._sleepers[0][0] <= self.now():
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
                woken += 1
        return woken
