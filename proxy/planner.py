"""The lane decision: pure, no I/O, so it is tested with tables of cases.

``plan(...) -> Decision`` looks at the caller's latency tolerance, the model's configured
capabilities and the provider's price windows, and returns where the request goes and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from proxy.settings import Settings


class Lane(StrEnum):
    REALTIME = "realtime"
    FLEX = "flex"
    BATCH = "batch"
    # Held in the queue until a cheaper price window opens, then sent directly.
    OFFPEAK = "offpeak"


@dataclass(frozen=True, slots=True)
class Decision:
    lane: Lane
    provider: str
    upstream_model: str
    reason: str
    # Unix seconds; set for deferred lanes.
    deadline: float | None = None
    # Unix seconds before which a held request must not be sent (price windows).
    not_before: float | None = None

    @property
    def deferred(self) -> bool:
        return self.lane in (Lane.BATCH, Lane.OFFPEAK)


def plan(
    *,
    model: str,
    endpoint: str,
    tolerance: int | None,
    settings: Settings,
    now: float,
) -> Decision:
    """Choose the lane for one request. ``model`` must be configured; ``tolerance`` is in
    seconds (``None`` or 0: the caller wants the answer now)."""
    config = settings.models[model]
    upstream = config.upstream_model or model
    if not tolerance:
        return Decision(Lane.REALTIME, config.provider, upstream, "no latency tolerance")
    return Decision(
        Lane.REALTIME, config.provider, upstream, "deferral not available: served in real time"
    )
