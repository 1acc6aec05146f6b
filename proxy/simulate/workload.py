"""Workloads: what arrives, when, and how long each caller can wait.

A workload is a JSONL file, one request per line (blank lines and lines starting with
``#`` are skipped)::

    {"at": "09:15:02", "key": "reports", "model": "gpt-4o", "prompt_tokens": 800,
     "completion_tokens": 400, "tolerance": "4h"}

=================== ========================================================== =========
field               meaning                                                    default
=================== ========================================================== =========
at                  arrival: seconds from the start of the run, or             required
                    ``"HH:MM[:SS]"`` / ``"D+HH:MM:SS"`` (day D after the first)
key                 the client key's name (its ``default_tolerance`` applies)  "default"
model               a configured model                                         required
endpoint            ``/v1/chat/completions`` or ``/v1/embeddings``             chat
prompt_tokens       prompt size (tokens), the prefix included                  required
completion_tokens   answer size (tokens)                                       0
tolerance           ``X-Latency-Tolerance`` (``"4h"``, seconds, ``"0"``); null  null
                    or absent: no header, the key's default applies
prefix              a shared-prefix group: requests naming the same group      null
                    start with the same ``prefix_tokens`` tokens
prefix_tokens       size of that shared prefix                                 0
=================== ========================================================== =========
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from proxy.durations import DurationError, format_duration, parse_duration
from proxy.lanes.planner import CHAT

EMBEDDINGS = "/v1/embeddings"
ENDPOINTS = (CHAT, EMBEDDINGS)


class WorkloadError(ValueError):
    """A workload line that cannot be used; the message names the line and the field."""


def _arrival(value: object) -> object:
    if not isinstance(value, str):
        return value
    day = 0
    text = value.strip()
    if "+" in text:
        head, _, text = text.partition("+")
        day = int(head)
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"{value!r} is not seconds, HH:MM[:SS] or D+HH:MM:SS")
    hours, minutes, seconds = (int(p) for p in (*parts, "0")[:3])
    return day * 86400 + hours * 3600 + minutes * 60 + seconds


def _tolerance(value: object) -> object:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    return value


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: Annotated[float, BeforeValidator(_arrival), Field(ge=0)]
    key: str = Field("default", min_length=1, max_length=64)
    model: str = Field(min_length=1)
    endpoint: str = CHAT
    prompt_tokens: int = Field(ge=1, le=2_000_000)
    completion_tokens: int = Field(0, ge=0, le=200_000)
    tolerance: Annotated[Annotated[int, Field(ge=0)] | None, BeforeValidator(_tolerance)] = None
    prefix: str | None = Field(None, min_length=1, max_length=200)
    prefix_tokens: int = Field(0, ge=0)


@dataclass(frozen=True, slots=True)
class Request:
    at: float  # seconds after the run's start
    key: str
    model: str
    prompt_tokens: int
    completion_tokens: int = 0
    tolerance: int | None = None
    endpoint: str = CHAT
    prefix: str | None = None
    prefix_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "at": round(self.at, 3),
            "key": self.key,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tolerance": None if self.tolerance is None else format_duration(self.tolerance),
        }
        if self.endpoint != CHAT:
            line["endpoint"] = self.endpoint
        if self.prefix is not None:
            line["prefix"] = self.prefix
            line["prefix_tokens"] = self.prefix_tokens
        return line


def parse_lines(lines: Iterable[str | bytes], *, source: str = "workload") -> list[Request]:
    """Every request, sorted by arrival (stable, so equal times keep file order)."""
    requests: list[Request] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.decode() if isinstance(raw, bytes) else raw
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise WorkloadError(f"{source}:{number}: not a JSON object") from None
        try:
            line = _Line.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(line)"
            raise WorkloadError(f"{source}:{number}: {where}: {err['msg']}") from None
        if line.endpoint not in ENDPOINTS:
            raise WorkloadError(
                f"{source}:{number}: endpoint: one of {', '.join(ENDPOINTS)}, not {line.endpoint!r}"
            )
        if line.prefix_tokens >= line.prompt_tokens or (line.prefix_tokens and not line.prefix):
            raise WorkloadError(
                f"{source}:{number}: prefix_tokens must name a prefix and be below prompt_tokens"
            )
        requests.append(Request(**line.model_dump()))
    requests.sort(key=lambda r: r.at)
    return requests


def load(path: str | Path) -> list[Request]:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return parse_lines(handle, source=str(path))
    except OSError as exc:
        raise WorkloadError(f"cannot read workload {path}: {exc.strerror}") from None


def dump(requests: Iterable[Request]) -> Iterator[bytes]:
    for request in requests:
        yield orjson.dumps(request.to_json()) + b"\n"


def scale(requests: Sequence[Request], factor: int, *, seed: int) -> list[Request]:
    """``factor`` copies of every request, each copy arriving up to a minute later
    (seeded): the same day at ``factor`` times the volume."""
    if factor <= 1:
        return list(requests)
    rng = random.Random(f"scale/{seed}")
    scaled = [
        request if copy == 0 else replace(request, at=request.at + rng.uniform(0, 60))
        for request in requests
        for copy in range(factor)
    ]
    scaled.sort(key=lambda r: r.at)
    return scaled


def with_tolerance(requests: Sequence[Request], key: str, tolerance: int | None) -> list[Request]:
    """Every request of ``key`` with ``tolerance`` instead ("what if this key deferred
    by 4h")."""
    return [replace(r, tolerance=tolerance) if r.key == key else r for r in requests]
