"""The simulated world: one shipped emulator per configured provider, shaped by the
scenario, on the virtual clock, reached in-process (``httpx.ASGITransport``: no sockets),
and the settings the proxy runs with inside it.

The settings are the operator's own with only what must change for a run: the store and
files in the run's directory, every provider's ``base_url`` pointed at its emulator (same
path, so each adapter speaks to the routes it expects), placeholder provider keys, one
client key per workload key (a configured key keeps its ``default_tolerance``), webhooks
off, and a scenario's ``price_windows`` where it gives the provider's real windows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette

from adapters.clock import Clock
from adapters.emulators.anthropic.batches import BatchSettings
from adapters.emulators.anthropic.server import AnthropicEmulatorConfig
from adapters.emulators.anthropic.server import create_app as anthropic_app
from adapters.emulators.gemini.config import GeminiEmulatorConfig
from adapters.emulators.gemini.server import create_app as gemini_app
from adapters.emulators.openai.batch.emulator import BatchEmulatorConfig
from adapters.emulators.openai.config import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app as openai_app
from proxy.settings import Settings, parse_settings
from proxy.simulate.scenario import BATCH_WINDOW, Scenario

# How long an OpenAI batch spends validating and finalizing around its processing time.
_OPENAI_EDGES = 30.0


@dataclass(frozen=True, slots=True)
class World:
    settings: Settings
    environ: dict[str, str]
    apps: dict[str, Starlette]  # provider name -> its emulator
    client_keys: dict[str, str]  # workload key name -> the bearer token it sends

    def transports(self) -> dict[str, httpx.AsyncBaseTransport]:
        return {name: httpx.ASGITransport(app=app) for name, app in self.apps.items()}


def build_world(
    settings: Settings,
    scenario: Scenario,
    *,
    keys: Iterable[str],
    workdir: Path,
    clock: Clock,
    seed: int,
) -> World:
    environ: dict[str, str] = {}
    raw = settings.model_dump(mode="json", exclude_none=True)
    raw["store"] = {"path": str(workdir / "simulate.db")}
    raw["files"] = {**raw.get("files", {}), "dir": str(workdir / "files")}
    raw["webhooks"] = {}
    for name, provider in raw["providers"].items():
        path = urlsplit(provider["base_url"]).path
        provider["base_url"] = f"http://{name}.emulator{path}"
        provider["api_key_env"] = env = f"COSTROUTE_SIM_PROVIDER_{len(environ)}"
        environ[env] = f"sk-simulated-{name}"
        world = scenario.world(name, provider["type"])
        if world.price_windows is not None:
            provider["price_windows"] = [w.model_dump() for w in world.price_windows]
    configured = {key["name"]: key for key in raw.get("auth", {}).get("keys", [])}
    client_keys: dict[str, str] = {}
    auth_keys: list[dict[str, Any]] = []
    for index, name in enumerate(sorted(set(keys) | set(configured))):
        env = f"COSTROUTE_SIM_CLIENT_{index}"
        entry = dict(configured.get(name, {"name": name}))
        entry["key_env"] = env
        environ[env] = client_keys[name] = f"cr-simulated-{index}"
        auth_keys.append(entry)
    raw["auth"] = {"keys": auth_keys}
    sim_settings = parse_settings(raw, source="simulation config")
    apps = {
        name: _emulator(name, provider.type, scenario, sim_settings, clock, workdir, seed)
        for name, provider in sim_settings.providers.items()
    }
    return World(sim_settings, environ, apps, client_keys)


def _emulator(
    name: str,
    provider_type: str,
    scenario: Scenario,
    settings: Settings,
    clock: Clock,
    workdir: Path,
    seed: int,
) -> Starlette:
    world = scenario.world(name, provider_type)
    turnaround = world.batch_turnaround.sampler(f"{seed}/{name}", world.expiry_rate)
    if provider_type in ("openai", "deepseek"):
        config = OpenAIEmulatorConfig(
            flavour="deepseek" if provider_type == "deepseek" else "openai",
            models=_models(settings, name, provider_type),
            flex_capacity=world.flex_capacity,
            seed=seed,
            request_log_size=0,
        )
        batch = BatchEmulatorConfig(
            validation_delay=_OPENAI_EDGES / 2,
            finalize_delay=_OPENAI_EDGES / 2,
            processing_time=world.batch_turnaround.median,
            window=BATCH_WINDOW,
            token_limits=dict(world.enqueued_token_limit),
            max_creates_per_hour=None,
            seed=seed,
            directory=str(workdir),
            turnaround=lambda rank: max(turnaround(rank) - _OPENAI_EDGES, 0.0),
            line_failure_rate=world.line_failure_rate,
        )
        return openai_app(config, clock=clock, batch_config=batch)
    if provider_type == "gemini":
        gemini = GeminiEmulatorConfig(
            batch_start_after=min(60.0, world.batch_turnaround.median / 2),
            batch_turnaround=turnaround,
            batch_expire_after=BATCH_WINDOW * 2,
            batch_line_failure_rate=world.line_failure_rate,
            max_live_batches=world.max_live_batches,
            max_recorded_requests=0,
        )
        return gemini_app(gemini, clock=clock)
    if provider_type == "anthropic":
        batches = BatchSettings(
            turnaround=turnaround,
            expire_after=BATCH_WINDOW,
            line_failure_rate=world.line_failure_rate,
        )
        return anthropic_app(AnthropicEmulatorConfig(batches=batches), clock=clock)
    raise ValueError(f"no emulator for provider type {provider_type!r}")


def _models(settings: Settings, provider: str, provider_type: str) -> tuple[str, ...]:
    """The emulator's model list plus every configured upstream model of the provider, so
    a workload can name any model the operator configured."""
    base = OpenAIEmulatorConfig(flavour="deepseek" if provider_type == "deepseek" else "openai")
    names = {
        settings.upstream_model(m) for m, c in settings.models.items() if c.provider == provider
    }
    return tuple(dict.fromkeys([*base.models, *sorted(names)]))
