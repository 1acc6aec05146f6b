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
~100 timers per distinct deadline length are pending; the sets of open deadlines are
dropped as soon as they empty.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from types import TracebackType

RESOLUTION = 0.05


class _Slots:
    """One event loop's open deadlines by slot end time, and the slots with a timer."""

    __slots__ = ("members", "timed")

    def __init__(self) -> None:
        self.members: dict[float, set[deadline]] = {}
        self.timed: set[float] = set()


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slots] = weakref.WeakKeyDictionary()


class deadline:
    __slots__ = ("_cancelling", "_end", "_expired", "_seconds", "_slots", "_task")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False
        self._slots: _Slots | None = None
        self._end = 0.0
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
        slots = _by_loop.get(loop)
        if slots is None:
            slots = _by_loop[loop] = _Slots()
        members = slots.members.get(end)
        if members is None:
            members = slots.members[end] = set()
            if end not in slots.timed:
                slots.timed.add(end)
                loop.call_at(end, _expire, slots, end)
        members.add(self)
        self._slots, self._end = slots, end
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        slots = self._slots
        if slots is not None:
            members = slots.members.get(self._end)
            if members is not None:
                members.discard(self)
                if not members:
                    # Memory follows the open deadlines; the slot's timer stays scheduled.
                    del slots.members[self._end]
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


def _expire(slots: _Slots, end: float) -> None:
    slots.timed.discard(end)
    for member in slots.members.pop(end, ()):
        member._fire()
