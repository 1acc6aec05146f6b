"""Savings realised: what requests cost, what real time would have cost (the baseline),
and what the cheapest lane each tolerance allowed would have cost (``proxy.costs.best``).

``realised`` sums finished requests (the routing log's final rows) into those three
figures; ``from_log`` does it for a period of real traffic, taking each provider's median
batch turnaround in the period as its nominal one (``best.DEFAULT_TURNAROUND`` when the
period has no finished batch). ``costroute report``, the ops page and ``costroute
simulate`` all read the same figures from here.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapters.registry import capabilities
from proxy.costs.best import Best, Call, Nominal, best_costs, lanes_allowed
from proxy.costs.pricing import Pricer
from proxy.settings import Settings
from proxy.store import outcomes
from proxy.store.db import Database
from proxy.store.outcomes import Served


@dataclass(frozen=True, slots=True)
class Realised:
    requests: int  # finished with a price
    actual_usd: float
    baseline_usd: float
    best_usd: float
    unpriced: int = 0  # finished without a known price (left out of the sums)

    @property
    def saved_usd(self) -> float:
        return self.baseline_usd - self.actual_usd

    @property
    def possible_usd(self) -> float:
        return self.baseline_usd - self.best_usd

    @property
    def realised(self) -> float | None:
        """Share of the best possible saving taken (None when nothing could be saved)."""
        if self.possible_usd <= 1e-12:
            return None
        return self.saved_usd / self.possible_usd

    def to_json(self) -> dict[str, object]:
        share = self.realised
        return {
            "requests": self.requests,
            "unpriced": self.unpriced,
            "cost_usd": round(self.actual_usd, 6),
            "baseline_usd": round(self.baseline_usd, 6),
            "best_usd": round(self.best_usd, 6),
            "saved_usd": round(self.saved_usd, 6),
            "best_saving_usd": round(self.possible_usd, 6),
            "realised_pct": None if share is None else round(100 * share, 2),
        }


@dataclass(frozen=True, slots=True)
class Prefix:
    """A request's shared prefix, when the caller knows it (a simulated workload)."""

    group: str
    tokens: int


def call_of(
    row: Served,
    settings: Settings,
    *,
    received_at: float | None = None,
    tolerance: float | None = None,
    prefix: Prefix | None = None,
) -> Call | None:
    """The best's view of one finished request; ``None`` when it cannot be priced (no
    usage, or a model no longer configured)."""
    if row.model not in settings.models or row.prompt_tokens is None or row.provider is None:
        return None
    config = settings.models[row.model]
    provider = settings.providers.get(config.provider)
    if provider is None:
        return None
    batch_ok, flex_ok = lanes_allowed(settings, row.model, row.endpoint)
    explicit = row.lane.endswith("+cache")
    cached = 0 if explicit else (row.cached_tokens or 0)
    cacheable, group = 0, None
    if capabilities(provider.type).context_cache:
        if prefix is not None:
            cacheable, group = prefix.tokens, prefix.group
        elif explicit and row.cache_name:
            cacheable, group = row.cached_tokens or 0, row.cache_name
    return Call(
        provider=config.provider,
        provider_type=provider.type,
        model=settings.upstream_model(row.model),
        received_at=row.received_ms / 1000 if received_at is None else received_at,
        tolerance=row.tolerance_s if tolerance is None else tolerance,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens or 0,
        cached_tokens=cached,
        batch_ok=batch_ok,
        flex_ok=flex_ok,
        cacheable_tokens=cacheable,
        cache_group=group,
    )


def realised(
    rows: Sequence[Served], calls: Sequence[Call | None], pricer: Pricer, nominal: Nominal
) -> tuple[Realised, list[Best | None]]:
    """The sums over finished, priced requests, and each row's best (aligned with rows)."""
    indexed = [(i, c) for i, c in enumerate(calls) if c is not None]
    bests_found = best_costs([c for _, c in indexed], pricer, nominal)
    bests: list[Best | None] = [None] * len(rows)
    for (i, _), found in zip(indexed, bests_found, strict=True):
        bests[i] = found
    actual = baseline = best_total = 0.0
    counted = unpriced = 0
    for row, best in zip(rows, bests, strict=True):
        if row.cost_usd is None or row.baseline_usd is None or best is None:
            if row.status == 200:
                unpriced += 1
            continue
        counted += 1
        actual += row.cost_usd
        baseline += row.baseline_usd
        # A request is never credited with more than was possible for it: the best is
        # a bound, so it is never above what costroute paid.
        best_total += min(best.cost, row.cost_usd)
    return Realised(counted, actual, baseline, best_total, unpriced), bests


def nominal_from(turnarounds: Mapping[str, Sequence[float]]) -> Nominal:
    return Nominal(
        turnaround={p: statistics.median(values) for p, values in turnarounds.items() if values}
    )


async def from_log(
    db: Database, settings: Settings, pricer: Pricer, *, since_ms: int, until_ms: int
) -> tuple[Realised, Nominal]:
    """Savings realised against the best for the requests that ended in the period."""
    rows = await outcomes.final_rows(db, since_ms=since_ms, until_ms=until_ms)
    nominal = nominal_from(await outcomes.turnarounds(db, since_ms=since_ms, until_ms=until_ms))
    calls = [call_of(row, settings) for row in rows]
    summary, _ = realised(rows, calls, pricer, nominal)
    return summary, nominal
