"""Fault injection shared by every emulator.

A test queues ``Fault``s; each request takes the first fault whose ``path`` matches
(substring of the request path, or any path when ``None``) and applies it. A fault
applies ``times`` times (``-1``: until cleared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    times: int = Field(1, ge=-1)
    # Answer with this status and (optionally) this JSON body instead of the real reply.
    status: int | None = None
    body: dict[str, Any] | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    should_retry: bool | None = None
    # Sleep this long before answering (real seconds).
    latency: float = 0.0
    # Close the connection without a complete response.
    drop: bool = False
    # Answer 200 with a body that is not valid JSON.
    malformed: bool = False
    # Streaming: cut the connection after this many events.
    drop_after_events: int | None = None
    # Streaming: send an in-band {"error": ...} event after this many events.
    error_after_events: int | None = None


@dataclass
class FaultPlan:
    faults: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        item = fault if fault is not None else Fault(**kwargs)
        self.faults.append(item)
        return item

    def clear(self) -> None:
        self.faults.clear()

    def take(self, path: str) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.path is None or fault.path in path:
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        del self.faults[index]
                return fault
        return None
