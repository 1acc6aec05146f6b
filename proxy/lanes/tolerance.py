"""Reading the caller's latency tolerance from ``X-Latency-Tolerance``."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.context import Caller
from proxy.durations import DurationError, parse_duration
from proxy.errors import InvalidHeader

HEADER = "X-Latency-Tolerance"


def read_tolerance(headers: Mapping[str, str], caller: Caller) -> int | None:
    """Seconds the caller can wait; ``None`` means real time. Absent header: the key's
    configured ``default_tolerance``. Malformed: 400 naming the header."""
    raw = headers.get(HEADER.lower())
    if raw is None:
        return caller.default_tolerance or None
    try:
        seconds = parse_duration(raw)
    except DurationError as exc:
        raise InvalidHeader(HEADER, str(exc)) from None
    return seconds or None
