"""Coarse deadlines for the request path.

``async with deadline(seconds):`` behaves like ``asyncio.timeout(seconds)`` (the body is
cancelled and ``TimeoutError`` raised in its place) but ends on a slot boundary, rounded
up by at most 1 % of ``seconds`` (and at least ``RESOLUTION``), and shares one event-loop
timer among every deadline that ends in the same slot.

Under uvloop, ``asyncio.timeout`` measured ~13 µs per use (a Python context object plus
a libuv timer started and cancelled), and each request used two; this one measured
~3.5 µs, a set insert and removal, with a timer started only for a slot's first
deadline. The deadlines guarded this way (body upload, whole upstream attempt) are
seconds to minutes long, so the slack is immaterial. A slot's timer is left to fire even
once its deadlines are gone (cancelling it would cost what sharing saves), so at most
~100 timers per distinct deadline length are pending.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from types import TracebackType

RESOLUTION = 0.05

# Per event loop: a slot's end time -> the deadlines that end then (one timer each).
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, set[deadline]]] = (
    weakref.WeakKeyDictionary()
)


class deadline:
    __slots__ = ("_cancelling", "_expired", "_members", "_seconds", "_task")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False
        self._members: set[deadline] | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    async def __aenter__(self) -> deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("deadline() must be used inside a task")
        loop = asyncio.get_running_loop()
        self._task = task
        self._cancelling = task.cancelling()
        width = max(RESOLUTION, self._seconds / 100)
        end = math.ceil((loop.time() + self._seconds) / width) * width
        slots = _slots.get(loop)
        if slots is None:
            slots = _slots[loop] = {}
        members = slots.get(end)
        if members is None:
            members = slots[end] = set()
            loop.call_at(end, _expire, slots, end)
        members.add(self)
        self._members = members
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._members is not None:
            self._members.discard(self)
        if not self._expired:
            return
        assert self._task is not None
        # As asyncio.timeout: the cancellation was ours (not the caller's) only if the
        # task's cancel count falls back to where it was when the deadline began.
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def _fire(self) -> None:
        self._expired = True
        assert self._task is not None
        self._task.cancel()


def _expire(slots: dict[float, set[deadline]], end: float) -> None:
    for member in slots.pop(end, ()):
        member._fire()
