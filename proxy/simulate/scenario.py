"""Scenarios: how the providers behave during a simulated run.

A scenario is a TOML file (shipped ones: ``nominal``, ``slow``; see
``proxy/data/simulate/``). Each ``[providers.NAME]`` table (a configured provider's name,
or a provider type to cover every provider of that type) may set:

======================== ===================================================== ===========
key                      meaning                                               default
======================== ===================================================== ===========
batch_turnaround         ``{median, p95, max}`` durations: each batch takes a  20m/2h/20h
                         log-normal time with that median and 95th
                         percentile, cut at ``max``; the median is the
                         nominal turnaround the theoretical best assumes
expiry_rate              share of batches that never finish in the window      0
                         (they expire and their lines come back)
line_failure_rate        share of batch lines failing with a retryable 500     0
flex_capacity            share of flex calls served (others: 429               1.0
                         ``resource_unavailable``)
flex_latency             a flex call's service time (reported latency; the     45s
                         best's nominal flex latency)
realtime_latency         a real-time call's service time (reported latency)    2s
enqueued_token_limit     ``{model = tokens}``: OpenAI's per-model batch queue   none
                         limit (a batch over it fails validation)
max_live_batches         Gemini's live-batch quota (429 beyond it)             none
price_windows            a provider's real price windows (replaces the         config's
                         config's: the world, not the policy)
======================== ===================================================== ===========

``seed`` (top level) is the default seed; ``costroute simulate --seed`` overrides it.
"""

from __future__ import annotations

import math
import random
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from proxy.durations import DurationError, parse_duration
from proxy.settings import ConfigError, PriceWindow

SHIPPED = ("nominal", "typical", "slow")
BATCH_WINDOW = 86_400.0  # every provider's batch completion window
_Z95 = 1.6448536269514722


def _seconds(value: object) -> object:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Turnaround(_Strict):
    median: Seconds = 1200
    p95: Seconds = 7200
    max: Seconds = 72_000

    def sampler(self, seed: str, expiry_rate: float) -> Callable[[int], float]:
        """Seconds for the batch created ``rank``-th: log-normal, cut at ``max``; with
        probability ``expiry_rate`` past the window (the batch expires)."""
        median = max(self.median, 1.0)
        sigma = math.log(max(self.p95, median) / median) / _Z95

        def sample(rank: int) -> float:
            rng = random.Random(f"{seed}/{rank}")
            if expiry_rate > 0 and rng.random() < expiry_rate:
                return math.inf  # never done: the provider expires it
            return min(median * math.exp(sigma * rng.gauss(0.0, 1.0)), self.max)

        return sample


class ProviderWorld(_Strict):
    batch_turnaround: Turnaround = Field(default_factory=Turnaround)
    expiry_rate: float = Field(0.0, ge=0, le=1)
    line_failure_rate: float = Field(0.0, ge=0, le=1)
    flex_capacity: float = Field(1.0, ge=0, le=1)
    flex_latency: Seconds = 45
    realtime_latency: Seconds = 2
    enqueued_token_limit: dict[str, int] = Field(default_factory=dict)
    max_live_batches: int | None = Field(None, ge=1)
    price_windows: list[PriceWindow] | None = None


class Scenario(_Strict):
    name: str = "custom"
    description: str = ""
    seed: int = 1
    providers: dict[str, ProviderWorld] = Field(default_factory=dict)

    def world(self, name: str, provider_type: str) -> ProviderWorld:
        return self.providers.get(name) or self.providers.get(provider_type) or ProviderWorld()


def load(name_or_path: str) -> Scenario:
    """A shipped scenario by name, or a TOML file."""
    if name_or_path in SHIPPED:
        text = resources.files("proxy.data").joinpath(f"simulate/{name_or_path}.toml").read_text()
        source = f"scenario {name_or_path}"
    else:
        try:
            text = Path(name_or_path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read scenario {name_or_path}: {exc.strerror}") from None
        source = name_or_path
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: invalid scenario"]
        for err in exc.errors():
            lines.append(f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None
