"""The machine and software a run was measured on, for the results file."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = (
    "uvicorn",
    "starlette",
    "httpx",
    "httpx-aiohttp",
    "aiohttp",
    "aiosqlite",
    "orjson",
    "pydantic",
    "uvloop",
    "httptools",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(*, load_generator_loop: str) -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "packages": {name: _version(name) for name in _PACKAGES},
        "load_generator_loop": load_generator_loop,
        "load_average_at_start": [round(x, 2) for x in load],
    }
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    info["summary"] = (
        f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, SQLite {info['sqlite']}, "
        f"{info['platform']}; load generator and fake upstream on {load_generator_loop}; "
        f"load average at start {info['load_average_at_start']}\n{packages}"
    )
    return info
