"""Where prices come from: genai-prices, the shipped table, the user's table file.

``proxy.costs.pricing`` merges them (its docstring has the precedence).

genai-prices' bundled snapshot is read offline: we build our own ``DataSnapshot`` from the
package data, so neither a network fetch nor another module's ``UpdatePrices`` can change
it. Each model is turned into plain floats once, because ``calc_price`` costs about 120 us
a call and the request path needs a dict hit.

Translated: list prices per 1M tokens (input, cache read, output), date-bounded entries
(``StartDateConstraint``), long-context tiers, and the batch/flex discounts implied by
the ``processing: batch`` and ``service_tier: flex`` price variants (whatever their start
date: genai-prices began recording them in 2026, the discounts are older). Ignored:
``TimeOfDateConstraint`` entries, which know neither weekdays nor dates (see the shipped
table's DeepSeek windows), and non-token prices (web searches, audio, ...).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from proxy.settings import ConfigError, ModelPrice, PriceWindow, ProviderType

_PROVIDER_IDS = {
    "openai": "openai",
    "deepseek": "deepseek",
    "gemini": "google",
    "anthropic": "anthropic",
}
_VARIANTS = {("processing", "batch"): "batch_discount", ("service_tier", "flex"): "flex_discount"}


@dataclass(frozen=True, slots=True)
class Tier:
    """Prices for every token of a request whose prompt is longer than ``above``."""

    above: int
    input: float
    cached_input: float
    output: float


@dataclass(frozen=True, slots=True)
class GenaiModel:
    label: str
    # (start, fields) in genai-prices' list order; fields None: not priced per token.
    entries: tuple[tuple[float, Mapping[str, Any] | None], ...]
    discounts: Mapping[str, float]

    @property
    def starts(self) -> tuple[float, ...]:
        return tuple(start for start, _ in self.entries)

    def fields_at(self, when: float) -> dict[str, Any] | None:
        # genai-prices' rule: the last entry whose start has passed, else the first.
        chosen = self.entries[0][1]
        for start, fields in reversed(self.entries):
            if start <= when:
                chosen = fields
                break
        return None if chosen is None else {**chosen, **self.discounts}


class GenaiPrices:
    def __init__(self) -> None:
        from genai_prices import data, data_snapshot

        self._snapshot = data_snapshot.DataSnapshot(
            providers=data.providers, from_auto_update=False
        )
        self.label = f"genai-prices {version('genai-prices')}"

    def lookup(self, provider_type: str, model: str) -> GenaiModel | None:
        provider_id = _PROVIDER_IDS.get(provider_type)
        if provider_id is None:
            return None
        try:
            _, info = self._snapshot.find_provider_model(
                model.removeprefix("models/"), None, provider_id, None
            )
        except LookupError:
            return None
        entries = _entries(info.prices)
        if not entries:
            return None
        newest = max(entries, key=lambda entry: entry[0])[1]
        return GenaiModel(self.label, tuple(entries), _discounts(info, newest))


def _entries(prices: Any) -> list[tuple[float, dict[str, Any] | None]]:
    from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

    if not isinstance(prices, list):
        return [(-math.inf, _fields(prices))]
    entries: list[tuple[float, dict[str, Any] | None]] = []
    for conditional in prices:
        constraint = conditional.constraint
        if isinstance(constraint, TimeOfDateConstraint):
            continue
        start = -math.inf
        if isinstance(constraint, StartDateConstraint):
            start = datetime.combine(constraint.start_date, time(), UTC).timestamp()
        entries.append((start, _fields(conditional.prices)))
    return entries


def _fields(price: Any) -> dict[str, Any] | None:
    inp, cached, out = price.input_mtok, price.cache_read_mtok, price.output_mtok
    if inp is None:
        return None
    if out is None:  # embeddings
        out = Decimal(0)
    write = getattr(price, "cache_write_mtok", None)
    fields: dict[str, Any] = {
        "input": _base(inp),
        "cached_input": None if cached is None else _base(cached),
        "output": _base(out),
        "tiers": (),
    }
    if write is not None:
        fields["cache_write"] = _base(write)  # genai-prices' writes: the 5-minute price
    thresholds = sorted({t.start for p in (inp, cached, out) for t in getattr(p, "tiers", ())})
    if thresholds:
        fields["tiers"] = tuple(
            Tier(
                above=above,
                input=_at(inp, above),
                cached_input=_at(inp if cached is None else cached, above),
                output=_at(out, above),
            )
            for above in thresholds
        )
    return fields


def _base(price: Any) -> float:
    return float(price.base if hasattr(price, "tiers") else price)


def _at(price: Any, above: int) -> float:
    """The rate of ``price`` for a prompt of ``above + 1`` tokens (cliff tiers)."""
    rate = _base(price)
    for tier in getattr(price, "tiers", ()):
        if tier.start <= above:
            rate = float(tier.price)
    return rate


def _discounts(info: Any, newest: Mapping[str, Any] | None) -> dict[str, float]:
    discounts: dict[str, float] = {}
    if newest is None or not newest["input"]:
        return discounts
    for variant in info.price_variants or ():
        items = tuple(variant.when.items())
        key = _VARIANTS.get(items[0]) if len(items) == 1 else None
        price = variant.prices.input_mtok
        if key is None or price is None:
            continue
        discount = round(1.0 - _base(price) / newest["input"], 4)
        if 0.0 <= discount <= 1.0:
            discounts[key] = discount
    return discounts


# --- the shipped table and the user's table file --------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _DatedWindows(_Model):
    from_: AwareDatetime = Field(alias="from")
    windows: list[PriceWindow]


class _ProviderFacts(_Model):
    batch_discount: float | None = Field(None, ge=0, le=1)
    flex_discount: float | None = Field(None, ge=0, le=1)
    batch_discounts_cached: bool | None = None
    batch: bool | None = None
    flex: bool | None = None
    windows: list[_DatedWindows] = Field(default_factory=list)


class _Entry(_Model):
    provider: ProviderType
    model: str
    from_: AwareDatetime | None = Field(None, alias="from")
    until: AwareDatetime | None = None
    input: float | None = Field(None, ge=0)
    cached_input: float | None = Field(None, ge=0)
    output: float | None = Field(None, ge=0)
    batch_discount: float | None = Field(None, ge=0, le=1)
    flex_discount: float | None = Field(None, ge=0, le=1)
    cache_storage_per_hour: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)
    cache_write_1h: float | None = Field(None, ge=0)
    note: str | None = None


class ShippedTable(_Model):
    checked: date
    providers: dict[ProviderType, _ProviderFacts] = Field(default_factory=dict)
    prices: list[_Entry] = Field(default_factory=list)


def load_shipped_table(text: str | None = None) -> ShippedTable:
    """The table in ``proxy/data/prices.toml`` (or ``text``, for tests)."""
    if text is None:
        text = resources.files("proxy").joinpath("data/prices.toml").read_text("utf-8")
    return ShippedTable.model_validate(tomllib.loads(text))


def load_price_table(path: str | Path) -> dict[str, ModelPrice]:
    """The user's ``[pricing] table`` file: ``[models."name"]`` tables of ``ModelPrice``."""
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"pricing.table: cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"pricing.table: {path}: invalid TOML: {exc}") from None
    models = data.get("models", {})
    table: dict[str, ModelPrice] = {}
    for name, raw in models.items() if isinstance(models, dict) else ():
        try:
            table[name] = ModelPrice.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"{path}: models.{name}.{where}: {first['msg']}") from None
    return table
