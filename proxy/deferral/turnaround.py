"""How long a provider's batches take right now, for the planner.

``batch.min_tolerance`` is a fixed floor; on a slow day a batch takes longer than many
tolerances above it, and a ticket batched then is escalated by the deadline guard and
paid twice over: the real-time call, plus the batch line the provider still runs and
bills (at half price) when it ends. ``costroute simulate`` showed it: under the "slow"
scenario (batches with a median of 6 h, up to 20 h) 288 of the seed guide's 518 batched
requests went that way and cost 1.5x the real-time price each.

So the scheduler keeps each provider's recent turnaround and the planner batches a
request only when its tolerance covers that plus ``batch.deadline_margin``. Which
estimate: a batched request costs 0.5 of real time when its batch is back in time and
1.5 when it is not, so batching pays while the chance of missing is below one half: the
**median** is the threshold (a higher quantile would send requests to real time that
were cheaper batched, and the guard keeps the deadline either way).

The estimate is the Kaplan-Meier median of the turnarounds of batches finished in the
last ``WINDOW`` seconds (at most ``KEEP`` per provider), with the batches still running
as censored samples: a batch running for 5 h says its turnaround is at least that.
Ignoring them would miss a slow day until its batches end; counting their ages as
turnarounds would pull the estimate down with every young batch (or, counting only the
old ones, push it up). Until half the batches seen have ended, the estimate is the
oldest one seen (a lower bound). With no batch at all there is no estimate (right after
start-up), and ``min_tolerance`` alone decides.

The flusher uses the other end: a queued group (waiting for ``max_wait``, or held
behind a live batch by the ``max_active_batches`` pacing) must go while a batch can
still be back before its earliest deadline. Holding it until only the median turnaround
was left missed half the time under the "slow" scenario, so the flusher allows for the
``longest`` recent turnaround (known once a batch of the provider has ended) instead of
``min_tolerance``'s guess, on slow days and fast ones alike.

The poller uses the fastest: a batch younger than 0.8x the fastest recent turnaround is
not polled (each poll is a provider API call; a Gemini batch that takes its nominal
15 minutes was asked about thirty times).

``batch.learn_turnaround = false`` turns all three off.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterable, Mapping, Sequence

WINDOW = 86_400.0
KEEP = 50
QUANTILE = 0.5
FASTEST_SHARE = 0.8


class TurnaroundWatch:
    def __init__(self) -> None:
        self._finished: dict[str, collections.deque[tuple[float, float]]] = {}
        # provider -> expected seconds; read on the request path, so kept ready.
        self.expected: dict[str, float] = {}
        # provider -> the longest recent turnaround (or age of a running batch): how
        # long the flusher must allow for a batch that has to be back in time.
        self.longest: dict[str, float] = {}
        # provider -> the shortest recent turnaround of a finished batch: the poller
        # need not ask about a younger batch (see ``first_poll``).
        self.fastest: dict[str, float] = {}

    def finished(self, provider: str, at: float, seconds: float) -> None:
        """A batch of ``provider`` ended at ``at`` after ``seconds``."""
        found = self._finished.setdefault(provider, collections.deque(maxlen=KEEP))
        found.append((at, max(seconds, 0.0)))

    def refresh(self, now: float, running: Mapping[str, Iterable[float]]) -> None:
        """Recompute every provider's estimate; ``running``: ages (s) of live batches."""
        expected: dict[str, float] = {}
        longest: dict[str, float] = {}
        fastest: dict[str, float] = {}
        for provider in sorted({*self._finished, *running}):
            recent = self._finished.get(provider, collections.deque())
            while recent and recent[0][0] < now - WINDOW:
                recent.popleft()
            done, ages = [s for _, s in recent], list(running.get(provider, ()))
            found = median_turnaround(done, ages)
            if found is not None:
                expected[provider] = found
            if done:  # (running ages alone are lower bounds, not what batches take)
                longest[provider] = max([*done, *ages])
                fastest[provider] = min(done)
        self.expected.clear()
        self.expected.update(expected)
        self.longest.clear()
        self.longest.update(longest)
        self.fastest.clear()
        self.fastest.update(fastest)

    def first_poll(self, provider: str, age: float) -> float:
        """Seconds before a batch of ``provider`` aged ``age`` is worth polling: none
        of its recent batches ended before ``FASTEST_SHARE`` of the fastest one's time.
        A batch picked up later than that is still back before any deadline the
        planner batched for (each covers the median turnaround, never shorter)."""
        fastest = self.fastest.get(provider)
        return 0.0 if fastest is None else max(FASTEST_SHARE * fastest - age, 0.0)


def median_turnaround(done: Sequence[float], running: Sequence[float]) -> float | None:
    """The Kaplan-Meier median of turnarounds ``done`` with ``running`` ages censored."""
    if not done and not running:
        return None
    ended, alive = sorted(done), sorted(running)
    survival = 1.0
    for t in sorted(set(ended)):
        first = bisect.bisect_left(ended, t)
        at_risk = len(ended) - first + len(alive) - bisect.bisect_left(alive, t)
        survival *= 1 - (bisect.bisect_right(ended, t) - first) / at_risk
        if survival <= QUANTILE:
            return t
    return max([*ended, *alive])
