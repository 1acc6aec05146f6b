"""Run an emulator standalone under uvicorn.

    python -m adapters.emulators.run openai --port 9001
    python -m adapters.emulators.run deepseek --port 0 --manual-clock

Once listening it prints one line, ``costroute emulator <kind> listening on
http://HOST:PORT``, so a parent process can start it on port 0 and read the real port.
Tests drive it through ``/_emulator/*`` (faults, clock, recorded requests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from collections.abc import Callable, Sequence

import uvicorn
from starlette.applications import Starlette

from adapters.clock import Clock, ManualClock, SystemClock
from adapters.emulators.openai.config import OpenAIEmulatorConfig
from adapters.emulators.openai.server import create_app


def _openai(clock: Clock, options: argparse.Namespace) -> Starlette:
    return create_app(_openai_config("openai", options), clock=clock)


def _deepseek(clock: Clock, options: argparse.Namespace) -> Starlette:
    return create_app(_openai_config("deepseek", options), clock=clock)


def _openai_config(flavour: str, options: argparse.Namespace) -> OpenAIEmulatorConfig:
    keys = frozenset(options.api_key) if options.api_key else None
    return OpenAIEmulatorConfig(
        flavour="deepseek" if flavour == "deepseek" else "openai",
        api_keys=keys,
        latency=options.latency,
        stream_delay=options.stream_delay,
    )


def _gemini(clock: Clock, options: argparse.Namespace) -> Starlette:
    from adapters.emulators.gemini.config import GeminiEmulatorConfig
    from adapters.emulators.gemini.server import create_app as gemini_app

    keys = frozenset(options.api_key) if options.api_key else None
    return gemini_app(GeminiEmulatorConfig(api_keys=keys), clock=clock)


def _anthropic(clock: Clock, options: argparse.Namespace) -> Starlette:
    from adapters.emulators.anthropic.server import AnthropicEmulatorConfig
    from adapters.emulators.anthropic.server import create_app as anthropic_app

    keys = frozenset(options.api_key) if options.api_key else None
    return anthropic_app(AnthropicEmulatorConfig(api_keys=keys), clock=clock)


# One factory per kind.
KINDS: dict[str, Callable[[Clock, argparse.Namespace], Starlette]] = {
    "openai": _openai,
    "deepseek": _deepseek,
    "gemini": _gemini,
    "anthropic": _anthropic,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m adapters.emulators.run", description=__doc__)
    p.add_argument("kind", help="emulator to run: " + ", ".join(sorted(KINDS)))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    p.add_argument(
        "--manual-clock",
        action="store_true",
        help="start a ManualClock at 2026-01-01 that only POST /_emulator/clock moves",
    )
    p.add_argument("--api-key", action="append", help="accept only these keys (repeatable)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    p.add_argument("--stream-delay", type=float, default=0.0, help="seconds between SSE events")
    return p


def build_app(kind: str, options: argparse.Namespace | None = None) -> Starlette:
    if kind not in KINDS:
        raise ValueError(f"unknown emulator {kind!r}; choose one of {', '.join(sorted(KINDS))}")
    options = options or parser().parse_args([kind])
    clock: Clock = ManualClock() if options.manual_clock else SystemClock()
    return KINDS[kind](clock, options)


class _AnnouncingServer(uvicorn.Server):
    """Prints the listening line once the socket is bound (the port may have been 0)."""

    def __init__(self, config: uvicorn.Config, kind: str) -> None:
        super().__init__(config)
        self.kind = kind

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"costroute emulator {self.kind} listening on http://{host}:{port}", flush=True)


async def serve(
    kind: str, host: str, port: int, *, options: argparse.Namespace | None = None
) -> None:
    """Serve emulator ``kind`` until cancelled or interrupted."""
    app = build_app(kind, options)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    await _AnnouncingServer(config, kind).serve()


def main(argv: Sequence[str] | None = None) -> int:
    options = parser().parse_args(argv)
    if options.kind not in KINDS:
        print(f"unknown emulator {options.kind!r}; choose one of {', '.join(sorted(KINDS))}")
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options.kind, options.host, options.port, options=options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
