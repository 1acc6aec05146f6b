"""Event loops for the benchmark processes: uvloop where installed (``auto``), so the
load generator and the fake upstream stay cheap; the proxy under test takes the loop
it is told to, since that choice is itself measured."""

from __future__ import annotations

import asyncio
import importlib.util


def have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def have_httptools() -> bool:
    return importlib.util.find_spec("httptools") is not None


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    if kind == "uvloop" or (kind == "auto" and have_uvloop()):
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(kind: str = "auto") -> str:
    return "uvloop" if kind == "uvloop" or (kind == "auto" and have_uvloop()) else "asyncio"
