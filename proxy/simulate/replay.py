"""A workload from costroute's own routing log, to replay a period under another config.

Each request that ended in the period (its final routing-log row) becomes one workload
line: its arrival (a ticket's acceptance, else the row's time), key, model, endpoint,
provider-reported prompt and completion tokens, and the tolerance it was planned with
(``routes.tolerance_s``; rows written before that column existed fall back to the
ticket's deadline, else none). A prompt served from a Gemini context cache keeps its
cache as a shared-prefix group of the cached size. Rows without usage (refused or failed
requests) and endpoints the simulator does not send are skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.simulate.workload import ENDPOINTS, Request
from proxy.store import outcomes
from proxy.store.db import Database


@dataclass(frozen=True, slots=True)
class Replay:
    requests: list[Request]
    start: float  # Unix seconds of the first arrival: the run starts there
    skipped: int


async def from_log(path: str | Path, *, since_ms: int, until_ms: int) -> Replay:
    """``path`` must exist (opening a missing database would create it)."""
    db = await Database.open(str(path))
    try:
        rows = await outcomes.final_rows(db, since_ms=since_ms, until_ms=until_ms)
    finally:
        await db.close()
    usable = [
        row
        for row in rows
        if row.endpoint in ENDPOINTS and row.model and row.prompt_tokens and row.status == 200
    ]
    if not usable:
        return Replay([], since_ms / 1000, len(rows))
    first = min(row.received_ms for row in usable)
    requests = []
    for row in usable:
        assert row.model is not None
        assert row.prompt_tokens is not None
        cached = row.cached_tokens or 0
        prefix = row.cache_name if row.lane.endswith("+cache") and row.cache_name else None
        requests.append(
            Request(
                at=(row.received_ms - first) / 1000,
                key=row.key_name or "default",
                model=row.model,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens or 0,
                tolerance=row.tolerance_s or None,
                endpoint=row.endpoint,
                prefix=prefix if prefix and 0 < cached < row.prompt_tokens else None,
                prefix_tokens=cached if prefix and 0 < cached < row.prompt_tokens else 0,
            )
        )
    requests.sort(key=lambda r: r.at)
    return Replay(requests, first / 1000, len(rows) - len(usable))
