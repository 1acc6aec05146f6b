"""Sampling profiles of the proxy under load with py-spy (``pip install py-spy``), read
back from py-spy's collapsed-stack ("raw") output and summarised two ways: the functions
with the most self time, and the share of samples spent inside each named part of the
request path (inclusive). The raw files load into speedscope or flamegraph.pl as is.

Sampling is ``--nonblocking`` so the proxy is not paused; some samples then hold a
partial stack (an async frame missed), so the inclusive shares are lower bounds.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Parts of costroute's request path, by the frames that enter them ("Qualname (").
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "uvicorn: parse request (h11/httptools)",
        ("H11Protocol.data_received", "HttpToolsProtocol.data_received"),
    ),
    ("uvicorn: write response", ("RequestResponseCycle.send",)),
    ("starlette app (middleware, routing, handler)", ("Starlette.__call__",)),
    ("  auth", ("Authenticator.authenticate",)),
    ("  read body", ("read_body",)),
    ("  parse JSON", ("parse_json",)),
    ("  validate (pydantic)", ("validate_body",)),
    ("  plan", ("_plan",)),
    ("  adapter call (total)", ("OpenAIAdapter.complete", "OpenAIAdapter.open_stream")),
    ("    aiohttp request (send, wait for headers)", ("ClientSession._request",)),
    ("    read upstream body", ("read_capped",)),
    ("  stream relay (SSE re-framing)", ("_events",)),
    ("  response send (Starlette)", ("Response.__call__", "StreamingResponse.__call__")),
    ("  routing-log row (accounting)", ("record_success", "record_failure")),
    ("  background task via threadpool", ("run_in_threadpool",)),
    ("routing-log writer (event loop)", ("GroupCommit._flush",)),
    ("threads (aiosqlite, anyio workers)", ("Thread._bootstrap",)),
)
_LINE = re.compile(r":\d+\)$")


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    top_self: list[tuple[str, float]]
    components: list[tuple[str, float]]


def py_spy() -> str | None:
    """py-spy on PATH, or next to this interpreter (a venv that is not activated)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


def have_py_spy() -> bool:
    return py_spy() is not None


def record(pid: int, seconds: float, out: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds``; wait on the returned process."""
    return subprocess.Popen(
        [
            py_spy() or "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(round(seconds)),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise(raw: Path, top: int = 15) -> Profile:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        self_time[frames[-1]] += n
        for name in {frame.split(" (", 1)[0] for frame in frames}:
            inclusive[name] += n
    if not total:
        return Profile(0, [], [])
    share = 100.0 / total
    components = [
        (label, max(inclusive[name] for name in names) * share) for label, names in COMPONENTS
    ]
    return Profile(
        total,
        [(name, n * share) for name, n in self_time.most_common(top)],
        components,
    )


def render(title: str, profile: Profile) -> str:
    lines = [
        f"#### {title} ({profile.samples} samples; inclusive shares are lower bounds)",
        "",
        "| part of the request path | % of samples (inclusive) |",
        "|---|---:|",
    ]
    lines += [
        f"| {label.replace('  ', '&nbsp;&nbsp;')} | {pct:.1f} |"
        for label, pct in profile.components
    ]
    lines += ["", "| top self time | % |", "|---|---:|"]
    lines += [f"| `{name}` | {pct:.1f} |" for name, pct in profile.top_self]
    return "\n".join(lines) + "\n"
