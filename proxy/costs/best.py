"""The theoretical best: what each request would have cost at the cheapest lane its
tolerance allows (pure once the pricer is built).

"Savings realised" compares costroute's actual cost with two references: the all-real-time
baseline (every request sent at once at list price) and this best, so an operator reads
``(baseline - actual) / (baseline - best)``: the share of the possible saving taken.

For one request received at ``r`` with tolerance ``T`` (``None``: wanted now), the best is
the cheapest of the lanes that fit, each with perfect packing (no wait for a batch to
fill, no queue limits) and nominal timing:

- real time at the cheapest moment of ``[r, r + T]`` (a provider's price windows: the
  off-peak lane at its best);
- flex, when the model may use it and ``T`` covers the nominal flex latency;
- batch, when the provider has a batch lane for the endpoint, the model may use it, and
  ``T`` covers the provider's nominal batch turnaround; priced when it ends, as costroute
  prices a batch result.

What the operator configured as *permitted* (a model's ``batch``/``flex`` flags) binds the
best too; the timing knobs that are policy (``min_tolerance``, ``max_wait``,
``flex_min_tolerance``, ``deadline_margin``, queue limits) do not: they are what the gap
measures.

Caching: prompt tokens a provider caches by itself (``cached_tokens``) are taken as they
were. Tokens costroute could keep in an explicit cache (``cacheable_tokens``, Gemini's
context cache, one ``cache_group`` per shared prefix) are priced both ways per group:
without a cache, and with one that lives exactly from the group's first to its last
request (the first request pays full price, the others read the prefix at the cached
rate, and storage is paid for the span); the cheaper way counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from adapters.registry import capabilities
from proxy.costs.pricing import Pricer, UsageFacts
from proxy.costs.windows import next_cheaper_window_start
from proxy.settings import Settings

# Nominal timing when nothing better is known (an operator's period with no batches).
DEFAULT_TURNAROUND = 3600.0
DEFAULT_FLEX_LATENCY = 60.0
# A cache is billed for at least this long, even for a burst of requests.
MIN_CACHE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Call:
    """One request, as the best cares about it."""

    provider: str  # configured provider name (its price windows)
    provider_type: str
    model: str  # upstream model: what prices are keyed by
    received_at: float  # Unix seconds
    tolerance: float | None  # seconds; None or 0: wanted now
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # cached by the provider on its own
    batch_ok: bool = False  # a batch lane exists for this endpoint and the model may use it
    flex_ok: bool = False
    cacheable_tokens: int = 0  # a prefix costroute could keep in an explicit cache
    cache_group: str | None = None


@dataclass(frozen=True, slots=True)
class Nominal:
    """How long the cheaper lanes take when nothing goes wrong."""

    turnaround: Mapping[str, float] = field(default_factory=dict)  # provider name -> s
    default_turnaround: float = DEFAULT_TURNAROUND
    flex_latency: float = DEFAULT_FLEX_LATENCY

    def batch_seconds(self, provider: str) -> float:
        return self.turnaround.get(provider, self.default_turnaround)


@dataclass(frozen=True, slots=True)
class Best:
    lane: str  # realtime | offpeak | flex | batch, with "+cache" when a cache paid off
    cost: float  # USD, a group's cache storage included on its first request


def lanes_allowed(settings: Settings, model: str, endpoint: str) -> tuple[bool, bool]:
    """(batch_ok, flex_ok) for a configured model: the provider offers the lane for the
    endpoint and the operator permits the model on it."""
    config = settings.models[model]
    lanes = capabilities(settings.providers[config.provider].type)
    batch_ok = (
        lanes.batch
        and config.batch
        and (lanes.batch_endpoints is None or endpoint in lanes.batch_endpoints)
    )
    flex_ok = lanes.flex and config.flex and endpoint.endswith(("/chat/completions", "/responses"))
    return batch_ok, flex_ok


def best_costs(calls: Sequence[Call], pricer: Pricer, nominal: Nominal) -> list[Best | None]:
    """The best for every call, in order; ``None`` where the model has no known price."""
    out: list[Best | None] = [cheapest(call, pricer, nominal) for call in calls]
    groups: dict[tuple[str, str, str], list[int]] = {}
    for index, call in enumerate(calls):
        if call.cache_group is not None and call.cacheable_tokens > 0:
            key = (call.provider, call.model, call.cache_group)
            groups.setdefault(key, []).append(index)
    for members in groups.values():
        if len(members) < 2:
            continue  # a cache read once never pays for its storage
        cached = _with_cache([calls[i] for i in members], pricer, nominal)
        if cached is None:
            continue
        plain = [out[i] for i in members]
        if any(b is None for b in plain):
            continue
        if sum(c.cost for c in cached) < sum(b.cost for b in plain if b is not None):
            for i, best in zip(members, cached, strict=True):
                out[i] = best
    return out


def cheapest(call: Call, pricer: Pricer, nominal: Nominal) -> Best | None:
    """The cheapest lane for one call on its own (no explicit cache)."""
    options = list(_options(call, pricer, nominal))
    if not options:
        return None
    return min(options, key=lambda b: b.cost)


def _options(call: Call, pricer: Pricer, nominal: Nominal) -> Iterable[Best]:
    tolerance = call.tolerance or 0.0
    start = call.received_at
    latest = start + tolerance
    usage = UsageFacts(call.prompt_tokens, call.completion_tokens, call.cached_tokens)
    when = _cheapest_moment(pricer, call, start, latest)
    lane = "offpeak" if when > start else "realtime"
    price = _price(pricer, call, usage, "realtime", when)
    if price is not None:
        yield Best(lane, price)
    if call.flex_ok and tolerance >= nominal.flex_latency:
        flex_at = _cheapest_moment(pricer, call, start, latest - nominal.flex_latency)
        price = _price(pricer, call, usage, "flex", flex_at)
        if price is not None:
            yield Best("flex", price)
    turnaround = nominal.batch_seconds(call.provider)
    if call.batch_ok and tolerance >= turnaround:
        price = _price(pricer, call, usage, "batch", start + turnaround)
        if price is not None:
            yield Best("batch", price)


def _with_cache(group: Sequence[Call], pricer: Pricer, nominal: Nominal) -> list[Best] | None:
    ordered = sorted(range(len(group)), key=lambda i: group[i].received_at)
    first, last = group[ordered[0]], group[ordered[-1]]
    span = max(last.received_at - first.received_at, MIN_CACHE_SECONDS)
    storage = pricer.storage_cost(
        first.provider_type,
        first.model,
        tokens=first.cacheable_tokens,
        seconds=span,
        at=first.received_at,
    )
    if storage is None:
        return None
    result: list[Best | None] = [None] * len(group)
    for rank, index in enumerate(ordered):
        call = group[index]
        if rank:
            reads = min(call.prompt_tokens, call.cached_tokens + call.cacheable_tokens)
            call = replace(call, cached_tokens=reads)
        best = cheapest(call, pricer, nominal)
        if best is None:
            return None
        extra = storage if rank == 0 else 0.0
        result[index] = Best(best.lane + "+cache", best.cost + extra)
    return [b for b in result if b is not None]


def _price(pricer: Pricer, call: Call, usage: UsageFacts, lane: str, at: float) -> float | None:
    cost = pricer.cost(
        provider_type=call.provider_type,
        provider=call.provider,
        model=call.model,
        usage=usage,
        lane=lane,
        at=at,
        received_at=call.received_at,
    )
    return None if cost is None else cost.actual


def _cheapest_moment(pricer: Pricer, call: Call, start: float, latest: float) -> float:
    """The earliest moment of ``[start, latest]`` with the lowest price multiplier."""
    windows = pricer.windows(call.provider, call.provider_type, start)
    best, when = pricer.multiplier(call.provider, call.provider_type, start), start
    if not windows or latest <= start:
        return when
    moment = start
    while True:
        found = next_cheaper_window_start(windows, moment, latest + 1e-6)
        if found is None or found > latest:
            return when
        factor = pricer.multiplier(call.provider, call.provider_type, found)
        if factor < best - 1e-12:
            best, when = factor, found
        moment = found
