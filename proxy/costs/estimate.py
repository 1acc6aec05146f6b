"""``costroute estimate``: what a steady workload costs in real time and in batch.

Arithmetic is in ``Decimal`` on the prices as written (2.5, not 2.4999...), so the
figures are exact: gpt-4o at $2.50/$10.00 per 1M tokens, 1,000 requests a day of 800
input and 400 output tokens, is $6.00 a day in real time and $3.00 in batch.
Prices come from ``proxy.costs.pricing`` (``--config`` adds the user's overrides); the output
names the sources used. Time-of-day windows are not applied: the estimate is at the base
(off-peak) price and lists the windows.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from proxy.costs.pricing import Pricer, Rates
from proxy.settings import ConfigError, PriceWindow, Settings, load_settings

PERIODS_PER_YEAR = {"day": 365, "month": 12}
_MILLION = Decimal(1_000_000)
_PREFIXES = (
    ("gemini", ("gemini", "models/gemini")),
    ("deepseek", ("deepseek",)),
    ("openai", ("gpt-", "chatgpt", "o1", "o3", "o4", "text-embedding", "davinci", "babbage")),
)


@dataclass(frozen=True, slots=True)
class Estimate:
    model: str
    provider_type: str
    requests: int
    period: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    rates: Rates
    realtime: Decimal
    batch: Decimal | None  # None: the provider has no batch lane
    windows: tuple[PriceWindow, ...] = ()

    @property
    def savings(self) -> Decimal | None:
        return None if self.batch is None else self.realtime - self.batch

    def per_year(self, value: Decimal | None) -> Decimal | None:
        return None if value is None else value * PERIODS_PER_YEAR[self.period]

    def as_dict(self) -> dict[str, Any]:
        def money(value: Decimal | None) -> float | None:
            return None if value is None else float(value)

        return {
            "model": self.model,
            "provider_type": self.provider_type,
            "requests": self.requests,
            "period": self.period,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "realtime_cost": money(self.realtime),
            "batch_cost": money(self.batch),
            "savings": money(self.savings),
            "realtime_cost_per_year": money(self.per_year(self.realtime)),
            "batch_cost_per_year": money(self.per_year(self.batch)),
            "savings_per_year": money(self.per_year(self.savings)),
            "batch_available": self.batch is not None,
            "prices": {
                "input": self.rates.input,
                "cached_input": self.rates.cached_input,
                "output": self.rates.output,
                "batch_discount": self.rates.batch_discount,
            },
            "price_windows": [window.model_dump() for window in self.windows],
            "source": list(self.rates.sources),
        }


def estimate(
    rates: Rates,
    *,
    model: str,
    provider_type: str,
    requests: int,
    period: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    windows: tuple[PriceWindow, ...] = (),
) -> Estimate:
    """Cost per ``period`` of ``requests`` identical requests, real time and batch."""
    price_in, price_cached, price_out = (
        Decimal(repr(rate)) for rate in rates.for_prompt(input_tokens)
    )
    uncached = Decimal(input_tokens - cached_tokens)
    cached, output, n = Decimal(cached_tokens), Decimal(output_tokens), Decimal(requests)
    realtime = n * (uncached * price_in + cached * price_cached + output * price_out) / _MILLION
    batch = None
    if rates.batch:
        keep = 1 - Decimal(repr(rates.batch_discount))
        keep_cached = keep if rates.batch_discounts_cached else Decimal(1)
        tokens = (uncached * price_in + output * price_out) * keep
        batch = n * (tokens + cached * price_cached * keep_cached) / _MILLION
    return Estimate(
        model, provider_type, requests, period, input_tokens, output_tokens, cached_tokens,
        rates, realtime, batch, windows,
    )  # fmt: skip


def render(result: Estimate) -> str:
    r = result.rates
    period = result.period
    lines = [
        f"{result.model} ({result.provider_type}): {result.requests:,} requests a {period}, "
        f"{result.input_tokens:,} input + {result.output_tokens:,} output tokens each"
        + (f" ({result.cached_tokens:,} input tokens cached)" if result.cached_tokens else ""),
        f"prices per 1M tokens: input {_rate(r.input)}, cached input {_rate(r.cached_input)}, "
        f"output {_rate(r.output)}"
        + (f"; batch {r.batch_discount * 100:g}% off" if result.batch is not None else ""),
        f"source: {' + '.join(r.sources)}",
        "",
    ]
    rows = [("", f"per {period}", "per year"), ("real time", *_pair(result, result.realtime))]
    if result.batch is not None:
        rows.append(("batch", *_pair(result, result.batch)))
        rows.append(("saved", *_pair(result, result.savings)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        lines.append(
            f"{row[0].ljust(widths[0])}  {row[1].rjust(widths[1])}  {row[2].rjust(widths[2])}"
        )
    if result.batch is None:
        lines.append(f"batch: {result.provider_type} has no batch lane")
    for window in result.windows:
        lines.append(
            f"price window {window.name}: x{window.multiplier:g} {window.start}-{window.end} UTC "
            f"on {','.join(window.days)} (not included above)"
        )
    return "\n".join(lines)


def _pair(result: Estimate, value: Decimal | None) -> tuple[str, str]:
    return _money(value), _money(result.per_year(value))


def _rate(value: float) -> str:
    return f"${value:,.2f}" if round(value, 2) == value else f"${value:g}"


def _money(value: Decimal | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1 or value == 0:
        return f"${value:,.2f}"
    return f"${value:,.4f}"


# --- the command -------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("estimate", help="real-time vs batch cost of a workload")
    p.add_argument("--model", required=True, help="upstream model (or a configured model)")
    p.add_argument("--requests", required=True, type=_count, help="requests per period (10K, 1M)")
    p.add_argument("--per", choices=tuple(PERIODS_PER_YEAR), default="day")
    p.add_argument("--input-tokens", required=True, type=_count)
    p.add_argument("--output-tokens", required=True, type=_count)
    p.add_argument("--cached-tokens", type=_count, default=0, help="of the input tokens")
    p.add_argument("--provider-type", choices=("openai", "deepseek", "gemini"))
    p.add_argument("--config", help="a config whose [pricing] overrides apply")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config) if args.config else Settings()
    model, provider_type = _resolve_model(settings, args.model, args.provider_type)
    if args.cached_tokens > args.input_tokens:
        raise ConfigError("--cached-tokens: cannot exceed --input-tokens")
    pricer = Pricer.from_settings(settings)
    now = time.time()
    rates = pricer.rates(provider_type, model, now)
    if rates is None:
        print(
            f"costroute: no price known for {provider_type} model {model!r}; "
            f'add [pricing.models."{model}"] to a config and pass --config',
            file=sys.stderr,
        )
        return 1
    provider = next(
        (n for n, p in settings.providers.items() if p.type == provider_type), provider_type
    )
    result = estimate(
        rates,
        model=model,
        provider_type=provider_type,
        requests=args.requests,
        period=args.per,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        cached_tokens=args.cached_tokens,
        windows=pricer.windows(provider, provider_type, now),
    )
    if args.json:
        sys.stdout.write(orjson.dumps(result.as_dict()).decode() + "\n")
    else:
        sys.stdout.write(render(result) + "\n")
    return 0


def _resolve_model(settings: Settings, name: str, provider_type: str | None) -> tuple[str, str]:
    """(upstream model, provider type): a configured model maps to its upstream."""
    if name in settings.models:
        config = settings.models[name]
        return config.upstream_model or name, provider_type or settings.providers[
            config.provider
        ].type
    if provider_type:
        return name, provider_type
    for candidate, prefixes in _PREFIXES:
        if name.lower().startswith(prefixes):
            return name, candidate
    raise ConfigError(f"--model: cannot tell the provider of {name!r}; pass --provider-type")


_COUNT = re.compile(r"([0-9][0-9,_]*)([kKmM]?)")


def _count(text: str) -> int:
    """A non-negative count: ``1000``, ``1,000``, ``10K``, ``1M``."""
    match = _COUNT.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (e.g. 1000, 10K, 1M)")
    value = int(match.group(1).replace(",", "").replace("_", ""))
    return value * {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
