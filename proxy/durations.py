"""The duration syntax shared by the ``X-Latency-Tolerance`` header and the config:
an integer followed by ``s``, ``m``, ``h`` or ``d`` (``90s``, ``15m``, ``4h``, ``1d``),
or a bare ``0`` meaning "none"."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"([0-9]{1,9})([smhd])")
# Thirty days: far beyond any provider window, small enough to never overflow.
MAX_SECONDS = 30 * 86400


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> int:
    """Seconds in ``text``. Raises ``DurationError`` with a human reason."""
    value = text.strip()
    if value == "0":
        return 0
    match = _PATTERN.fullmatch(value)
    if match is None:
        raise DurationError(
            f"{text!r} is not a duration: use an integer followed by s, m, h or d "
            "(for example 90s, 15m, 4h, 1d), or 0"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_SECONDS:
        raise DurationError(f"{text!r} is longer than the maximum of 30d")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact rendering of ``seconds`` in the same syntax."""
    whole = int(seconds)
    if whole == 0:
        return "0"
    for unit in ("d", "h", "m"):
        if whole % _UNITS[unit] == 0:
            return f"{whole // _UNITS[unit]}{unit}"
    return f"{whole}s"
