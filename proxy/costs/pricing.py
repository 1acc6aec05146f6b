"""Prices, and the cost, baseline and saving of every request (pure once built).

Where a price comes from (later layers win, field by field):

1. genai-prices' bundled snapshot, read offline (its update functions are never called):
   list prices per 1M tokens (input, cached input, output, long-context tiers) and the
   batch/flex discounts its price variants imply. Time-of-day prices in genai-prices are
   ignored: they know no weekdays and no start dates, so windows come from layer 2.
2. The shipped ``proxy/data/prices.toml``: only what genai-prices lacks or gets wrong
   (provider batch/flex facts, Gemini cache storage per hour, DeepSeek peak windows and
   legacy names), each entry optionally bounded by ``from``/``until``. It sits above
   genai-prices because every entry in it is a deliberate correction; it repeats nothing
   genai-prices gets right, so upgrading genai-prices still updates everything else.
3. The user's ``[pricing] table`` file (``[models."name"]``, the shape of ``ModelPrice``).
4. The user's ``[pricing.models."name"]``. In 3 and 4 a key is an upstream model name,
   optionally qualified by provider type (``"deepseek/deepseek-flash"``), which beats the
   bare name. Only the fields a user wrote count; setting any of input, cached_input or
   output drops the long-context tiers of the layers below.

Prices are keyed by provider type and *upstream* model (a Gemini ``models/`` prefix is
ignored). Price windows: a provider's ``price_windows`` from the config if it has any, else
the shipped windows for its type; ``window_multiplier`` scales the whole price at a moment.

Cost rules, with ``L(t)`` = window multiplier at t x (uncached prompt x input + cached x
cached_input + completion x output) at the prices in force at t. Completion tokens include
reasoning tokens (OpenAI's convention; billed at the output price), so ``reasoning_tokens``
is informational. ``received_at`` defaults to ``at`` (the send time).

============ ============================================= ==============================
lane         actual (at ``at``)                            baseline (at ``received_at``)
============ ============================================= ==============================
realtime     L(at)                                         L(received_at)
offpeak      L(at): sent in the cheaper window             L(received_at): sent at once
flex         L(at) x (1 - flex_discount), cached included  L(received_at)
batch        input, output x (1 - batch_discount); cached  L(received_at)
             too unless ``batch_discounts_cached`` false
X+cache      X's actual + ``cache_storage_usd``            L(received_at) with cached
             (Gemini explicit cache)                       tokens at the full input price
============ ============================================= ==============================

Without ``+cache`` the baseline keeps the cached rate, because the provider's automatic
prefix cache would have applied anyway. ``saved = baseline - actual`` and may be negative
(storage that did not pay off). An unknown model prices as ``None`` with one warning.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import AwareDatetime

from proxy.costs.sources import (
    GenaiModel,
    GenaiPrices,
    ShippedTable,
    Tier,
    load_price_table,
    load_shipped_table,
)
from proxy.costs.windows import (
    NO_DATED_WINDOWS,
    DatedWindows,
    next_cheaper_window_start,
    window_multiplier,
)
from proxy.settings import ModelPrice, PriceWindow, ProviderSettings, Settings

log = logging.getLogger(__name__)

__all__ = [
    "LANES",
    "Cost",
    "Pricer",
    "Rates",
    "Tier",
    "UsageFacts",
    "UsageLike",
    "next_cheaper_window_start",
    "window_multiplier",
]

# "passthrough": the stateless rest of the API forwarded as is, priced as real time.
LANES = frozenset({"realtime", "flex", "batch", "offpeak", "passthrough"})
_PRICE_FIELDS = ("input", "cached_input", "output")
_SOURCED = frozenset(
    {*_PRICE_FIELDS, "cache_storage_per_hour", "cache_write", "cache_write_1h",
     "batch_discount", "flex_discount"}
)  # fmt: skip
_DEFAULTS: dict[str, Any] = {
    "batch_discount": 0.5,
    "flex_discount": 0.5,
    "cache_storage_per_hour": 0.0,
    "cache_write": None,
    "cache_write_1h": None,
    "batch_discounts_cached": True,
    "batch": True,
    "flex": True,
    "tiers": (),
}


class UsageLike(Protocol):
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class UsageFacts:
    """Provider-reported usage. ``cached_tokens`` are part of ``prompt_tokens``;
    ``completion_tokens`` include ``reasoning_tokens``."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Cost:
    actual: float
    baseline: float
    saved: float


@dataclass(frozen=True, slots=True)
class Rates:
    """The resolved price of one model at one moment (USD per 1M tokens)."""

    input: float
    cached_input: float
    output: float
    batch_discount: float
    flex_discount: float
    cache_storage_per_hour: float
    # Anthropic prompt-cache writes (5-minute and 1-hour entries); None: not published.
    cache_write: float | None
    cache_write_1h: float | None
    batch_discounts_cached: bool
    batch: bool
    flex: bool
    tiers: tuple[Tier, ...]
    sources: tuple[str, ...]

    def for_prompt(self, prompt_tokens: int) -> tuple[float, float, float]:
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above:
                return tier.input, tier.cached_input, tier.output
        return self.input, self.cached_input, self.output

    def as_model_price(self) -> ModelPrice:
        return ModelPrice(
            input=self.input,
            output=self.output,
            cached_input=self.cached_input,
            batch_discount=self.batch_discount,
            flex_discount=self.flex_discount,
            cache_storage_per_hour=self.cache_storage_per_hour,
            cache_write=self.cache_write,
            cache_write_1h=self.cache_write_1h,
        )


# --- the pricer --------------------------------------------------------------------------

_Layer = tuple[float, float, Mapping[str, Any], str]  # from, until, fields, source


@dataclass(frozen=True, slots=True)
class _Schedule:
    starts: tuple[float, ...]  # ascending, starts[0] == -inf
    rates: tuple[Rates | None, ...]

    def at(self, when: float) -> Rates | None:
        return self.rates[bisect.bisect_right(self.starts, when) - 1]


def windows_in_force(provider: ProviderSettings, at: float) -> tuple[PriceWindow, ...]:
    """The price windows ``provider`` is charged by at ``at``, as ``Pricer.windows`` has
    them: its config's ``price_windows`` if it has any, else the shipped ones for its type
    (DeepSeek's peak hours). The planner reads them here so that it holds a request for
    the window the request is then priced by, without a ``Pricer`` at hand."""
    if provider.price_windows:
        return tuple(provider.price_windows)
    dated = _shipped_windows().get(provider.type, NO_DATED_WINDOWS)
    return dated.windows[dated.index(at)]


@functools.cache
def _shipped_windows() -> dict[str, DatedWindows]:
    return {
        ptype: DatedWindows.of([(w.from_.timestamp(), tuple(w.windows)) for w in facts.windows])
        for ptype, facts in load_shipped_table().providers.items()
    }


def _ts(value: AwareDatetime | None, default: float) -> float:
    return default if value is None else value.timestamp()


def _user_fields(price: ModelPrice) -> dict[str, Any]:
    fields = {name: getattr(price, name) for name in price.model_fields_set}
    if fields.keys() & set(_PRICE_FIELDS):
        fields.setdefault("tiers", ())
    return fields


class Pricer:
    """Price lookups, precomputed per model on first use (a dict hit after that)."""

    def __init__(
        self,
        *,
        shipped: ShippedTable | None = None,
        user_table: Mapping[str, ModelPrice] | None = None,
        user_models: Mapping[str, ModelPrice] | None = None,
        provider_windows: Mapping[str, Sequence[PriceWindow]] | None = None,
        genai: GenaiPrices | None = None,
    ) -> None:
        self._genai = genai
        self._label = f"prices.toml {shipped.checked.isoformat()}" if shipped else "prices.toml"
        self._user = [(user_table or {}, "pricing.table"), (user_models or {}, "pricing.models")]
        self._config_windows: dict[str, DatedWindows] = {
            name: DatedWindows.of([(-math.inf, tuple(windows))])
            for name, windows in (provider_windows or {}).items()
            if windows
        }
        self._type_windows: dict[str, DatedWindows] = {}
        self._entries: dict[tuple[str, str], list[_Layer]] = {}
        if shipped is not None:
            for ptype, facts in shipped.providers.items():
                self._type_windows[ptype] = DatedWindows.of(
                    [(w.from_.timestamp(), tuple(w.windows)) for w in facts.windows]
                )
            for entry in shipped.prices:
                fields = entry.model_dump(
                    exclude={"provider", "model", "from_", "until", "note"}, exclude_none=True
                )
                if fields.keys() & set(_PRICE_FIELDS):
                    fields.setdefault("tiers", ())
                layer = (_ts(entry.from_, -math.inf), _ts(entry.until, math.inf), fields)
                self._entries.setdefault((entry.provider, entry.model), []).append(
                    (*layer, self._label)
                )
        self._facts: dict[str, dict[str, Any]] = {
            ptype: facts.model_dump(exclude={"windows"}, exclude_none=True)
            for ptype, facts in (shipped.providers.items() if shipped else ())
        }
        self._schedules: dict[tuple[str, str], _Schedule] = {}
        self._warned: set[tuple[str, str]] = set()

    @classmethod
    def from_settings(cls, settings: Settings, *, genai: bool = True) -> Pricer:
        table = settings.pricing.table
        pricer = cls(
            shipped=load_shipped_table(),
            user_table=load_price_table(table) if table else {},
            user_models=settings.pricing.models,
            provider_windows={n: p.price_windows for n, p in settings.providers.items()},
            genai=GenaiPrices() if genai else None,
        )
        for name, model in settings.models.items():
            ptype = settings.providers[model.provider].type
            if not any(pricer._schedule(ptype, model.upstream_model or name).rates):
                pricer._warn(ptype, model.upstream_model or name)
        return pricer

    # -- lookups

    def rates(self, provider_type: str, model: str, at: float) -> Rates | None:
        return self._schedule(provider_type, model).at(at)

    def model_price(
        self, provider_type: str, model: str, at: float | None = None
    ) -> ModelPrice | None:
        """The price in force at ``at`` (default: the newest entry)."""
        rates = self._schedule(provider_type, model).rates
        found = rates[-1] if at is None else self.rates(provider_type, model, at)
        return None if found is None else found.as_model_price()

    def windows(self, provider: str, provider_type: str, at: float) -> tuple[PriceWindow, ...]:
        """The windows that apply to ``provider`` at ``at`` (config first, else shipped)."""
        dated = self._dated_windows(provider, provider_type)
        return dated.windows[dated.index(at)]

    def multiplier(self, provider: str, provider_type: str, at: float) -> float:
        """The price-window multiplier for ``provider`` at ``at``."""
        return self._multiplier(provider, provider_type, at)

    def storage_cost(
        self, provider_type: str, model: str, *, tokens: int, seconds: float, at: float
    ) -> float | None:
        """What keeping ``tokens`` in an explicit cache for ``seconds`` costs."""
        rates = self.rates(provider_type, model, at)
        if rates is None:
            return None
        return tokens * rates.cache_storage_per_hour * seconds / 3600 / 1_000_000

    # -- cost

    def cost(
        self,
        *,
        provider_type: str,
        provider: str,
        model: str,
        usage: UsageLike,
        lane: str,
        at: float,
        received_at: float | None = None,
        cache_storage_usd: float = 0.0,
    ) -> Cost | None:
        """Actual, baseline and saving (see the module docstring); ``None``: unknown model.
        Raises ``ValueError`` for a lane outside ``LANES`` (optionally ``+cache``)."""
        base_lane, plus, suffix = lane.partition("+")
        if base_lane not in LANES or (plus and suffix != "cache"):
            raise ValueError(f"unknown lane {lane!r}")
        received = at if received_at is None else received_at
        sent_rates = self.rates(provider_type, model, at)
        if sent_rates is None:
            self._warn(provider_type, model)
            return None
        base_rates = self.rates(provider_type, model, received) or sent_rates
        prompt = max(usage.prompt_tokens, 0)
        cached = min(max(usage.cached_tokens, 0), prompt)
        completion = max(usage.completion_tokens, 0)
        actual = self._multiplier(provider, provider_type, at) * _lane_cost(
            sent_rates, base_lane, prompt, cached, completion
        )
        baseline_cached = 0 if suffix else cached
        baseline = self._multiplier(provider, provider_type, received) * _lane_cost(
            base_rates, "realtime", prompt, baseline_cached, completion
        )
        actual += cache_storage_usd
        return Cost(actual=actual, baseline=baseline, saved=baseline - actual)

    # -- internals

    def _dated_windows(self, provider: str, provider_type: str) -> DatedWindows:
        found = self._config_windows.get(provider) or self._type_windows.get(provider_type)
        return found or NO_DATED_WINDOWS

    def _multiplier(self, provider: str, provider_type: str, at: float) -> float:
        dated = self._dated_windows(provider, provider_type)
        return dated.multiplier(at)

    def _warn(self, provider_type: str, model: str) -> None:
        if (provider_type, model) not in self._warned:
            self._warned.add((provider_type, model))
            log.warning(
                "no price known for %s model %r: its cost is recorded as null", provider_type, model
            )

    def _schedule(self, provider_type: str, model: str) -> _Schedule:
        if provider_type == "gemini":  # the native API's resource name of the same model
            model = model.removeprefix("models/")
        key = (provider_type, model)
        schedule = self._schedules.get(key)
        if schedule is None:
            schedule = self._schedules[key] = self._build(provider_type, model)
        return schedule

    def _build(self, provider_type: str, model: str) -> _Schedule:
        genai = self._genai.lookup(provider_type, model) if self._genai else None
        layers = list(self._entries.get((provider_type, model), ()))
        for table, source in self._user:
            for key in (model, f"{provider_type}/{model}"):
                if key in table:
                    layers.append((-math.inf, math.inf, _user_fields(table[key]), source))
        edges = {-math.inf, *(genai.starts if genai else ())}
        edges.update(t for start, until, _, _ in layers for t in (start, until) if t != math.inf)
        starts = tuple(sorted(edges))
        facts = self._facts.get(provider_type, {})
        rates = tuple(_resolve(genai, facts, layers, t) for t in starts)
        return _Schedule(starts, rates)


def _resolve(
    genai: GenaiModel | None, facts: Mapping[str, Any], layers: Sequence[_Layer], when: float
) -> Rates | None:
    merged: dict[str, Any] = {**_DEFAULTS, **facts}
    origin: dict[str, str] = {}
    found = genai.fields_at(when) if genai is not None else None
    applicable: list[tuple[Mapping[str, Any], str]] = []
    if genai is not None and found is not None:
        applicable.append((found, genai.label))
    applicable += [(fields, src) for start, until, fields, src in layers if start <= when < until]
    for fields, source in applicable:
        merged.update(fields)
        origin.update((name, source) for name in fields if name in _SOURCED)
    if merged.get("input") is None or merged.get("output") is None:
        return None
    if merged.get("cached_input") is None:
        merged["cached_input"] = merged["input"]
    # The layers whose figures survived, lowest first: what `costroute estimate` shows.
    sources = tuple(dict.fromkeys(source for _, source in applicable if source in origin.values()))
    return Rates(sources=sources, **merged)


def _lane_cost(rates: Rates, lane: str, prompt: int, cached: int, completion: int) -> float:
    """USD for one request on ``lane`` at ``rates``, before the window multiplier."""
    inp, cached_rate, out = rates.for_prompt(prompt)
    if lane == "batch":
        keep = 1.0 - rates.batch_discount
        cached_keep = keep if rates.batch_discounts_cached else 1.0
        total = (prompt - cached) * inp * keep + cached * cached_rate * cached_keep
        return (total + completion * out * keep) / 1_000_000
    keep = 1.0 - rates.flex_discount if lane == "flex" else 1.0
    return keep * ((prompt - cached) * inp + cached * cached_rate + completion * out) / 1_000_000
